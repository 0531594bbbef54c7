"""`msearch serve` keeps the contract its OpenAPI schema states: Schemathesis (the schema-driven fuzzer) runs
every check over every operation against a live server on loopback, with a fixed seed and bounded examples,
without and with a token, and over a dated archive for the routes of places over time; every status the schema
documents is reached, by the fuzzer or by a request here, and every JSON answer matches its route's schema."""

import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.search.live_server import live_server

SEED = 20261207
TOKEN = "contract-test-token"
CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
# The collection the fuzzer's reading routes draw by name (schemathesis.toml), labelled before it runs: enough
# positives for a detector, so that detect and suggest answer 200 bodies to the response checks.
FUZZED_COLLECTION = "fuzzed"


def label_a_collection(base: str, headers: dict | None = None) -> None:
    """Create FUZZED_COLLECTION (the servers share an index: it may be there already) and label it."""
    body = {"name": FUZZED_COLLECTION, "space": "tiny-ms-clip"}
    created = httpx.post(f"{base}/api/collections", json=body, headers=headers)
    assert created.status_code in (201, 409), created.text
    body = {"positive": [1, 2], "negative": [3]}
    labelled = httpx.post(f"{base}/api/collections/{FUZZED_COLLECTION}/labels", json=body, headers=headers)
    assert labelled.status_code == 200, labelled.text


@pytest.fixture(scope="module")
def server(eurosat_index, tmp_path_factory):
    with live_server(eurosat_index, tmp_path_factory.mktemp("serve") / "serve.log") as base:
        label_a_collection(base)
        yield base


@pytest.fixture(scope="module")
def token_server(eurosat_index, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-token") / "serve.log"
    with live_server(eurosat_index, log, "--token", TOKEN) as base:
        label_a_collection(base, {"Authorization": f"Bearer {TOKEN}"})
        yield base


@pytest.fixture(scope="module")
def series_server(change_series, tmp_path_factory):
    """Over the dated Major TOM series (EuroSAT has no dates: a change there is always a 422)."""
    with live_server(change_series.index, tmp_path_factory.mktemp("serve-series") / "serve.log") as base:
        yield base


@pytest.fixture(scope="module")
def reached() -> dict[tuple[str, str], set[int]]:
    """(METHOD, /path template) -> the statuses answered, by the fuzzer or by the tests of this module."""
    return defaultdict(set)


def run_schemathesis(base: str, report: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SCHEMATHESIS, "--config-file", str(CONFIG), "run", f"{base}/api/openapi.json", "--checks", "all"]
        + ["--seed", str(SEED), "--workers", "1", "--no-color"]
        + ["--report", "ndjson", "--report-ndjson-path", str(report), *options],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=report.parent,  # its cache (.schemathesis/) goes beside the report, not into the repository
    )


def record_fuzzed(report: Path, reached: dict) -> int:
    """Add the statuses in a Schemathesis event log to `reached`; returns the number of responses."""
    count = 0
    for line in report.read_text().splitlines():
        event = json.loads(line)
        recorder = event.get("ScenarioFinished", {}).get("recorder", {})
        if "interactions" not in recorder:
            continue
        method, path = recorder["label"].split(" ", 1)
        for interaction in recorder["interactions"].values():
            response = interaction.get("response")
            if response:
                # A method the path does not have is answered for the path, not for this operation.
                asked = interaction["request"]["method"]
                reached[(asked if asked != method else method, path)].add(response["status_code"])
                count += 1
    return count


def test_the_fuzzer_finds_no_failure(server, reached, tmp_path):
    report = tmp_path / "events.ndjson"
    result = run_schemathesis(server, report, "--max-examples", "40")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert record_fuzzed(report, reached) > 500
    assert {400, 422} <= reached[("GET", "/api/search")] and 200 in reached[("POST", "/api/search")]
    # The routes whose 200 bodies need a thing that exists (schemathesis.toml's dictionaries) answered some.
    for route in ("/api/places/{place_id}/timeline", "/api/tiles/{tile_id}/locate", "/api/collections/{name}/labels"):
        assert 200 in reached[("GET", route)], route
    for view in ("detect", "suggest"):
        assert 200 in reached[("GET", f"/api/collections/{{name}}/{view}")], view


def test_the_fuzzer_finds_no_failure_over_a_dated_archive(series_server, reached, tmp_path):
    """The routes of places again over dated places, where a change is answered, not refused (the fuzzing phase
    alone: the others' requests over these routes were made above)."""
    report = tmp_path / "events.ndjson"
    options = ("--max-examples", "20", "--include-path-regex", "^/api/(change|places/)", "--phases", "fuzzing")
    result = run_schemathesis(series_server, report, *options)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert record_fuzzed(report, reached) > 30
    assert 200 in reached[("GET", "/api/change")] and 200 in reached[("GET", "/api/places/{place_id}/timeline")]


def test_the_fuzzer_finds_no_failure_with_a_token(token_server, reached, tmp_path):
    """Every check again, with the token sent; its `ignored_auth` check also sends requests without it."""
    report = tmp_path / "events.ndjson"
    options = ("--max-examples", "8", "--header", f"Authorization: Bearer {TOKEN}")
    result = run_schemathesis(token_server, report, *options)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert record_fuzzed(report, reached) > 100
    assert 401 in reached[("GET", "/api/info")]


def test_the_schema_documents_the_errors_and_the_constraints(server, token_server):
    schema = httpx.get(f"{server}/api/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(schema) and "securitySchemes" not in schema["components"]
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            statuses = {int(s) for s in operation["responses"]}
            assert {400, 414} <= statuses and 401 not in statuses, (method, path)
            assert (413 in statuses) == ("requestBody" in operation), (method, path)
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert response["content"] == {"application/json": {"schema": error_ref}}, (method, path, status)
    search = {p["name"]: p for p in schema["paths"]["/api/search"]["get"]["parameters"]}
    assert search["q"]["required"] and search["q"]["schema"]["minLength"] == 1 and search["q"]["schema"]["pattern"]
    assert search["top_k"]["schema"]["minimum"] == 1 and search["top_k"]["schema"]["maximum"] == 200
    assert search["date_from"]["schema"]["anyOf"][0]["format"] == "date"
    assert set(search["lang"]["schema"]["enum"]) >= {"auto", "en", "pt", "zh"}
    assert {int(s) for s in schema["paths"]["/api/search"]["get"]["responses"]} == {200, 400, 409, 414, 422}
    body = schema["components"]["schemas"]["FeedbackRequest"]
    assert body["additionalProperties"] is False
    assert body["anyOf"] == [
        {"required": ["q"], "properties": {"q": {"type": "string"}}},
        {"required": ["like"], "properties": {"like": {"minItems": 1}}},
    ]
    feature = schema["components"]["schemas"]["ResultFeature"]
    assert set(feature["required"]) == {"type", "id", "geometry", "properties"}
    png = schema["paths"]["/api/tiles/{tile_id}/quicklook.png"]["get"]["responses"]["200"]["content"]
    assert list(png) == ["image/png"]
    # With a token: the bearer scheme and a 401 on every /api operation.
    guarded = httpx.get(f"{token_server}/api/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert guarded["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, operations in guarded["paths"].items():
        for operation in operations.values():
            assert ("401" in operation["responses"]) == path.startswith("/api"), path


def test_a_method_the_path_lacks_is_405_listing_all_of_its_methods(server, reached):
    for method, path, allowed in (
        ("DELETE", "/api/search", "GET, POST"),
        ("PUT", "/api/search", "GET, POST"),
        ("POST", "/api/tiles/1", "GET"),
        ("PATCH", "/api/info", "GET"),
    ):
        response = httpx.request(method, server + path)
        assert response.status_code == 405 and response.headers["allow"] == allowed, (method, path)
        assert response.json()["error"] == f"{method} is not a method of {path}: use {allowed.replace(', ', ' or ')}"
        reached[(method, path)].add(405)


def test_a_body_over_the_limit_is_413_and_a_url_over_the_limit_is_414(server, reached):
    from msearch.search.server.contract import MAX_BODY_BYTES, MAX_URL_BYTES

    big = json.dumps({"q": "river", "like": [1], "padding": "x" * MAX_BODY_BYTES}).encode()
    response = httpx.post(f"{server}/api/search", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "at most 65536" in response.json()["error"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(MAX_BODY_BYTES // 1024 + 2):
            yield b" " * 1024

    response = httpx.post(f"{server}/api/search", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json() == {"error": f"the body is over {MAX_BODY_BYTES} bytes"}
    reached[("POST", "/api/search")].add(413)
    # The longest valid query (1,000 four-byte characters, 12 kB percent-encoded) is answered...
    longest = httpx.get(f"{server}/api/search", params={"q": "🌊" * 1000, "top_k": 1})
    assert longest.status_code == 200, longest.text
    # ...and a longer URL is a 414 on every path, before anything reads it.
    tile_paths = [f"/api/tiles/1/{name}" for name in ("quicklook.png", "heatmap.png", "heatmap.tif", "locate")]
    for path in ("/api/search", "/api/info", "/api/tiles/1", *tile_paths, "/health"):
        response = httpx.get(f"{server}{path}?q={'x' * MAX_URL_BYTES}")
        assert response.status_code == 414 and response.json()["error"].startswith("the URL is"), path
        reached[("GET", path.replace("/1", "/{tile_id}"))].add(414)
    response = httpx.post(f"{server}/api/search?q={'x' * MAX_URL_BYTES}", json={"q": "river"})
    assert response.status_code == 414
    reached[("POST", "/api/search")].add(414)


@pytest.mark.parametrize(
    "path", ["/api/search?q=river", "/api/info?", "/api/tiles/1?", "/api/tiles/1/quicklook.png?", "/health?"]
)
def test_an_unknown_query_parameter_is_400_naming_it(server, reached, path):
    """A misspelt parameter is refused, not ignored (a filter that silently does nothing)."""
    response = httpx.get(f"{server}{path}&max_clouds=10")
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("unknown query parameter max_clouds (this path takes: ")
    reached[("GET", path.rstrip("?").split("?")[0].replace("/1", "/{tile_id}"))].add(400)


def test_an_encoder_that_differs_from_the_index_is_409(eurosat_index, tmp_path, reached, monkeypatch):
    """A server given other weights than the index was built with (--checkpoint) refuses to search."""
    monkeypatch.setenv("MSEARCH_CACHE", str(tmp_path / "cache"))  # no exported text tower: the weights load
    import torch
    from fastapi.testclient import TestClient

    from msearch.indexer.readers import ArchivePixels
    from msearch.search.searcher import Searcher
    from msearch.search.server import create_app
    from tests.tiny_models import TINY_MSCLIP_CFG, build_msclip, msclip_release_state_dict

    other = tmp_path / "other-weights.pt"
    torch.save(msclip_release_state_dict(build_msclip(TINY_MSCLIP_CFG, seed=1)), other)
    searcher = Searcher(eurosat_index, {"tiny-ms-clip": other}, query_cache=None, pixels=ArchivePixels())
    client = TestClient(create_app(searcher), base_url="http://127.0.0.1")
    response = client.get("/api/search", params={"q": "a lake between fields", "space": "tiny-ms-clip"})
    assert response.status_code == 409 and "--checkpoint" in response.json()["error"]
    reached[("GET", "/api/search")].add(409)
    response = client.post("/api/search", json={"q": "a river", "like": [1], "space": "tiny-ms-clip"})
    assert response.status_code == 409 and "--checkpoint" in response.json()["error"]
    reached[("POST", "/api/search")].add(409)
    response = client.get("/api/places/1/timeline", params={"q": "a lake", "space": "tiny-ms-clip"})
    assert response.status_code == 409 and "--checkpoint" in response.json()["error"]
    reached[("GET", "/api/places/{place_id}/timeline")].add(409)
    response = client.get("/api/change", params={"after": "2020-01-01", "to": "a lake", "space": "tiny-ms-clip"})
    assert response.status_code == 409 and "--checkpoint" in response.json()["error"]
    reached[("GET", "/api/change")].add(409)


def test_the_collection_routes_answer_every_status_they_document(server, reached):
    """The routes of msearch.search.server.collections, each documented status answered once."""
    from msearch.search.server.contract import MAX_BODY_BYTES, MAX_URL_BYTES

    def ask(method: str, path: str, status: int, **options) -> dict:
        response = httpx.request(method, server + path, **options)
        assert response.status_code == status, (method, path, response.text)
        template = path.split("?")[0].replace("/contract", "/{name}").replace("/nothing", "/{name}")
        reached[(method, template)].add(status)
        return response.json()

    ask("POST", "/api/collections", 201, json={"name": "contract", "space": "tiny-ms-clip"})
    ask("POST", "/api/collections", 409, json={"name": "contract"})
    ask("POST", "/api/collections", 422, json={"name": "other", "space": "nosuch"})
    ask("POST", "/api/collections", 400, json={"name": "a b"})
    ask("GET", "/api/collections", 200)
    ask("GET", "/api/collections?max_clouds=1", 400)
    ask("POST", "/api/collections/contract/labels", 200, json={"positive": [1]})
    ask("POST", "/api/collections/contract/labels", 422, json={"positive": [999999]})
    ask("POST", "/api/collections/nothing/labels", 404, json={"positive": [1]})
    ask("POST", "/api/collections/contract/labels", 400, json={"positive": ["x"]})
    ask("GET", "/api/collections/contract/labels", 200)
    ask("GET", "/api/collections/nothing/labels", 404)
    ask("GET", "/api/collections/contract/labels?x=1", 400)
    for view in ("detect", "suggest"):
        ask("GET", f"/api/collections/contract/{view}", 422)  # one positive
        ask("GET", f"/api/collections/nothing/{view}", 404)
        ask("GET", f"/api/collections/contract/{view}?bbox=1", 400)
    ask("POST", "/api/collections/contract/labels", 200, json={"positive": [2], "negative": [3]})
    assert len(ask("GET", "/api/collections/contract/detect?top_k=5", 200)["features"]) == 5
    assert len(ask("GET", "/api/collections/contract/suggest?n=2", 200)["features"]) == 2
    ask("DELETE", "/api/collections/contract", 200)
    ask("DELETE", "/api/collections/nothing", 404)
    ask("DELETE", "/api/collections/contract?x=1", 400)
    for path in ("/api/collections", "/api/collections/contract/labels"):
        big = json.dumps({"name": "x" * MAX_BODY_BYTES}).encode()
        ask("POST", path, 413, content=big, headers={"content-type": "application/json"})
        ask("POST", f"{path}?q={'x' * MAX_URL_BYTES}", 414, json={})
    for path in ("/api/collections", "/api/collections/contract/labels", "/api/collections/contract/detect"):
        ask("GET", f"{path}?q={'x' * MAX_URL_BYTES}", 414)
    ask("GET", f"/api/collections/contract/suggest?q={'x' * MAX_URL_BYTES}", 414)
    ask("DELETE", f"/api/collections/contract?q={'x' * MAX_URL_BYTES}", 414)
    for method, path in (
        ("PUT", "/api/collections"),
        ("PUT", "/api/collections/contract"),
        ("PUT", "/api/collections/contract/labels"),
        ("POST", "/api/collections/contract/detect"),
        ("POST", "/api/collections/contract/suggest"),
    ):
        ask(method, path, 405)


def test_the_place_routes_answer_every_status_they_document(server, reached, change_series):
    """GET /api/places/{id}, its timeline and /api/change: each documented status answered once (the 200s of
    a change, and the 404 of a timeline, over the dated Major TOM series; EuroSAT has no dates)."""
    from fastapi.testclient import TestClient

    from msearch.indexer.readers import ArchivePixels
    from msearch.search.searcher import Searcher
    from msearch.search.server import create_app
    from msearch.search.server.contract import MAX_URL_BYTES

    series = TestClient(create_app(Searcher(change_series.index, pixels=ArchivePixels())), base_url="http://127.0.0.1")

    def ask(method: str, path: str, status: int, on=None, **options) -> dict:
        response = (on or httpx).request(method, (server if on is None else "") + path, **options)
        assert response.status_code == status, (method, path, response.text)
        template = path.split("?")[0].replace("/places/1", "/places/{place_id}")
        template = template.replace("/places/99999", "/places/{place_id}").replace("/places/x", "/places/{place_id}")
        reached[(method, template)].add(status)
        return response.json()

    place = ask("GET", "/api/places/1", 200)
    assert place["place_id"] == 1 and place["acquisitions"]
    assert "no place with id 99999" in ask("GET", "/api/places/99999", 404)["error"]
    assert "numeric id" in ask("GET", "/api/places/x", 404)["error"]  # a path id that is not a number
    ask("GET", "/api/places/1?max_clouds=1", 400)
    assert ask("GET", "/api/places/1/timeline?q=a+river", 200)["place_id"] == 1
    ask("GET", "/api/places/99999/timeline?q=a+river", 404)
    ask("GET", "/api/places/1/timeline?q=a+river&like=1", 422)
    ask("GET", "/api/places/1/timeline?q=a+river&top_k=3", 400)
    ask("GET", "/api/change?after=2020-05-01&any=true", 200, on=series)
    ask("GET", "/api/change?after=2030-01-01&any=true", 422, on=series)
    ask("GET", "/api/change?after=spring&any=true", 400)
    for path in ("/api/places/1", "/api/places/1/timeline", "/api/change"):
        ask("GET", f"{path}?q={'x' * MAX_URL_BYTES}", 414)
        ask("POST", path, 405)


def test_every_answer_body_is_documented(server):
    """Each operation's success documents its body: a schema of its own (a $ref to a model) under the media
    type it is sent with, not FastAPI's empty schema for a route without a response model."""
    schema = httpx.get(f"{server}/api/openapi.json").json()
    binary = {"type": "string", "format": "binary"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            (status,) = [s for s in operation["responses"] if s.startswith("2")]
            for media_type, body in operation["responses"][status]["content"].items():
                if media_type.startswith("image/"):
                    assert body["schema"] == binary, (method, path)
                else:
                    assert media_type in ("application/json", "application/geo+json"), (method, path)
                    assert body["schema"]["$ref"].startswith("#/components/schemas/"), (method, path)
    locate = schema["paths"]["/api/tiles/{tile_id}/locate"]["get"]["responses"]["200"]["content"]
    assert list(locate) == ["application/geo+json"]


def validator_of(schema: dict, method: str, path: str, status: int) -> tuple[str, Draft202012Validator]:
    """(media type, validator) of an operation's answer with `status`, from the served OpenAPI schema (3.1:
    its schemas are JSON Schema 2020-12, resolved against the document's components)."""
    (media_type, body), *_ = schema["paths"][path][method.lower()]["responses"][str(status)]["content"].items()
    return media_type, Draft202012Validator({**body["schema"], "components": schema["components"]})


def test_every_json_answer_matches_the_schema_of_its_route(server, series_server):
    """A real answer of each JSON operation validates against its route's schema as served, and the same answer
    with one field of the wrong type (or out of its range) does not: the check can fail."""
    served = {base: httpx.get(f"{base}/api/openapi.json").json() for base in (server, series_server)}
    checked = set()

    def check(method: str, url: str, template: str, wrong: tuple, status: int = 200, base: str = server, **options):
        """Ask, validate the answer, then set the field at path `wrong[:-1]` to `wrong[-1]` and see it refused."""
        response = httpx.request(method, base + url, timeout=60, **options)
        assert response.status_code == status, (method, url, response.text)
        media_type, validator = validator_of(served[base], method, template, status)
        assert response.headers["content-type"].split(";")[0] == media_type, (method, url)
        body = response.json()
        assert [e.message for e in validator.iter_errors(body)] == [], (method, url)
        *where, field, value = wrong
        spoilt = json.loads(response.text)
        place = spoilt
        for key in where:
            place = place[key]
        assert field in place, (method, url, wrong)
        place[field] = value
        assert not validator.is_valid(spoilt), (method, url, wrong)
        checked.add((method, template))
        return body

    check("GET", "/health", "/health", ("status", "fine"))
    check("GET", "/api/info", "/api/info", ("tiles", "30"))
    check("GET", "/api/search?q=a+river&top_k=3", "/api/search", ("features", 0, "properties", "rank", 0))
    check("POST", "/api/search", "/api/search", ("like", ["1"]), json={"like": [1]})
    check("GET", "/api/tiles/1", "/api/tiles/{tile_id}", ("footprint", "type", "Circle"))
    check("GET", "/api/places/1", "/api/places/{place_id}", ("acquisitions", 0, "id", None))
    timeline = "/api/places/{place_id}/timeline"
    check("GET", "/api/places/1/timeline?q=a+river", timeline, ("acquisitions", 0, "score", "high"))
    check("GET", "/api/places/1/timeline?like=1", timeline, ("acquisitions", []), base=series_server)
    for url in ("/api/change?after=2020-05-01&any=true", "/api/change?after=2020-09-01&to=a+lake&from=a+field"):
        answer = check("GET", url, "/api/change", ("features", 0, "properties", "change", "big"), base=series_server)
        assert answer["features"], url
    check("GET", "/api/change?after=2020-05-01&to_like=1", "/api/change", ("after", "May"), base=series_server)
    check("GET", "/api/tiles/1/locate?q=a+river", "/api/tiles/{tile_id}/locate", ("properties", "threshold", "x"))
    # A collection's life, beside the fuzzer's (which the test created before it ran).
    check("POST", "/api/collections", "/api/collections", ("missing", -1), 201, json={"name": "answers"})
    labels = "/api/collections/{name}/labels"
    body = {"positive": [4, 5], "negative": [6]}
    check("POST", "/api/collections/answers/labels", labels, ("collection", "labels", 0, "label", "yes"), json=body)
    check("GET", "/api/collections", "/api/collections", ("collections", 0, "positives", "2"))
    check("GET", "/api/collections/answers/labels", labels, ("labels", 0, "tile_id", 0))
    detect = "/api/collections/{name}/detect"
    found = check(
        "GET", "/api/collections/answers/detect?top_k=5", detect, ("features", 0, "properties", "probability", 2)
    )
    assert len(found["features"]) == 5
    found = check("GET", "/api/collections/answers/detect?per_place=true", detect, ("fit", "cross_validation", {}))
    assert found["per_place"] and found["features"][0]["properties"]["acquisitions"] >= 1
    suggest = "/api/collections/{name}/suggest"
    check("GET", "/api/collections/answers/suggest?n=3", suggest, ("features", 0, "properties", "label", "unsure"))
    check("DELETE", "/api/collections/answers", "/api/collections/{name}", ("labels", "3"))
    json_operations = {
        (method.upper(), path)
        for schema in served.values()
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        for status, response in operation["responses"].items()
        if status.startswith("2") and any("json" in media for media in response["content"])
    }
    assert json_operations - checked == set()


def test_every_documented_status_is_reached(token_server, reached):
    """Runs after the tests above (pytest keeps file order): each status that the schema of a server with a
    token documents (all of them: 401 too) was answered to the fuzzer or to a test of this module."""
    if 409 not in reached[("GET", "/api/search")]:
        pytest.skip("needs the tests above in the same session")
    schema = httpx.get(f"{token_server}/api/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    missing = {}
    for path, operations in schema["paths"].items():
        others = [
            statuses for (method, p), statuses in reached.items() if p == path and method.lower() not in operations
        ]
        for method, operation in operations.items():
            documented = {int(status) for status in operation["responses"]}
            answered = set(reached[(method.upper(), path)])
            if documented - answered:
                missing[f"{method.upper()} {path}"] = sorted(documented - answered)
        if path.startswith("/api") and not any(405 in statuses for statuses in others):
            missing[f"other methods {path}"] = [405]
    assert missing == {}


def test_no_image_for_an_error(server):
    """A quicklook's errors are JSON like every other (the route's PNG media type is for its 200 only)."""
    response = httpx.get(f"{server}/api/tiles/999999/quicklook.png")
    assert response.status_code == 404 and response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "no tile with id 999999 in this index"}
    response = httpx.get(f"{server}/api/tiles/abc/quicklook.png")
    assert response.status_code == 404 and "tile_id" in response.json()["error"]


def test_a_router_included_later_keeps_the_contract():
    """How another module's routes get the contract: install() first, then the router included."""
    from typing import Annotated

    from fastapi import APIRouter, FastAPI, Query
    from fastapi.testclient import TestClient

    from msearch.search.server.contract import ApiError, errors, install

    app = FastAPI()
    install(app, token=None)
    router = APIRouter()

    @router.get("/api/places", responses=errors(404))
    def places(name: Annotated[str, Query(max_length=10)], near: Annotated[list[str], Query()] = ()):
        raise ApiError(404, f"no place {name!r} near {list(near)}")

    app.include_router(router)
    client = TestClient(app)
    assert client.get("/api/places?name=a&name=b").json() == {"error": "name may be given once (it was repeated)"}
    assert client.get("/api/places?name=x&near=a&near=b").json() == {"error": "no place 'x' near ['a', 'b']"}
    assert client.get("/api/places?name=" + "x" * 11).status_code == 400
    assert client.delete("/api/places").headers["allow"] == "GET"
    responses = client.get("/openapi.json").json()["paths"]["/api/places"]["get"]["responses"]
    assert sorted(responses) == ["200", "400", "404", "414"]
    assert responses["404"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
