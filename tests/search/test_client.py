"""msearch.client against a live `msearch serve` on loopback: the answers are the searcher's, errors raise
with the server's status and message, and a token is sent."""

import pytest

from msearch.client import Client, MsearchApiError
from msearch.indexer.readers import ArchivePixels
from msearch.search.quicklook import png_bytes, true_colour
from msearch.search.searcher import Filters, Searcher
from msearch.search.timeline import place_timeline
from tests.search.live_server import live_server

TOKEN = "client-test-token"


@pytest.fixture(scope="module")
def searcher(eurosat_index):
    return Searcher(eurosat_index, pixels=ArchivePixels())


@pytest.fixture(scope="module")
def client(eurosat_index, tmp_path_factory):
    with live_server(eurosat_index, tmp_path_factory.mktemp("serve") / "serve.log") as base:
        with Client(base) as client:
            yield client


def ids(answer: dict) -> list[int]:
    return [feature["properties"]["tile_id"] for feature in answer["features"]]


def test_search_answers_as_the_searcher_ranks(client, searcher):
    answer = client.search("a river between fields", top_k=7)
    assert answer["type"] == "FeatureCollection" and answer["lang"] == "en"
    assert ids(answer) == [r.tile_id for r in searcher.query("a river between fields", top_k=7).results]
    fused = client.search("forest", fuse=True, lang="en", top_k=5)
    assert ids(fused) == [r.tile_id for r in searcher.query("forest", fuse=True, lang="en", top_k=5).results]
    paged = client.search("a river between fields", top_k=3, offset=4)
    assert ids(paged) == ids(answer)[4:7]


def test_filters_and_examples(client, searcher):
    row = searcher.store.tiles_by_id([1])[1]
    box = (row["min_lon"], row["min_lat"], row["max_lon"], row["max_lat"])
    filtered = client.search("fields", bbox=box, top_k=30)
    assert ids(filtered) == [r.tile_id for r in searcher.query("fields", top_k=30, filters=Filters(bbox=box)).results]
    assert 1 in ids(filtered) and len(ids(filtered)) < 30
    assert client.search("fields", date_from="2020-01-01")["features"] == []  # EuroSAT has no dates
    liked = ids(client.search("a river", top_k=2))
    refined = client.search("a river", like=liked[:1], unlike=liked[1:], top_k=5)
    expected = searcher.feedback("a river", like=liked[:1], unlike=liked[1:], top_k=5)
    assert ids(refined) == [r.tile_id for r in expected.results] and refined["like"] == liked[:1]
    alone = client.search(like=liked[:1], top_k=4)
    assert len(ids(alone)) == 4 and liked[0] not in ids(alone)


def test_places_timelines_and_change(client, searcher):
    answer = client.search("a river", top_k=3)
    place_id = answer["features"][0]["properties"]["place_id"]
    assert answer["per_place"] and answer["features"][0]["properties"]["acquisitions"] == 1  # EuroSAT: one date
    tiles = client.search("a river", top_k=3, all_acquisitions=True)
    assert not tiles["per_place"]
    assert ids(tiles) == [r.tile_id for r in searcher.query("a river", top_k=3, all_acquisitions=True).results]
    place = client.place(place_id)
    assert place["place_id"] == place_id
    assert [t["id"] for t in place["acquisitions"]] == [t["id"] for t in searcher.store.place_acquisitions(place_id)]
    timeline = client.timeline(place_id, "a river")
    expected = place_timeline(searcher, place_id, "a river").to_dict()
    assert [a["tile_id"] for a in timeline["acquisitions"]] == [a["tile_id"] for a in expected["acquisitions"]]
    assert [a["score"] for a in timeline["acquisitions"]] == pytest.approx(
        [a["score"] for a in expected["acquisitions"]]
    )
    with pytest.raises(MsearchApiError) as unknown:
        client.place(99999)
    assert unknown.value.status == 404 and "no place with id 99999" in unknown.value.message
    with pytest.raises(MsearchApiError) as undated:  # EuroSAT has no dates: no split date is inside them
        client.change("2020-01-01", any=True)
    assert undated.value.status == 422


def test_tile_quicklook_info_and_schema(client, searcher):
    tile = client.tile(3)
    assert tile["id"] == 3 and tile["footprint"]["type"] == "Polygon"
    assert client.quicklook(3) == png_bytes(true_colour(searcher.tile_pixels(3)))
    info = client.info()
    assert info["tiles"] == 30 and info["limits"]["max_top_k"] == 200
    assert "/api/search" in client.schema()["paths"]
    assert client.get("/health") == {"status": "ok"}  # any route, by path


def test_heat_maps_and_outlines(client, searcher):
    from rasterio.io import MemoryFile

    from msearch.search.heatmaps import geotiff_bytes, heat_maps, heat_target

    [expected] = heat_maps(searcher, [3], heat_target(searcher, text="a river"))
    assert client.heatmap(3, q="a river") == geotiff_bytes(expected)
    with MemoryFile(client.heatmap(3, like=4, kind="tif")) as memory, memory.open() as dataset:
        assert dataset.shape == (14, 14)
    assert client.heatmap(3, q="a river", kind="png").startswith(b"\x89PNG")
    outlines = client.locate(3, q="a river", threshold=-2)
    assert sum(f["properties"]["patches"] for f in outlines["features"]) == 196
    with pytest.raises(MsearchApiError) as raised:
        client.heatmap(3)
    assert raised.value.status == 422


def test_errors_raise_with_the_server_status_and_message(client):
    with pytest.raises(MsearchApiError) as refused:
        client.search("river", top_k=500)
    assert refused.value.status == 400 and "top_k" in refused.value.message
    with pytest.raises(MsearchApiError) as unknown:
        client.tile(99999)
    assert unknown.value.status == 404 and unknown.value.message == "no tile with id 99999 in this index"
    with pytest.raises(MsearchApiError) as rule:
        client.search("river", bbox=(10, 10, 5, 5))
    assert rule.value.status == 422 and "min <= max" in rule.value.message
    with pytest.raises(ValueError, match="query text"):
        client.search()


def test_a_token_is_sent(eurosat_index, tmp_path):
    with live_server(eurosat_index, tmp_path / "serve.log", "--token", TOKEN) as base:
        with Client(base, token=TOKEN) as client:
            assert client.info()["tiles"] == 30
        with Client(base) as client, pytest.raises(MsearchApiError) as refused:
            client.info()
        assert refused.value.status == 401 and "token" in refused.value.message
