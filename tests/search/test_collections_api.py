"""The collections API over a planted index (tests/search/planted.py): create, label, detect, suggest,
errors with their documented statuses, and the token."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from msearch.search.searcher import Searcher
from msearch.search.server import create_app
from tests.search.planted import SPACE, planted_ids

POSITIVES = planted_ids()[:5]


@pytest.fixture(scope="module")
def index(planted_index, tmp_path_factory):
    directory = tmp_path_factory.mktemp("collections-api") / "index"
    shutil.copytree(planted_index, directory)
    return directory


@pytest.fixture(scope="module")
def client(index):
    return TestClient(create_app(Searcher(index)))


def test_create_label_detect_and_suggest(client):
    assert client.get("/api/collections").json() == {"collections": []}
    created = client.post("/api/collections", json={"name": "planted", "note": "the cluster"})
    assert created.status_code == 201 and created.json()["space"] == SPACE
    changed = client.post("/api/collections/planted/labels", json={"positive": POSITIVES, "negative": [1, 2]})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["added"], changed.json()["collection"]["positives"]) == (7, 5)
    changed = client.post("/api/collections/planted/labels", json={"remove": [2]}).json()
    assert changed["removed"] == 1 and changed["collection"]["negatives"] == 1
    labels = client.get("/api/collections/planted/labels").json()
    assert {item["tile_id"]: item["label"] for item in labels["labels"]} == {
        **{t: "positive" for t in POSITIVES},
        1: "negative",
    }
    assert labels["labels"][0]["added_by"] == "api"

    detected = client.get("/api/collections/planted/detect", params={"top_k": 60})
    assert detected.status_code == 200, detected.text
    body = detected.json()
    assert body["type"] == "FeatureCollection" and body["collection"] == "planted"
    assert body["fit"]["positives"] == 5 and body["fit"]["cross_validation"]["folds"] == 5
    assert {f["id"] for f in body["features"]} == set(planted_ids())
    assert all(f["geometry"]["type"] == "Polygon" for f in body["features"])
    probabilities = [f["properties"]["probability"] for f in body["features"]]
    assert probabilities == sorted(probabilities, reverse=True)
    above = client.get("/api/collections/planted/detect", params={"threshold": 0.9}).json()
    assert all(f["properties"]["probability"] >= 0.9 for f in above["features"]) and above["features"]

    suggested = client.get("/api/collections/planted/suggest", params={"n": 3}).json()
    assert len(suggested["features"]) == 3 and suggested["suggestions"] is True
    assert all(f["properties"]["label"] is None for f in suggested["features"])
    assert [c["name"] for c in client.get("/api/collections").json()["collections"]] == ["planted"]


@pytest.mark.parametrize(
    "method, path, body, status, says",
    [
        ("get", "/api/collections/nothing/labels", None, 404, "no collection named 'nothing'"),
        ("get", "/api/collections/nothing/detect", None, 404, "no collection named 'nothing'"),
        ("post", "/api/collections", {"name": "few"}, 409, "exists already"),
        ("get", "/api/collections/few/detect", None, 422, "at least 2 positive examples"),
        ("post", "/api/collections/few/labels", {"positive": [999999]}, 422, "no tile with id 999999"),
        ("post", "/api/collections/few/labels", {"positive": [1], "negative": [1]}, 422, "both positive and negative"),
        ("post", "/api/collections/few/labels", {"positive": ["x"]}, 400, "positive"),
        ("post", "/api/collections", {"name": "a b"}, 400, "name"),
        ("post", "/api/collections", {"name": "z", "space": "rs-m-clip"}, 422, "no space 'rs-m-clip'"),
        ("get", "/api/collections/few/detect?threshold=2", None, 400, "threshold"),
        ("get", "/api/collections/few/detect?top_k=5&top_k=6", None, 400, "may be given once"),
    ],
)
def test_errors_have_their_documented_status(client, method, path, body, status, says):
    if not any(c["name"] == "few" for c in client.get("/api/collections").json()["collections"]):
        client.post("/api/collections", json={"name": "few"})
        client.post("/api/collections/few/labels", json={"positive": POSITIVES[:1]})
    response = client.post(path, json=body) if method == "post" else client.get(path)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]
    documented = client.get("/api/openapi.json").json()["paths"]
    route = path.split("?")[0].replace("nothing", "{name}").replace("few", "{name}")
    assert str(status) in documented[route][method]["responses"]


def test_labelling_needs_the_token(index):
    guarded = TestClient(create_app(Searcher(index), token="s3cret"))
    assert guarded.post("/api/collections", json={"name": "t"}).status_code == 401
    assert guarded.post("/api/collections/t/labels", json={"positive": [1]}).status_code == 401
    headers = {"Authorization": "Bearer s3cret"}
    assert guarded.post("/api/collections", json={"name": "t"}, headers=headers).status_code == 201
    assert guarded.delete("/api/collections/t", headers=headers).json() == {"deleted": "t", "labels": 0}
