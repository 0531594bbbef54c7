"""GET /api/places/{id}/timeline and GET /api/change in-process (FastAPI's TestClient) over the Major TOM series
with its planted change (tests/search/conftest.py `change_series`)."""

from datetime import date

import pytest
from fastapi.testclient import TestClient

from msearch.indexer.readers import ArchivePixels
from msearch.search.change import ChangeFinder
from msearch.search.searcher import Searcher
from msearch.search.server import create_app
from msearch.search.timeline import place_timeline
from tests.places_series import CHANGED_CHIP

BASE = "http://127.0.0.1"


@pytest.fixture(scope="module")
def searcher(change_series):
    return Searcher(change_series.index, pixels=ArchivePixels())


@pytest.fixture(scope="module")
def client(searcher):
    return TestClient(create_app(searcher, allowed_hosts=["127.0.0.1"]), base_url=BASE)


def test_timeline_endpoint_answers_as_the_library(client, searcher, change_series):
    centre = change_series.place_of(searcher, CHANGED_CHIP)
    response = client.get(f"/api/places/{centre}/timeline", params={"q": "a river"})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = place_timeline(searcher, centre, "a river")
    assert body["place_id"] == centre and body["query"] == "a river" and body["footprint"]["type"] == "Polygon"
    assert [a["tile_id"] for a in body["acquisitions"]] == [p.tile_id for p in expected.acquisitions]
    assert [a["score"] for a in body["acquisitions"]] == pytest.approx([p.score for p in expected.acquisitions])
    first_tile = body["acquisitions"][0]["tile_id"]
    by_example = client.get(f"/api/places/{centre}/timeline", params={"like": first_tile}).json()
    assert by_example["query"] == f"like:{first_tile}" and len(by_example["acquisitions"]) == 8


def test_change_endpoint_answers_as_the_library(client, searcher, change_series):
    centre = change_series.place_of(searcher, CHANGED_CHIP)
    response = client.get("/api/change", params={"after": "2020-05-01", "any": "true", "top_k": 4})
    assert response.status_code == 200, response.text
    collection = response.json()
    expected = ChangeFinder(searcher).find(date(2020, 5, 1), any_change=True, top_k=4)
    assert collection["type"] == "FeatureCollection" and collection["left_out"] == expected.left_out == 1
    assert [f["id"] for f in collection["features"]] == [r.place_id for r in expected.results]
    assert collection["features"][0]["id"] == centre
    first = collection["features"][0]["properties"]
    assert first["change"] == pytest.approx(expected.results[0].change)
    assert (first["before_acquisitions"], first["after_acquisitions"]) == (2, 6)
    tiles = searcher.store.place_acquisitions(centre)
    by_text = client.get("/api/change", params={"after": "2020-05-01", "to": "water", "from": "fields", "lang": "en"})
    assert by_text.status_code == 200 and by_text.json()["mode"] == "to"
    # An example of the new landscape: the centre's last acquisition (left out of its own place's medians).
    liked = client.get("/api/change", params={"after": "2020-05-01", "to_like": tiles[-1]["id"]}).json()
    assert liked["features"][0]["id"] == centre


@pytest.mark.parametrize(
    "path, params, status, message",
    [
        ("/api/places/9999/timeline", {"q": "river"}, 404, "no place with id 9999"),
        ("/api/places/0/timeline", {"q": "river"}, 404, "place_id"),  # a bad path id names nothing
        ("/api/places/1/timeline", {}, 422, "give a query TEXT or like EXAMPLE"),
        ("/api/places/1/timeline", {"q": "river", "like": 1}, 422, "give a query TEXT or like EXAMPLE"),
        ("/api/places/1/timeline", {"like": 99999}, 422, "neither a tile id"),
        ("/api/change", {"any": "true"}, 400, "after"),
        ("/api/change", {"after": "spring", "any": "true"}, 400, "after"),
        ("/api/change", {"after": "2030-01-01", "any": "true"}, 422, "outside the archive's dates"),
        ("/api/change", {"after": "2020-05-01", "before": "2020-06-01", "any": "true"}, 422, "is after after"),
        ("/api/change", {"after": "2020-05-01"}, 422, "one of to TEXT, to-like EXAMPLE or any"),
        ("/api/change", {"after": "2020-05-01", "any": "true", "bbox": "1,2"}, 400, "bbox: "),
        ("/api/change", {"after": "2020-05-01", "any": "true", "top_k": 0}, 400, "top_k"),
    ],
)
def test_bad_input_is_a_4xx_with_a_clear_message(client, path, params, status, message):
    response = client.get(path, params=params)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_the_routes_document_their_errors(client):
    schema = client.get("/api/openapi.json").json()
    timeline = schema["paths"]["/api/places/{place_id}/timeline"]["get"]["responses"]
    change = schema["paths"]["/api/change"]["get"]["responses"]
    assert {"200", "400", "404", "422"} <= set(timeline) and {"200", "400", "422"} <= set(change)
    error = schema["components"]["schemas"]["ErrorBody"]
    assert error["required"] == ["error"]
