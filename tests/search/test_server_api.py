"""`msearch serve`'s JSON API in-process (FastAPI's TestClient) over the small EuroSAT index of tiny models."""

import io
import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from msearch.indexer.readers import ArchivePixels
from msearch.search.quicklook import png_bytes, true_colour
from msearch.search.searcher import Filters, Searcher
from msearch.search.server import check_bind, create_app

BASE = "http://127.0.0.1"


@pytest.fixture(scope="module")
def searcher(eurosat_index):
    return Searcher(eurosat_index, pixels=ArchivePixels())


@pytest.fixture(scope="module")
def client(searcher):
    return TestClient(create_app(searcher, allowed_hosts=["127.0.0.1"]), base_url=BASE)


def ids(collection: dict) -> list[int]:
    return [feature["properties"]["tile_id"] for feature in collection["features"]]


@pytest.mark.parametrize(
    "params, call",
    [
        ({"q": "a river", "top_k": 7}, dict(text="a river", top_k=7)),
        ({"q": "um rio entre campos", "top_k": 5}, dict(text="um rio entre campos", top_k=5)),
        ({"q": "forest", "fuse": "true", "lang": "en"}, dict(text="forest", lang="en", fuse=True)),
        ({"q": "forest", "space": "rs-m-clip"}, dict(text="forest", space="rs-m-clip")),
        ({"q": "floresta densa", "lang": "pt", "route": "rgb"}, dict(text="floresta densa", lang="pt", route="rgb")),
    ],
)
def test_search_ranks_as_the_searcher_does(client, searcher, params, call):
    response = client.get("/api/search", params=params)
    assert response.status_code == 200, response.text
    collection = response.json()
    expected = searcher.query(**call)
    assert collection["type"] == "FeatureCollection"
    assert ids(collection) == [r.tile_id for r in expected.results]
    assert [f["properties"]["score"] for f in collection["features"]] == pytest.approx(
        [r.score for r in expected.results]
    )
    assert collection["lang"] == expected.lang and collection["space"] == "+".join(expected.spaces)
    first = collection["features"][0]
    assert first["geometry"]["type"] == "Polygon" and first["id"] == first["properties"]["tile_id"]
    assert {"rank", "score", "path", "date", "cloud", "tile", "space"} <= set(first["properties"])


def test_offset_pages_through_the_same_ranking(client):
    whole = ids(client.get("/api/search", params={"q": "houses", "top_k": 12}).json())
    second = client.get("/api/search", params={"q": "houses", "top_k": 4, "offset": 8}).json()
    assert ids(second) == whole[8:12]
    assert [f["properties"]["rank"] for f in second["features"]] == [9, 10, 11, 12]


def test_filters_keep_only_matching_tiles(client, searcher):
    row = searcher.store.tiles_by_id([1])[1]
    box = ",".join(str(v) for v in (row["min_lon"], row["min_lat"], row["max_lon"], row["max_lat"]))
    collection = client.get("/api/search", params={"q": "fields", "bbox": box, "top_k": 30}).json()
    expected = searcher.query("fields", top_k=30, filters=Filters(bbox=tuple(float(v) for v in box.split(","))))
    assert ids(collection) == [r.tile_id for r in expected.results]
    assert 1 in ids(collection) and len(ids(collection)) < 30
    assert collection["matching_tiles"] == expected.matching_tiles
    # EuroSAT files carry no date or cloud cover: a date window or a cloud limit keeps nothing.
    assert client.get("/api/search", params={"q": "fields", "max_cloud": 50}).json()["features"] == []
    assert client.get("/api/search", params={"q": "fields", "date_from": "2020-01-01"}).json()["features"] == []


def test_feedback_moves_the_ranking_toward_the_liked_tiles(client, searcher):
    text = client.get("/api/search", params={"q": "a river", "top_k": 10}).json()
    forests = [tid for tid, row in searcher.store.tiles_by_id(range(1, 31)).items() if row["key"].startswith("Forest")]
    liked = forests[:2]
    refined = client.post("/api/search", json={"q": "a river", "like": liked, "top_k": 10}).json()
    assert refined["like"] == liked and not set(liked) & set(ids(refined))
    vectors = searcher.store.vectors_of(refined["space"], liked).mean(axis=0)

    def closeness(collection):
        found = ids(collection)
        return float((searcher.store.vectors_of(refined["space"], found) @ vectors).mean())

    assert closeness(refined) > closeness(text)
    assert ids(refined) != ids(text)
    # The formula: Rocchio on unit vectors, the same as the searcher's.
    expected = searcher.feedback("a river", like=liked, top_k=10)
    assert ids(refined) == [r.tile_id for r in expected.results]
    # Examples alone, and an unliked tile pushed away.
    alone = client.post("/api/search", json={"like": [liked[0]], "top_k": 5}).json()
    assert len(alone["features"]) == 5 and liked[0] not in ids(alone)
    first = ids(alone)[0]
    pushed = client.post("/api/search", json={"like": [liked[0]], "unlike": [first], "top_k": 5}).json()
    assert first not in ids(pushed)


def test_tile_quicklook_and_info(client, searcher):
    tile = client.get("/api/tiles/3").json()
    assert tile["id"] == 3 and tile["footprint"]["type"] == "Polygon" and tile["key"].endswith(".tif")
    response = client.get("/api/tiles/3/quicklook.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content == png_bytes(true_colour(searcher.tile_pixels(3)))  # the --html stretch
    assert Image.open(io.BytesIO(response.content)).size == (64, 64)
    info = client.get("/api/info").json()
    assert info["tiles"] == 30 and {s["space"] for s in info["spaces"]} == {"tiny-ms-clip", "rs-m-clip"}
    assert all(s["vectors"] == 30 for s in info["spaces"])
    assert client.get("/health").json() == {"status": "ok"}
    assert "/api/search" in client.get("/api/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404


def test_the_page_and_its_files_are_served_by_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for name in (
        "app.js",
        "places.js",
        "places_time.js",
        "heatmaps.js",
        "app.css",
        "land-110m.geojson",
        "leaflet/leaflet.js",
        "leaflet/leaflet.css",
    ):
        assert client.get(f"/static/{name}").status_code == 200, name
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from another site
    land = client.get("/static/land-110m.geojson").json()
    assert land["type"] == "FeatureCollection" and land["features"][0]["geometry"]["type"] == "MultiPolygon"


@pytest.mark.parametrize(
    "path",
    [
        "/api/tiles/../../etc/passwd",
        "/api/tiles/..%2F..%2Fetc%2Fpasswd",
        "/api/tiles/%2e%2e%2f%2e%2e%2fetc%2fpasswd/quicklook.png",
        "/api/tiles/..%252F..%252Fetc%252Fpasswd/quicklook.png",
        "/api/tiles/%2Fetc%2Fpasswd/quicklook.png",
        "/api/tiles/1%2F..%2F..%2Fetc%2Fpasswd",
        "/static/../../../../etc/passwd",
        "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/static/%2Fetc%2Fpasswd",
        "/static/leaflet/../../../../../etc/passwd",
        "/api/tiles/99999/quicklook.png",
        "/api/tiles/-1",
        "/api/tiles/１/quicklook.png",  # a full-width digit
    ],
)
def test_traversal_attempts_are_404(client, path):
    response = client.get(path)
    assert response.status_code == 404, (path, response.text)
    assert "error" in response.json() and "root:" not in response.text


@pytest.mark.parametrize(
    "params, status, says",
    [
        # 400: the request does not match the schema.
        ({}, 400, "q"),
        ({"q": ""}, 400, "q"),
        ({"q": "   "}, 400, "q"),
        ({"q": "x" * 1001}, 400, "q"),
        ({"q": "river", "top_k": 0}, 400, "top_k"),
        ({"q": "river", "top_k": 201}, 400, "top_k"),
        ({"q": "river", "top_k": "ten"}, 400, "top_k"),
        ({"q": "river", "top_k": "1.0"}, 400, "top_k"),
        ({"q": "river", "lang": "xx"}, 400, "lang"),
        ({"q": "river", "bbox": "1,2,3"}, 400, "bbox"),
        ({"q": "river", "bbox": "nan,0,1,1"}, 400, "bbox"),
        ({"q": "river", "date_from": "yesterday"}, 400, "date_from"),
        ({"q": "river", "date_from": "0"}, 400, "date_from"),
        ({"q": "river", "max_cloud": 101}, 400, "max_cloud"),
        ({"q": "river", "max_cloud": "nan"}, 400, "max_cloud"),
        ({"q": "river", "tile_id": "x" * 11}, 400, "tile_id"),
        ({"q": "river", "route": "teleport"}, 400, "route"),
        ({"q": "river", "topk": 5}, 400, "unknown query parameter topk"),
        # 422: it does, but breaks a rule across values or names what the index lacks.
        ({"q": "river", "top_k": 150, "offset": 100}, 422, "top_k + offset"),
        ({"q": "river", "space": "nope"}, 422, "no space 'nope'"),
        ({"q": "river", "bbox": "10,10,5,5"}, 422, "min <= max"),
        ({"q": "river", "bbox": "0,0,200,10"}, 422, "WGS84"),
        ({"q": "river", "date_from": "2024-05-01", "date_to": "2024-01-01"}, 422, "after"),
        ({"q": "river", "fuse": "true", "space": "rs-m-clip"}, 422, "fuse"),
        ({"q": "river", "lang": "en", "route": "rgb"}, 422, "leave it out for English"),
        ({"q": "ሰላም ለዓለም"}, 422, "none of the text encoders"),
    ],
)
def test_bad_parameters_get_a_4xx_saying_what_to_change(client, params, status, says):
    response = client.get("/api/search", params=params)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]


@pytest.mark.parametrize(
    "query",
    ["q=river&q=forest", "q=river&top_k=3&top_k=4", "q=river&date_from=2020-01-01&date_from=2021-01-01"],
)
def test_a_repeated_single_valued_parameter_is_refused(client, query):
    response = client.get("/api/search?" + query)
    assert response.status_code == 400
    repeated = query.split("&")[-1].split("=")[0]
    assert response.json() == {"error": f"{repeated} may be given once (it was repeated)"}


@pytest.mark.parametrize(
    "body, name",
    [(b'{"q": "river", "q": "forest"}', "q"), (b'{"like": [1], "top_k": 3, "top_k": 4}', "top_k")],
)
def test_a_name_repeated_in_the_body_is_refused(client, body, name):
    response = client.post("/api/search", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"error": f"{name} may be given once in the body (it was repeated)"}


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'"text"',
        b"null",
        b'{"q": 5}',
        b'{"like": ["a"]}',
        b'{"like": [99999]}',
        b'{"like": []}',
        b'{"q": "river", "unexpected": 1}',
        b'{"like": ' + json.dumps(list(range(101))).encode() + b"}",
        b'{"q": "river", "top_k": 1e9}',
        b'{"like": [1], "unlike": [1]}',
        b'{"like": [100000000000000000000000]}',
        b'{"like": [0]}',
        b"\xff\xfe",
    ],
)
def test_a_malformed_body_is_a_4xx_never_a_500(client, body):
    response = client.post("/api/search", content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, (body, response.status_code, response.text)
    assert response.json()["error"]


def test_a_token_guards_every_api_request(searcher):
    client = TestClient(create_app(searcher, token="s3cret"), base_url=BASE)
    for path in ("/api/search?q=river", "/api/info", "/api/tiles/1", "/api/tiles/1/quicklook.png", "/api/openapi.json"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            response = client.get(path, headers=headers)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer", path
    good = {"Authorization": "Bearer s3cret"}
    assert client.get("/api/search?q=river", headers=good).status_code == 200
    assert client.post("/api/search", json={"like": [1]}, headers=good).status_code == 200
    assert client.get("/health").status_code == 200 and client.get("/").status_code == 200  # no data in them


def test_binding_beyond_loopback_needs_a_token():
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("0.0.0.0", "t")
    with pytest.raises(ValueError, match="--token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ValueError, match="--token"):
        check_bind("192.168.1.5", "")


def test_without_a_token_only_loopback_host_names_are_answered(searcher):
    client = TestClient(create_app(searcher, allowed_hosts=["127.0.0.1", "localhost"]), base_url="http://evil.example")
    assert client.get("/api/info").status_code == 400


def test_concurrent_requests_get_the_answers_of_sequential_ones(client):
    queries = ["a river", "forest", "houses", "farmland", "sea", "une autoroute", "ein Wald", "motorway"] * 3
    expected = {q: client.get("/api/search", params={"q": q}).json() for q in set(queries)}

    def ask(index_and_query):
        index, query = index_and_query
        if index % 3 == 0:
            return query, client.get(f"/api/tiles/{index % 30 + 1}/quicklook.png").status_code
        return query, client.get("/api/search", params={"q": query}).json()

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, enumerate(queries)))
    for query, answer in answers:
        if isinstance(answer, int):
            assert answer == 200
        else:
            assert ids(answer) == ids(expected[query])


def test_new_tiles_are_found_without_a_restart(tmp_path, eurosat_index, shared_data):
    """An index run after the server started: its tiles are searched on the next request."""
    from msearch.indexer.pipeline import index_archive
    from msearch.indexer.tiles import ReadSettings
    from msearch.schema.bands import BAND_LAYOUTS

    index = tmp_path / "index"
    shutil.copytree(eurosat_index, index)
    client = TestClient(create_app(Searcher(index, pixels=ArchivePixels()), refresh_seconds=0), base_url=BASE)
    before = client.get("/api/search", params={"q": "a lake", "top_k": 100}).json()
    assert len(before["features"]) == 30
    archive = tmp_path / "more"
    (archive / "SeaLake").mkdir(parents=True)
    for n in (4, 5):
        shutil.copy(shared_data / "eurosat-ms" / "SeaLake" / f"SeaLake_{n}.tif", archive / "SeaLake")
    summary = index_archive(
        [archive],
        index=index,
        models=["tiny-ms-clip", "rs-m-clip"],
        settings=ReadSettings(band_order=BAND_LAYOUTS["eurosat"]),
        workers=0,
    )
    assert summary.indexed == 2
    after = client.get("/api/search", params={"q": "a lake", "top_k": 100}).json()
    assert len(after["features"]) == 32
    new = set(ids(after)) - set(ids(before))
    assert len(new) == 2
    assert client.get(f"/api/tiles/{min(new)}/quicklook.png").status_code == 200
    assert np.isfinite([f["properties"]["score"] for f in after["features"]]).all()
    # A pruning run deletes a tile: the loaded index is reopened without it.
    (archive / "SeaLake" / "SeaLake_5.tif").unlink()
    pruned = index_archive(
        [archive],
        index=index,
        models=["tiny-ms-clip", "rs-m-clip"],
        settings=ReadSettings(band_order=BAND_LAYOUTS["eurosat"]),
        workers=0,
        prune=True,
    )
    assert pruned.removed == 1
    last = client.get("/api/search", params={"q": "a lake", "top_k": 100}).json()
    assert len(last["features"]) == 31 and set(ids(last)) < set(ids(after))


def test_serve_refuses_another_address_without_a_token(eurosat_index, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from msearch.cli import app

    monkeypatch.delenv("MSEARCH_TOKEN", raising=False)
    runner = CliRunner()
    refused = runner.invoke(app, ["serve", "--index", str(eurosat_index), "--host", "0.0.0.0"])
    assert refused.exit_code == 2 and "--token" in refused.output
    missing = runner.invoke(app, ["serve", "--index", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no msearch index" in missing.output


def test_serve_refuses_an_index_whose_model_card_it_does_not_know(eurosat_index, tmp_path, monkeypatch):
    """Started anyway, every query would answer 500: the command says which card is missing, exit 2."""
    from typer.testing import CliRunner

    from msearch.cli import app

    monkeypatch.setenv("MSEARCH_CARDS", str(tmp_path / "no-cards"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/msearch/cards either
    refused = CliRunner().invoke(app, ["serve", "--index", str(eurosat_index)])
    assert refused.exit_code == 2
    assert "model card this installation does not know" in refused.output and "MSEARCH_CARDS" in refused.output
