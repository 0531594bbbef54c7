"""Timelines and change between dates (msearch.search.timeline, msearch.search.change) on the Major TOM series
with its planted change, odd acquisitions and later change (tests/search/conftest.py `change_series`)."""

import csv
import io
import json
from datetime import date

import numpy as np
import pytest
from typer.testing import CliRunner

from msearch.cli import app
from msearch.indexer.readers import ArchivePixels
from msearch.search.change import ChangeFinder
from msearch.search.searcher import Filters, QueryError, Searcher
from msearch.search.timeline import UnknownPlace, place_timeline, resolve_place
from tests.places_series import CHANGED_CHIP
from tests.search.conftest import CLOUDY_CHIP, LATER_CHIP, ODD_CHIP

AT_CHANGE = date(2020, 5, 1)  # before: 2 dates; after: 6, the planted change's first and on
AFTER_CHANGE = date(2021, 1, 1)  # before: 6 dates (4 changed); after: 2, the later change's


@pytest.fixture(scope="module")
def searcher(change_series):
    return Searcher(change_series.index, pixels=ArchivePixels())


@pytest.fixture(scope="module")
def finder(searcher):
    return ChangeFinder(searcher)


def query_scores(searcher, text: str) -> dict[int, float]:
    """Every acquisition's score for a text, as `msearch query` ranks acquisitions."""
    answer = searcher.query(text, top_k=100, lang="en", all_acquisitions=True)
    assert len(answer.results) == 73
    return {r.tile_id: r.score for r in answer.results}


def by_place(answer) -> dict[int, object]:
    return {r.place_id: r for r in answer.results}


def test_timeline_lists_every_acquisition_in_date_order_with_the_query_scores(searcher, change_series):
    centre = change_series.place_of(searcher, CHANGED_CHIP)
    timeline = place_timeline(searcher, centre, "a reservoir beside farmland")
    dates = [p.date[:10] for p in timeline.acquisitions]
    assert dates == list(change_series.series.dates)
    scores = query_scores(searcher, "a reservoir beside farmland")
    assert [p.score for p in timeline.acquisitions] == pytest.approx(
        [scores[p.tile_id] for p in timeline.acquisitions], abs=1e-6
    )
    assert timeline.space == "tiny-ms-clip" and timeline.lang == "en"
    assert timeline.footprint["type"] == "Polygon" and timeline.lon is not None
    # The planted change shows: the later acquisitions score alike, and unlike the first two.
    values = np.array([p.score for p in timeline.acquisitions])
    assert np.ptp(values[2:]) < abs(np.median(values[2:]) - np.median(values[:2]))


def test_timeline_by_example_and_the_ways_to_name_a_place(searcher, change_series):
    centre = change_series.place_of(searcher, CHANGED_CHIP)
    timeline = place_timeline(searcher, centre, like=str(change_series.example))
    example = searcher.like(str(change_series.example), top_k=100, all_acquisitions=True)
    expected = {r.tile_id: r.score for r in example.results}
    assert [p.score for p in timeline.acquisitions] == pytest.approx(
        [expected[p.tile_id] for p in timeline.acquisitions], abs=1e-6
    )
    first_tile = timeline.acquisitions[0].tile_id
    assert resolve_place(searcher, f"tile:{first_tile}") == centre
    assert resolve_place(searcher, str(centre)) == centre
    assert resolve_place(searcher, at=(timeline.lon, timeline.lat)) == centre
    with pytest.raises(UnknownPlace, match="no place with id 9999"):
        resolve_place(searcher, "9999")
    with pytest.raises(UnknownPlace, match="no tile with id 9999"):
        resolve_place(searcher, "tile:9999")
    with pytest.raises(UnknownPlace, match="covers"):
        resolve_place(searcher, at=(0.0, 0.0))
    with pytest.raises(QueryError, match="names no place"):
        resolve_place(searcher, "../etc")


@pytest.mark.parametrize("mode", ["any", "to_like"])
def test_the_planted_change_ranks_first_and_not_for_a_split_after_it(finder, searcher, change_series, mode):
    centre = change_series.place_of(searcher, CHANGED_CHIP)
    later = change_series.place_of(searcher, LATER_CHIP)
    kind = {"any_change": True} if mode == "any" else {"to_like": str(change_series.example)}
    at_change = finder.find(AT_CHANGE, **kind, top_k=9)
    assert at_change.results[0].place_id == centre
    first = at_change.results[0]
    assert (first.before_acquisitions, first.after_acquisitions) == (2, 6)
    assert first.lon is not None and first.footprint["type"] == "Polygon"
    # The example is a place with one acquisition, before every split: left out, and counted.
    assert at_change.places_compared == 9 and at_change.left_out == 1
    assert first.change > 3 * at_change.results[1].change

    # Split after it, the centre looks alike in both periods; the same change at another place, later, ranks first.
    after_change = finder.find(AFTER_CHANGE, **kind, top_k=9)
    assert after_change.results[0].place_id == later
    assert by_place(after_change)[centre].change < 0.2 * first.change


def test_one_cloudy_or_odd_acquisition_makes_no_change(finder, searcher, change_series):
    cloudy = change_series.place_of(searcher, CLOUDY_CHIP)
    odd = change_series.place_of(searcher, ODD_CHIP)
    answer = finder.find(AT_CHANGE, any_change=True, top_k=9)
    places = by_place(answer)
    top = answer.results[0].change
    # The cloud mask flags the cloudy acquisition: the period's clear ones are used, as if it were not there.
    assert (places[cloudy].after_acquisitions, places[cloudy].after_used) == (6, 5)
    without = by_place(finder.find(AT_CHANGE, any_change=True, top_k=9, filters=Filters(max_cloud=50)))
    assert without[cloudy].after_acquisitions == 5
    assert places[cloudy].change == pytest.approx(without[cloudy].change, abs=1e-9)
    # Nothing flags the odd one: the median over six acquisitions ignores it.
    assert places[odd].after_used == 6
    for place in (cloudy, odd):
        assert places[place].rank > 1 and places[place].change < 0.25 * top


def test_to_text_scores_are_medians_of_the_query_scores(finder, searcher):
    scores = query_scores(searcher, "a reservoir")
    from_scores = query_scores(searcher, "farmland")
    answer = finder.find(AT_CHANGE, to="a reservoir", from_text="farmland", lang="en", top_k=9)
    assert len(answer.results) == 9 and answer.mode == "to" and answer.lang == "en"
    for result in answer.results:
        rows = searcher.store.place_acquisitions(result.place_id)
        clear = [r for r in rows if r["cloud_cover"] <= 20]
        before = [r["id"] for r in clear if r["acquired"][:10] < AT_CHANGE.isoformat()]
        after = [r["id"] for r in clear if r["acquired"][:10] >= AT_CHANGE.isoformat()]
        assert result.before_score == pytest.approx(np.median([scores[t] for t in before]), abs=1e-6)
        assert result.after_score == pytest.approx(np.median([scores[t] for t in after]), abs=1e-6)
        assert result.from_before_score == pytest.approx(np.median([from_scores[t] for t in before]), abs=1e-6)
        assert result.from_after_score == pytest.approx(np.median([from_scores[t] for t in after]), abs=1e-6)
        expected = (result.after_score - result.before_score) + (result.from_before_score - result.from_after_score)
        assert result.change == pytest.approx(expected)
        assert result.before_tile_id in before and result.after_tile_id in after
    assert [r.change for r in answer.results] == sorted((r.change for r in answer.results), reverse=True)


def test_periods_with_a_gap_and_places_left_out(finder, searcher, change_series):
    later = change_series.place_of(searcher, LATER_CHIP)
    # before 2020-05-01 (2 dates), after 2021-02-01 (2 dates): the six dates between are left out.
    answer = finder.find(date(2021, 2, 1), date(2020, 5, 1), any_change=True, top_k=9)
    assert {(r.before_acquisitions, r.after_acquisitions) for r in answer.results} == {(2, 2)}
    assert answer.results[0].place_id in (later, change_series.place_of(searcher, CHANGED_CHIP))
    assert answer.places_compared == 9 and answer.left_out == 1
    # A box around one chip's centre keeps that place only.
    place = searcher.store.place(later)
    lon, lat = place["centre_lon"], place["centre_lat"]
    boxed = finder.find(
        AT_CHANGE, any_change=True, filters=Filters(bbox=(lon - 1e-4, lat - 1e-4, lon + 1e-4, lat + 1e-4))
    )
    assert [r.place_id for r in boxed.results] == [later]
    assert (boxed.places_compared, boxed.left_out) == (1, 0)


@pytest.mark.parametrize(
    "call, message",
    [
        (dict(after=date(2019, 1, 1), any_change=True), "outside the archive's dates"),
        (dict(after=date(2021, 6, 1), any_change=True), "outside the archive's dates"),
        (dict(after=date(2019, 12, 1), any_change=True), "outside the archive's dates"),  # nothing before it
        (dict(after=date(2020, 5, 1), before=date(2020, 6, 1), any_change=True), "is after --after"),
        (dict(after=date(2020, 5, 1)), "one of --to TEXT, --to-like EXAMPLE or --any"),
        (dict(after=date(2020, 5, 1), to="x", any_change=True), "one of --to TEXT, --to-like EXAMPLE or --any"),
        (dict(after=date(2020, 5, 1), from_text="x", any_change=True), "--from TEXT goes with --to"),
        (dict(after=date(2020, 5, 1), any_change=True, filters=Filters(date_from=date(2020, 1, 1))), "not by date"),
        (dict(after=date(2020, 5, 1), to_like="99999"), "neither a tile id"),
    ],
)
def test_bad_change_queries_say_what_to_change(finder, call, message):
    with pytest.raises(QueryError, match=message):
        finder.find(**call)


def test_cli_timeline_json_csv_and_plot(searcher, change_series, tmp_path):
    centre = change_series.place_of(searcher, CHANGED_CHIP)
    index = ["--index", str(change_series.index)]
    data = json.loads(_cli(["timeline", str(centre), "a river", *index, "--json"]).stdout)
    expected = place_timeline(searcher, centre, "a river")
    assert data["place_id"] == centre and data["space"] == "tiny-ms-clip"
    assert [a["tile_id"] for a in data["acquisitions"]] == [p.tile_id for p in expected.acquisitions]
    assert [a["score"] for a in data["acquisitions"]] == pytest.approx([p.score for p in expected.acquisitions])
    rows = list(csv.DictReader(io.StringIO(_cli(["timeline", str(centre), "a river", *index, "--csv"]).stdout)))
    assert [r["date"] for r in rows] == [a["date"] for a in data["acquisitions"]]
    assert {"date", "score", "tile_id", "cloud", "nodata"} <= set(rows[0])
    plot = tmp_path / "timeline.png"
    first_tile = data["acquisitions"][0]["tile_id"]
    at = f"{data['lon']},{data['lat']}"
    for place in (["--at", at], [f"tile:{first_tile}"]):
        result = _cli(["timeline", *place, "a river", *index, "--plot", str(plot)])
        assert f"place {centre}" in result.stdout and plot.stat().st_size > 5000
        plot.unlink()
    by_example = json.loads(_cli(["timeline", str(centre), "--like", str(first_tile), *index, "--json"]).stdout)
    example_scores = [a["score"] for a in by_example["acquisitions"]]
    assert example_scores[0] == max(example_scores) == pytest.approx(1.0, abs=2e-3)  # its own stored vector
    unknown = CliRunner().invoke(app, ["timeline", "9999", "a river", *index])
    assert unknown.exit_code == 2 and "no place with id 9999" in unknown.output


def test_cli_change_json_csv_geojson_and_errors(searcher, change_series):
    centre = change_series.place_of(searcher, CHANGED_CHIP)
    base = ["change", "--after", AT_CHANGE.isoformat(), "--any", "--index", str(change_series.index), "-k", "3"]
    data = json.loads(_cli(base + ["--json"]).stdout)
    assert data["mode"] == "any" and data["left_out"] == 1 and data["places_compared"] == 9
    assert [r["place_id"] for r in data["results"]][0] == centre and len(data["results"]) == 3
    first = data["results"][0]
    assert {"lon", "lat", "footprint", "before_acquisitions", "after_acquisitions", "similarity"} <= set(first)
    rows = list(csv.DictReader(io.StringIO(_cli(base + ["--csv"]).stdout)))
    assert [int(r["place_id"]) for r in rows] == [r["place_id"] for r in data["results"]]
    geo = json.loads(_cli(base + ["--geojson"]).stdout)
    assert geo["type"] == "FeatureCollection" and geo["features"][0]["geometry"]["type"] == "Polygon"
    assert geo["features"][0]["properties"]["place_id"] == centre and geo["left_out"] == 1
    table = _cli(base)
    assert "1 place left out: no acquisition in one of the periods" in table.output
    outside = CliRunner().invoke(app, base[:2] + ["2030-01-01"] + base[3:])
    assert outside.exit_code == 2 and "outside the archive's dates" in outside.output


def _cli(args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def test_a_chip_of_another_chip_size_is_read_again_at_its_window(searcher, change_series):
    """Quicklooks of a timeline's acquisitions: chips cut at 96 px are re-read at their catalogued window."""
    tile = searcher.store.place_acquisitions(change_series.place_of(searcher, CHANGED_CHIP))[0]
    pixels = searcher.tile_pixels(tile["id"])
    assert pixels.data.shape[1:] == (96, 96)
    neighbour = searcher.store.place_acquisitions(change_series.place_of(searcher, LATER_CHIP))[0]
    assert not np.array_equal(searcher.tile_pixels(neighbour["id"]).data, pixels.data)
