"""Results per place, on a Major TOM cell indexed at six dates (tests/places_series.py: 9 chips x 6 dates, each
chip one place): k distinct places, each with its best acquisition and the dates of its passing acquisitions
best first; no under-return with filters or when repeats fill the first depth searched; `all_acquisitions`
ranks exactly as a search of acquisitions; the same through the CLI, `eval --per-place` and the API."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import date

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from msearch.cli import app
from msearch.indexer.readers import ArchivePixels
from msearch.schema import catalog
from msearch.search import per_place
from msearch.search import searcher as searcher_module
from msearch.search.searcher import Filters, Searcher
from msearch.search.server import create_app
from msearch.store.index_store import IndexStore, vector_bytes
from msearch.store.synthetic import ClusteredUnitVectors
from tests.places_series import SERIES_DATES, SERIES_SETTINGS

SPACE = "tiny-ms-clip"
runner = CliRunner()


@pytest.fixture(scope="module")
def series_index(places_series_index):
    return places_series_index


@pytest.fixture(scope="module")
def searcher(series_index):
    return Searcher(series_index, pixels=ArchivePixels(SERIES_SETTINGS))


def every_score(searcher: Searcher, text: str) -> dict[int, float]:
    """Each tile's cosine with the text, from the stored vectors: the truth a per-place answer must follow."""
    vector, _ = searcher.embed_text(SPACE, text)
    ids, vectors = searcher.store.all_vectors(SPACE)
    return dict(zip(ids.tolist(), (vectors @ vector).tolist()))


def assert_places_follow_the_scores(results, scores: dict[int, float], store, passing=lambda row: True):
    """Each result is its place's best passing acquisition, listing every passing acquisition's date best
    first; places come in the order of their best scores."""
    places = store.places_of(list(scores))
    rows = store.tiles_by_id(list(scores))
    for result in results:
        members = [t for t, p in places.items() if p == result.place_id and passing(rows[t])]
        best_first = sorted(members, key=lambda t: -scores[t])
        assert result.tile_id == best_first[0]
        assert result.score == pytest.approx(scores[best_first[0]], abs=1e-5)
        assert result.acquisitions == len(members)
        assert result.date_tile_ids == best_first[:20]
        assert result.dates == [rows[t]["acquired"] for t in best_first[:20]]
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def test_a_query_returns_k_distinct_places_with_their_dates(searcher):
    answer = searcher.query("a river", top_k=5)
    assert answer.per_place and len(answer.results) == 5
    assert len({r.place_id for r in answer.results}) == 5
    assert all(r.acquisitions == 6 and len(r.dates) == 6 for r in answer.results)
    assert [r.rank for r in answer.results] == [1, 2, 3, 4, 5]
    assert_places_follow_the_scores(answer.results, every_score(searcher, "a river"), searcher.store)


@pytest.mark.parametrize("first_depth", [1, 8])
def test_no_under_return_when_repeats_fill_the_first_search(searcher, monkeypatch, first_depth):
    """With one acquisition searched per wanted place, the first ranking holds repeats of the best places: it is
    searched deeper until every place is found."""
    monkeypatch.setattr(per_place, "FIRST_DEPTH_PER_PLACE", first_depth)
    answer = searcher.query("a river", top_k=9)
    assert sorted(r.place_id for r in answer.results) == sorted(set(searcher.store.places_of(range(1, 55)).values()))
    assert searcher.query("a river", top_k=50).results == answer.results  # 9 places are all there are


def test_no_under_return_from_an_inverted_file_whose_probed_lists_run_short(tmp_path, monkeypatch):
    """400 places x 5 dates of synthetic vectors behind an inverted file of 50 lists: asking for every place makes
    the probed lists run short, so more lists are probed (up to all) and every place comes back, each scored by
    its best acquisition exactly."""
    n_places, n_dates, dim = 400, 5, 32
    store = IndexStore(tmp_path / "index", create=True)
    store.ensure_space("synthetic", "synthetic-card", "0" * 64, dim)
    places = ClusteredUnitVectors(dim, n_clusters=20, seed=1).rows(0, n_places)
    noise = np.random.default_rng(2).standard_normal((n_places, n_dates, dim)).astype(np.float32) * 0.05
    vectors = places[:, None, :] + noise
    vectors = (vectors / np.linalg.norm(vectors, axis=2, keepdims=True)).reshape(-1, dim)
    with store.engine.begin() as conn:
        conn.execute(catalog.places.insert(), [{"id": p + 1} for p in range(n_places)])
        conn.execute(
            catalog.tiles.insert(),
            [
                {
                    "id": i + 1,
                    "root": "/a",
                    "key": f"{i}",
                    "path": f"{i}",
                    "reader": "geotiff",
                    "stat_signature": "s",
                    "place_id": i // n_dates + 1,
                    "acquired": f"2020-01-{i % n_dates + 1:02d}",
                }
                for i in range(len(vectors))
            ],
        )
        conn.execute(
            catalog.vectors.insert(),
            [{"tile_id": i + 1, "space": "synthetic", "vector": vector_bytes(v)} for i, v in enumerate(vectors)],
        )
    view = store.open_space("synthetic")
    info = store.rebuild_ann(view, exact_threshold=1_000, target_recall=0.3)  # few lists probed
    store.save_space(view)
    assert info.kind == "ivf-flat" and info.params["nprobe"] < info.params["nlist"]
    monkeypatch.setattr(per_place, "FIRST_DEPTH_PER_PLACE", 1)
    monkeypatch.setattr(searcher_module, "NPROBE_SCALE", 1)
    query = ClusteredUnitVectors(dim, n_clusters=20, seed=1).rows(n_places, n_places + 1)[0]
    searcher = Searcher(tmp_path / "index")
    assert len(searcher.search_vector("synthetic", query, len(vectors), None)) < len(vectors)  # the lists run short
    hits = searcher.place_ranking("synthetic", query, n_places)
    assert sorted(hit.place_id for hit in hits) == list(range(1, n_places + 1))
    stored_ids, stored = store.all_vectors("synthetic")
    best = {}
    for tile_id, score in zip(stored_ids.tolist(), (stored @ query).tolist()):
        place = (tile_id - 1) // n_dates + 1
        best[place] = max(best.get(place, -2.0), score)
    assert [hit.place_id for hit in hits] == sorted(best, key=lambda p: -best[p])
    assert [hit.best[1] for hit in hits] == pytest.approx(sorted(best.values(), reverse=True), abs=1e-5)


def test_filters_apply_to_acquisitions_before_grouping(searcher):
    filters = Filters(date_from=date(2020, 6, 1), date_to=date(2020, 10, 31))  # 06-13, 08-22, 10-11
    answer = searcher.query("a river", top_k=9, filters=filters)
    assert len(answer.results) == 9 and len({r.place_id for r in answer.results}) == 9
    assert all(r.acquisitions == 3 for r in answer.results)
    assert {d[:10] for r in answer.results for d in r.dates} == {"2020-06-13", "2020-08-22", "2020-10-11"}
    assert_places_follow_the_scores(
        answer.results,
        every_score(searcher, "a river"),
        searcher.store,
        passing=lambda row: "2020-06-01" <= row["acquired"] < "2020-11-01",
    )
    row = searcher.store.tiles_by_id([1])[1]  # one chip's ground: one place, its six dates
    box = (row["centre_lon"] - 1e-4, row["centre_lat"] - 1e-4, row["centre_lon"] + 1e-4, row["centre_lat"] + 1e-4)
    (only,) = searcher.query("a river", top_k=9, filters=Filters(bbox=box)).results
    assert only.place_id == row["place_id"] and only.acquisitions == 6


def test_all_acquisitions_ranks_exactly_as_a_search_of_acquisitions(searcher):
    vector, _ = searcher.embed_text(SPACE, "a river")
    for k in (1, 7, 30):
        answer = searcher.query("a river", top_k=k, all_acquisitions=True)
        assert not answer.per_place
        expected = searcher.search_vector(SPACE, vector, k, None)
        assert [(r.tile_id, r.score) for r in answer.results] == expected
        assert all(r.acquisitions is None and r.dates is None for r in answer.results)
    repeated = Counter(r.place_id for r in searcher.query("a river", top_k=30, all_acquisitions=True).results)
    assert max(repeated.values()) > 1  # what per place is for: one place many times over


def test_like_and_feedback_return_other_places(searcher):
    example = searcher.query("a river", top_k=1).results[0]
    like = searcher.like(str(example.tile_id), top_k=8)
    assert len(like.results) == 8 and example.place_id not in {r.place_id for r in like.results}
    assert len({r.place_id for r in like.results}) == 8
    vector = searcher.store.vectors_of(SPACE, [example.tile_id])[0]
    ids, vectors = searcher.store.all_vectors(SPACE)
    assert_places_follow_the_scores(like.results, dict(zip(ids.tolist(), (vectors @ vector).tolist())), searcher.store)
    every = searcher.like(str(example.tile_id), top_k=10, all_acquisitions=True)
    assert example.tile_id not in {r.tile_id for r in every.results}
    assert example.place_id in {r.place_id for r in every.results}  # its own other dates, per acquisition
    feedback = searcher.feedback("a river", like=[example.tile_id], top_k=8)
    assert len({r.place_id for r in feedback.results}) == 8 and example.place_id not in {
        r.place_id for r in feedback.results
    }


def test_cli_query_prints_places_and_all_acquisitions(series_index, searcher):
    result = runner.invoke(app, ["query", "a river", "--index", str(series_index), "--top-k", "4", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    expected = searcher.query("a river", top_k=4).results
    assert document["per_place"] is True
    assert [(r["place_id"], r["tile_id"], r["acquisitions"], r["dates"]) for r in document["results"]] == [
        (r.place_id, r.tile_id, r.acquisitions, r.dates) for r in expected
    ]
    result = runner.invoke(
        app, ["query", "a river", "--index", str(series_index), "--top-k", "4", "--all-acquisitions", "--json"]
    )
    document = json.loads(result.output)
    assert document["per_place"] is False
    assert [r["tile_id"] for r in document["results"]] == [
        r.tile_id for r in searcher.query("a river", top_k=4, all_acquisitions=True).results
    ]
    result = runner.invoke(app, ["query", "a river", "--index", str(series_index), "--top-k", "2", "--csv"])
    cells = next(csv.DictReader(io.StringIO(result.output)))  # chip keys hold commas: quoted cells
    assert cells["place_id"] == str(expected[0].place_id) and cells["acquisitions"] == "6"
    assert cells["dates"] == ";".join(expected[0].dates)
    result = runner.invoke(app, ["query", "a river", "--index", str(series_index), "--top-k", "2"])
    assert result.exit_code == 0 and "place" in result.output and "dates" in result.output


def test_eval_per_place_scores_places(series_index, searcher, tmp_path):
    """One relevant tile per query: per tile, its place's other five dates are false hits; per place the place
    is relevant, so ranking it first is a perfect score."""
    best = searcher.query("a river", top_k=1).results[0]
    queries = tmp_path / "queries.csv"
    queries.write_text(f"query,lang,relevant\na river,en,{best.date_tile_ids[-1]}\n")
    args = ["eval", str(queries), "--index", str(series_index), "--k", "10", "--json"]
    per_tile = json.loads(runner.invoke(app, args).output)
    result = runner.invoke(app, [*args, "--per-place"])
    assert result.exit_code == 0, result.output
    places = json.loads(result.output)
    assert places["scored"] == "places" and per_tile["scored"] == "tiles"
    assert places["overall"]["mean_average_precision"] == pytest.approx(1.0)
    assert per_tile["overall"]["mean_average_precision"] < 1.0
    assert places["index_recall_at_k"]["mean"] == pytest.approx(1.0)
    bad = runner.invoke(app, ["eval", str(queries), "--index", str(series_index), "--per-place", "--routes"])
    assert bad.exit_code == 2 and "--per-place" in bad.output


# -- the API ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(searcher):
    return TestClient(create_app(searcher, allowed_hosts=["127.0.0.1"]), base_url="http://127.0.0.1")


def test_api_search_answers_per_place_and_all_acquisitions(client, searcher):
    collection = client.get("/api/search", params={"q": "a river", "top_k": 4}).json()
    expected = searcher.query("a river", top_k=4).results
    assert collection["per_place"] is True
    properties = [f["properties"] for f in collection["features"]]
    assert [(p["place_id"], p["tile_id"], p["acquisitions"], p["dates"]) for p in properties] == [
        (r.place_id, r.tile_id, r.acquisitions, r.dates) for r in expected
    ]
    every = client.get("/api/search", params={"q": "a river", "top_k": 12, "all_acquisitions": "true"}).json()
    assert [f["properties"]["tile_id"] for f in every["features"]] == [
        r.tile_id for r in searcher.query("a river", top_k=12, all_acquisitions=True).results
    ]
    body = {"q": "a river", "like": [expected[0].tile_id], "top_k": 3}
    posted = client.post("/api/search", json=body).json()
    assert len({f["properties"]["place_id"] for f in posted["features"]}) == 3
    posted = client.post("/api/search", json={**body, "all_acquisitions": True}).json()
    assert posted["per_place"] is False
    windowed = client.get("/api/search", params={"q": "a river", "top_k": 2, "offset": 2}).json()
    assert [f["properties"]["place_id"] for f in windowed["features"]] == [r.place_id for r in expected[2:4]]


def test_api_place_and_its_acquisitions(client, searcher):
    best = searcher.query("a river", top_k=1).results[0]
    response = client.get(f"/api/places/{best.place_id}")
    assert response.status_code == 200, response.text
    place = response.json()
    assert place["place_id"] == best.place_id and place["crs"] == "EPSG:32648" and place["pixel_size"] == 10.0
    assert (place["width"], place["height"]) == (96, 96) and place["footprint"]["type"] == "Polygon"
    assert [a["acquired"][:10] for a in place["acquisitions"]] == list(SERIES_DATES)
    assert best.tile_id in {a["id"] for a in place["acquisitions"]}
    assert {a["place_id"] for a in place["acquisitions"]} == {best.place_id}
    assert place["lon"] == pytest.approx(best.lon, abs=1e-9) and place["lat"] == pytest.approx(best.lat, abs=1e-9)
    # a chip cut at --chip-size 96 is read back (for its quicklook) as its catalogued window of the scene
    assert searcher.tile_pixels(best.tile_id).data.shape[-2:] == (96, 96)
    assert client.get(f"/api/tiles/{best.tile_id}/quicklook.png").status_code == 200


@pytest.mark.parametrize(
    "path, status, message",
    [
        ("/api/places/9999", 404, "no place with id 9999"),
        ("/api/places/abc", 404, "places are named by their numeric id"),
        ("/api/places/-1", 404, "places are named by their numeric id"),
        ("/api/search?q=river&date_from=2020-13-01", 400, "date_from"),
        ("/api/search?q=river&date_from=2020-12-01&date_to=2020-01-01", 422, "2020-12-01 is after"),
        ("/api/search?q=river&all_acquisitions=maybe", 400, "all_acquisitions"),
    ],
)
def test_api_bad_input_is_a_clear_4xx(client, path, status, message):
    response = client.get(path)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_the_openapi_schema_documents_the_place_route(client):
    schema = client.get("/api/openapi.json").json()
    route = schema["paths"]["/api/places/{place_id}"]["get"]
    assert "404" in route["responses"]
    error = route["responses"]["404"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/ErrorBody"}
    assert np.array_equal(sorted(schema["components"]["schemas"]["ErrorBody"]["properties"]), ["error"])
