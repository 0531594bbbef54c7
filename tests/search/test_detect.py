"""Detectors on planted structure (tests/search/planted.py): five planted tiles as positives put the other
planted tiles at the top of the ranking; candidates from the IVF-PQ search index, rescored exactly, equal the
exhaustive scoring on the top of the ranking; suggestions; the CLI's outputs (GeoParquet and GeoJSON read
back with geopandas) and its errors (exit 2)."""

from __future__ import annotations

import json
import shutil
from datetime import date

import geopandas
import numpy as np
import pytest
from typer.testing import CliRunner

from msearch.cli import app
from msearch.schema import catalog
from msearch.search.detect import BACKGROUND_NEGATIVES, Detector, FittedDetectors
from msearch.search.searcher import Filters, QueryError, Searcher
from msearch.store.collections import CollectionError, add_labels, create_collection, remove_labels
from msearch.store.index_store import IndexStore
from tests.search.planted import PLANTED, SPACE, planted_ids

runner = CliRunner()
POSITIVES = planted_ids()[:5]
OTHERS = set(planted_ids()[5:])


@pytest.fixture(scope="module")
def planted(planted_index, tmp_path_factory):
    directory = tmp_path_factory.mktemp("detect") / "index"
    shutil.copytree(planted_index, directory)
    store = IndexStore(directory)
    create_collection(store, "planted", SPACE, note="the planted cluster")
    add_labels(store, "planted", positive=POSITIVES)
    create_collection(store, "one", SPACE)
    add_labels(store, "one", positive=POSITIVES[:1])
    return directory


def flat(output: str) -> str:
    return " ".join(output.split())


def test_five_positives_put_the_other_planted_tiles_at_the_top(planted):
    detector = Detector(Searcher(planted), "planted")
    assert detector.probe.positives == 5 and detector.probe.negatives == 0
    assert detector.probe.background == BACKGROUND_NEGATIVES
    assert detector.probe.cv["folds"] == 5 and detector.probe.cv["average_precision"] > 0.9
    answer = detector.detect(top_k=PLANTED)
    ranked = [r.tile_id for r in answer.results]
    unlabelled = [t for t in ranked if t not in POSITIVES]
    assert set(unlabelled[: PLANTED - 5]) == OTHERS  # every other planted tile, before any background tile
    assert {r.tile_id: r.label for r in answer.results if r.label} == {t: "positive" for t in POSITIVES}
    probabilities = [r.probability for r in answer.results]
    assert probabilities == sorted(probabilities, reverse=True) and min(probabilities) > 0.5
    assert answer.candidates < 20_000  # from the search index, not every vector


def test_candidates_rescored_exactly_equal_the_exhaustive_scoring_on_the_top(planted):
    detector = Detector(Searcher(planted), "planted")
    fast, full = detector.detect(top_k=100), detector.detect(top_k=100, exhaustive=True)
    assert full.candidates == 20_060 and full.exhaustive
    assert [r.tile_id for r in fast.results[:80]] == [r.tile_id for r in full.results[:80]]
    np.testing.assert_allclose([r.probability for r in fast.results], [r.probability for r in full.results], rtol=1e-6)
    above = detector.detect(threshold=0.5)
    assert [r.tile_id for r in above.results] == [
        r.tile_id for r in detector.detect(threshold=0.5, exhaustive=True).results
    ]
    assert {r.tile_id for r in above.results} >= OTHERS and all(r.probability >= 0.5 for r in above.results)


def test_per_place_gives_each_place_once_by_its_most_probable_acquisition(planted, tmp_path):
    """The planted tiles grouped three dates to a place (20 places); every background tile a place of its own."""
    directory = tmp_path / "index"
    shutil.copytree(planted, directory)
    store = IndexStore(directory)
    planted_place = {t: 1_000_000 + i // 3 for i, t in enumerate(planted_ids())}
    with store.engine.begin() as conn:
        conn.execute(catalog.tiles.update().values(place_id=catalog.tiles.c.id))
        for tile_id, place_id in planted_place.items():
            conn.execute(catalog.tiles.update().where(catalog.tiles.c.id == tile_id).values(place_id=place_id))
    detector = Detector(Searcher(directory), "planted")
    tiles = detector.detect(top_k=20_060, exhaustive=True).results
    best_of_place = {}
    for r in tiles:  # most probable first: the first tile of a place is its best
        best_of_place.setdefault(planted_place.get(r.tile_id, r.tile_id), r)

    answer = detector.detect(top_k=10, per_place=True)
    assert answer.per_place and answer.info()["per_place"]
    places = [r.place_id for r in answer.results]
    assert len(set(places)) == 10 and set(places) <= set(planted_place.values())  # no place twice
    assert [r.rank for r in answer.results] == list(range(1, 11))
    for r in answer.results:
        assert r.tile_id == best_of_place[r.place_id].tile_id
        assert r.probability == pytest.approx(best_of_place[r.place_id].probability, rel=1e-6)
        assert (
            r.acquisitions == 3
            and len(r.dates) == 3
            and set(r.date_tile_ids) == {t for t, p in planted_place.items() if p == r.place_id}
        )
    # all 20 planted places before any background place, however many of their dates rank above
    everything = detector.detect(top_k=25, per_place=True).results
    assert {r.place_id for r in everything[:20]} == set(planted_place.values())
    # filters apply to acquisitions before grouping: a date filter leaves fewer dates of each place
    month = tiles[0].date[:7]
    first, last = date.fromisoformat(f"{month}-01"), date.fromisoformat(f"{month}-28")
    dated = detector.detect(top_k=5, per_place=True, filters=Filters(date_from=first, date_to=last))
    assert dated.results and all(r.acquisitions == 1 and r.date.startswith(month) for r in dated.results)
    # with a threshold and no top-k: every place that has an acquisition above it, once
    above = detector.detect(threshold=0.5, per_place=True).results
    expected = {p for p, r in best_of_place.items() if r.probability >= 0.5}
    assert sorted(r.place_id for r in above) == sorted(expected)
    done = CliRunner().invoke(app, ["detect", "planted", "--index", str(directory), "--per-place", "-k", "4", "--json"])
    assert done.exit_code == 0, done.output
    shown = json.loads(done.stdout)
    assert shown["per_place"] and [r["place_id"] for r in shown["results"]] == places[:4]
    refused = CliRunner().invoke(app, ["detect", "planted", "--index", str(directory), "--per-place", "--suggest", "3"])
    assert refused.exit_code == 2 and "--per-place" in refused.output


def test_the_same_collection_gives_the_same_probe(planted):
    first, second = Detector(Searcher(planted), "planted"), Detector(Searcher(planted), "planted")
    np.testing.assert_array_equal(first.probe.weights, second.probe.weights)


def test_a_server_fits_a_detector_once_per_state_of_its_labels_and_vectors(planted, tmp_path):
    """msearch serve's detectors (FittedDetectors): the same fit while nothing changed; fitted again when a label
    is added or removed, and when an index run deleted a tile of the space (once the searcher is refreshed)."""
    directory = tmp_path / "index"
    shutil.copytree(planted, directory)
    searcher = Searcher(directory)
    detectors = FittedDetectors(searcher)
    first = detectors.get("planted")
    assert detectors.get("planted") is first and first.probe.negatives == 0

    background = next(t for t in range(1, 20_000) if t not in set(planted_ids()))
    add_labels(searcher.store, "planted", negative=[background])
    relabelled = detectors.get("planted")
    assert relabelled is not first and relabelled.probe.negatives == 1
    assert detectors.get("planted") is relabelled
    remove_labels(searcher.store, "planted", [background])
    unlabelled = detectors.get("planted")
    assert unlabelled is not relabelled and unlabelled.probe.negatives == 0
    np.testing.assert_array_equal(unlabelled.probe.weights, first.probe.weights)

    other = next(t for t in range(background + 1, 20_000) if t not in set(planted_ids()))
    with searcher.store.engine.begin() as conn:
        searcher.store.delete_tiles(conn, [other])
    assert detectors.get("planted") is unlabelled  # the searcher has not seen the index run yet
    searcher.refresh()
    refitted = detectors.get("planted")
    assert refitted is not unlabelled and detectors.get("planted") is refitted


def test_filters_restrict_the_detections(planted):
    detector = Detector(Searcher(planted), "planted")
    box = (-10.0, 40.0, -5.0, 1000.0 and 90.0)
    answer = detector.detect(top_k=20, filters=Filters(bbox=box))
    assert answer.results and all(r.lon <= -5.0 + 0.02 for r in answer.results)
    assert answer.matching_tiles is not None and answer.matching_tiles < 20_060


def test_suggestions_are_unlabelled_tiles_nearest_one_half(planted):
    detector = Detector(Searcher(planted), "planted")
    answer = detector.suggest(5)
    assert len(answer.results) == 5 and answer.suggestions
    assert not {r.tile_id for r in answer.results} & set(POSITIVES)
    distances = [abs(r.probability - 0.5) for r in answer.results]
    assert distances == sorted(distances)
    # no scored candidate outside the suggestions is nearer 0.5 than the last suggestion
    everything = detector.detect(top_k=20_060, exhaustive=True).results
    nearer = [r for r in everything if abs(r.probability - 0.5) < distances[-1] and r.tile_id not in POSITIVES]
    assert {r.tile_id for r in nearer} <= {r.tile_id for r in answer.results}


def test_a_probe_needs_two_positives(planted):
    with pytest.raises(QueryError, match="at least 2 positive examples, the collection has 1"):
        Detector(Searcher(planted), "one")


def test_detect_cli_writes_geoparquet_and_geojson_with_probabilities(planted, tmp_path):
    parquet, geojson = tmp_path / "d.parquet", tmp_path / "d.geojson"
    result = runner.invoke(app, ["detect", "planted", "--index", str(planted), "-k", "60", "--out", str(parquet)])
    assert result.exit_code == 0, result.output
    assert "fitted on 5 positives and 0 negatives + 500 unlabelled tiles" in flat(result.output)
    table = geopandas.read_parquet(parquet)
    assert len(table) == 60 and table.crs.to_string() == "OGC:CRS84"
    assert list(table["rank"]) == list(range(1, 61))
    assert set(table["id"]) == set(planted_ids())
    assert (table["probability"].diff().dropna() <= 0).all()
    assert table.geometry.iloc[0].geom_type == "Polygon" and table.geometry.iloc[0].area > 0
    assert sorted(table.loc[table["label"] == "positive", "id"]) == POSITIVES

    result = runner.invoke(app, ["detect", "planted", "--index", str(planted), "-k", "10", "--out", str(geojson)])
    assert result.exit_code == 0, result.output
    frame = geopandas.read_file(geojson)
    assert len(frame) == 10 and set(frame["tile_id"]) <= set(planted_ids())
    assert (frame["probability"] > 0.5).all()


def test_detect_cli_json_csv_and_suggest(planted):
    result = runner.invoke(app, ["detect", "planted", "--index", str(planted), "-k", "5", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["collection"] == "planted" and document["fit"]["background_negatives"] == 500
    assert [set(r) >= {"tile_id", "footprint", "probability", "label"} for r in document["results"]] == [True] * 5
    result = runner.invoke(app, ["detect", "planted", "--index", str(planted), "-k", "3", "--csv"])
    header, *rows = result.stdout.strip().splitlines()
    assert header.endswith("probability,label") and len(rows) == 3
    result = runner.invoke(app, ["detect", "planted", "--index", str(planted), "--suggest", "4", "--json"])
    assert result.exit_code == 0, result.output
    suggested = json.loads(result.stdout)["results"]
    assert len(suggested) == 4 and all(r["label"] is None for r in suggested)


@pytest.mark.parametrize(
    "args, message",
    [
        (["detect", "one"], "at least 2 positive examples, the collection has 1"),
        (["detect", "nothing"], "no collection named 'nothing' in this index (it has: one, planted)"),
        (["detect", "planted", "--space", "rs-m-clip"], "holds examples of space 'tiny-ms-clip', not 'rs-m-clip'"),
        (["collection", "add", "planted", "--positive", "999999"], "'999999' is neither a tile id"),
        (["collection", "add", "nothing", "--positive", "1"], "no collection named 'nothing'"),
        (["collection", "create", "planted"], "a collection named 'planted' exists already"),
        (["collection", "create", "x", "--space", "rs-m-clip"], "no space 'rs-m-clip' in this index"),
        (["collection", "create", "a b"], "collection name 'a b'"),
        (["detect", "planted", "--threshold", "1.5"], "--threshold is a probability between 0 and 1"),
        (["detect", "planted", "--out", "x.shp"], "--out writes FILE.parquet"),
    ],
)
def test_errors_are_one_clear_line_and_exit_2(planted, args, message):
    result = runner.invoke(app, [*args, "--index", str(planted)])
    assert result.exit_code == 2, result.output
    assert message in flat(result.output)
    assert "Traceback" not in result.output


def test_unknown_collection_is_a_collection_error(planted):
    with pytest.raises(CollectionError, match="no collection named 'x'"):
        Detector(Searcher(planted), "x")
