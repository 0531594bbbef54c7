"""The values a request may carry, as pydantic types whose JSON Schema states exactly what the server accepts.

Every type here is validated by the same pydantic code that writes the OpenAPI schema, so a value the schema
calls valid is one the server parses, and the reverse (tests/search/test_server_params.py checks both ways
with Hypothesis). Rules across values (min <= max in a bbox, date_from <= date_to) cannot be stated in JSON
Schema: the server answers them with 422 (msearch.search.server.contract).
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated

from pydantic import BeforeValidator, Field

MAX_QUERY_CHARS = 1000  # the text towers read 77 tokens; longer texts are only a cost
MAX_TOP_K = 200  # results per request (top_k + offset)
MAX_EXAMPLES = 100  # liked tiles, and unliked tiles, in one feedback request
# Tile ids are SQLite row ids; beyond 2**53 a JSON number is not exact in every client (JavaScript's
# Number.MAX_SAFE_INTEGER), and no catalogue comes near it.
MAX_TILE_ID = 2**53 - 1

_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
# Four decimal numbers (what Python's float() reads, without inf/nan, spaces or underscores).
BBOX_PATTERN = rf"^{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER}$"
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
MGRS_PATTERN = r"^[Tt]?[0-9]{1,2}[A-Za-z]{3}$"  # 33NZA, or T33NZA as product names spell it
SPACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"  # an encoder space's name (tiny-ms-clip, llama3-ms-clip)
# At least one character that is not white space as Python's str.strip() counts it, spelt out: `\S` means
# another set in pydantic's (Rust) and JSON Schema's (ECMA-262) regular expressions.
TEXT_PATTERN = r"[^\x09-\x0d\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"


def _iso_date(value):
    """A calendar date written YYYY-MM-DD and nothing else: pydantic alone also reads '0' (1970-01-01) or
    '2024-01-01T00:00:00', which the schema's `format: date` does not allow."""
    if isinstance(value, str):
        if not re.fullmatch(DATE_PATTERN, value):
            raise ValueError(f"a date is written YYYY-MM-DD, got {value[:40]!r}")
        return date.fromisoformat(value)
    return value


def _plain_integer(value):
    """An integer written as digits (with an optional sign), as the schema's `type: integer` means: pydantic
    alone also reads ' 1', '1_000' and '1.0'."""
    if isinstance(value, str) and not re.fullmatch(r"[+-]?[0-9]+", value):
        raise ValueError(f"an integer is written in digits, got {value[:40]!r}")
    return value


def integer(**constraints) -> type:
    """An integer type with these pydantic Field constraints (ge, le, ...), written as digits."""
    # The constraints sit on the int, before the validator: over it, pydantic would not put them in the schema.
    return Annotated[int, Field(**constraints), BeforeValidator(_plain_integer)]


IsoDate = Annotated[date, BeforeValidator(_iso_date), Field(description="A calendar date, YYYY-MM-DD.")]
TileId = integer(ge=1, le=MAX_TILE_ID, description="A catalogued tile's id.")
QueryText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_QUERY_CHARS,
        pattern=TEXT_PATTERN,
        description="Query text in any of the ten languages; not blank.",
    ),
]
BboxText = Annotated[
    str,
    Field(
        max_length=200,
        pattern=BBOX_PATTERN,
        description="minlon,minlat,maxlon,maxlat in WGS84 degrees, min <= max (lon -180..180, lat -90..90).",
    ),
]
SpaceName = Annotated[str, Field(max_length=100, pattern=SPACE_PATTERN, description="An embedding space.")]
MgrsTile = Annotated[str, Field(max_length=10, pattern=MGRS_PATTERN, description="An MGRS tile, e.g. 33NZA.")]
TopK = integer(ge=1, le=MAX_TOP_K, description=f"Results to return; top_k + offset <= {MAX_TOP_K}.")
Offset = integer(ge=0, lt=MAX_TOP_K, description="Results to skip (paging).")
CloudPercent = Annotated[float, Field(ge=0, le=100, description="Largest cloud cover, in percent.")]


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """The four numbers of a bbox that matched BBOX_PATTERN (their ranges and order are Filters' to check)."""
    if not re.fullmatch(BBOX_PATTERN, text):
        raise ValueError(f"bbox must be four numbers minlon,minlat,maxlon,maxlat, got {text[:60]!r}")
    min_lon, min_lat, max_lon, max_lat = (float(v) for v in text.split(","))
    return min_lon, min_lat, max_lon, max_lat
