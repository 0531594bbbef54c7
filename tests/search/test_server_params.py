"""The request parsing of `msearch serve` (msearch.search.server.params), with Hypothesis: the validators accept
exactly what the schema's patterns and ranges describe, and parse it to the value that was written."""

import re
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from msearch.search.server.params import (
    BBOX_PATTERN,
    DATE_PATTERN,
    MAX_QUERY_CHARS,
    MAX_TILE_ID,
    BboxText,
    IsoDate,
    QueryText,
    TileId,
    parse_bbox,
)

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True)
bbox_text, iso_date, tile_id, query_text = (TypeAdapter(t) for t in (BboxText, IsoDate, TileId, QueryText))
finite = st.floats(allow_nan=False, allow_infinity=False)


def accepts(adapter: TypeAdapter, value) -> bool:
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


@SETTINGS
@given(st.tuples(finite, finite, finite, finite))
def test_a_bbox_of_four_numbers_parses_to_them(numbers):
    text = ",".join(repr(v) for v in numbers)
    assert accepts(bbox_text, text)
    assert parse_bbox(text) == numbers


@SETTINGS
@given(st.one_of(st.from_regex(BBOX_PATTERN, fullmatch=True), st.text(alphabet="0123456789.,-+eE nai", max_size=40)))
def test_the_bbox_validator_and_parser_agree_with_the_pattern(text):
    matches = re.fullmatch(BBOX_PATTERN, text) is not None
    assert accepts(bbox_text, text) == (matches and len(text) <= 200)
    if matches:
        assert len(parse_bbox(text)) == 4
    else:
        with pytest.raises(ValueError, match="four numbers"):
            parse_bbox(text)


@SETTINGS
@given(st.dates())
def test_a_date_written_yyyy_mm_dd_parses_to_itself(day):
    assert iso_date.validate_python(day.isoformat()) == day


@SETTINGS
@given(st.one_of(st.from_regex(DATE_PATTERN, fullmatch=True), st.text(alphabet="0123456789-T:Z ", max_size=22)))
def test_a_date_is_accepted_only_as_an_existing_calendar_day(text):
    try:
        expected = date.fromisoformat(text) if re.fullmatch(DATE_PATTERN, text) else None
    except ValueError:  # 2023-02-30
        expected = None
    if expected is None:
        assert not accepts(iso_date, text)
    else:
        assert iso_date.validate_python(text) == expected


@SETTINGS
@given(st.integers(min_value=-(2**70), max_value=2**70))
def test_a_tile_id_is_a_positive_json_safe_integer(number):
    valid = 1 <= number <= MAX_TILE_ID
    assert accepts(tile_id, str(number)) == valid
    assert accepts(tile_id, number) == valid


@SETTINGS
@given(st.text(alphabet="0123456789+-_. e", max_size=20))
def test_a_tile_id_is_written_in_digits(text):
    digits = re.fullmatch(r"[+-]?[0-9]+", text) is not None
    assert accepts(tile_id, text) == (digits and 1 <= int(text) <= MAX_TILE_ID)


# Every character Python's str.strip() removes, and two it keeps that other regex engines call space.
SPACES = [chr(c) for c in range(0x3001) if chr(c).isspace()] + ["\ufeff", "\u180e", "a"]


@SETTINGS
@given(st.one_of(st.text(max_size=MAX_QUERY_CHARS + 5), st.text(alphabet=st.sampled_from(SPACES), max_size=6)))
def test_a_query_text_is_accepted_when_it_is_not_blank_as_the_searcher_strips_it(text):
    assert accepts(query_text, text) == (bool(text.strip()) and len(text) <= MAX_QUERY_CHARS)
