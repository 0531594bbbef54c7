"""The route a text beyond English takes in a change query and a timeline (Searcher.text_vector): rgb or bridge,
the stored route comparison's choice by default, fuse refused; in the library, the CLI and the API. On the Major
TOM series (tests/places_series.py) indexed into both tiny spaces, with a bridge fitted between them."""

import json
import shutil
from datetime import date

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from msearch.cli import app
from msearch.search.bridge import CorpusText, align, default_corpus
from msearch.search.change import CLEAR_CLOUD, CLEAR_NODATA, ChangeFinder
from msearch.search.searcher import QueryError, Searcher
from msearch.search.server import create_app
from msearch.search.timeline import place_timeline
from msearch.store.bridges import save_routes
from tests.places_series import SERIES_SETTINGS, build_majortom_series

SPLIT = date(2020, 5, 1)  # before: 2 dates; after: 4, the planted change's
TEXT, FROM_TEXT = "uma represa", "terra agrícola"
MULTILINGUAL, MULTISPECTRAL = "rs-m-clip", "tiny-ms-clip"
runner = CliRunner()


@pytest.fixture(scope="module")
def bridged_series(tmp_path_factory, shared_data, tiny_msclip, tiny_rsmclip):
    """The series with its planted change, indexed into both spaces, and a bridge rs-m-clip -> tiny-ms-clip."""
    from msearch.indexer.pipeline import index_archive

    base = tmp_path_factory.mktemp("bridged-series")
    series = build_majortom_series(shared_data, base / "series", changed_from=2)
    index = base / "index"
    summary = index_archive(
        [series.folder],
        index=index,
        encoders={MULTISPECTRAL: tiny_msclip, MULTILINGUAL: tiny_rsmclip},
        settings=SERIES_SETTINGS,
        workers=0,
    )
    assert summary.indexed == 9 * 6
    align(Searcher(index, query_cache=None), corpus=[CorpusText(c.text, c.group) for c in default_corpus()[::8]])
    return index


@pytest.fixture
def index(bridged_series, tmp_path):
    """A copy each test may store a route comparison in."""
    copy = tmp_path / "index"
    shutil.copytree(bridged_series, copy)
    return copy


def bridged_by_hand(searcher: Searcher, text: str) -> np.ndarray:
    """The text's multilingual vector mapped by the stored bridge matrix and normalised, in float64."""
    (bridge,) = searcher.bridges()
    source = searcher.text_encoder(MULTILINGUAL).encode_texts([text])[0].astype(np.float64)
    mapped = bridge.matrix.T.astype(np.float64) @ source
    return mapped / np.linalg.norm(mapped)


def scores_by_hand(searcher: Searcher, space: str, vector: np.ndarray) -> dict[int, float]:
    ids, matrix = searcher.store.all_vectors(space)
    return dict(zip((int(t) for t in ids), matrix.astype(np.float64) @ vector))


def period_medians(searcher: Searcher, place_id: int, scores: dict[int, float]) -> tuple[float, float]:
    """(before, after) medians of a place's scores over each period's used acquisitions (change.py's rule:
    the clear ones, unknown counting as clear, or all of a period that has none)."""
    medians = []
    for in_period in (lambda day: day < SPLIT.isoformat(), lambda day: day >= SPLIT.isoformat()):
        rows = [r for r in searcher.store.place_acquisitions(place_id) if in_period(r["acquired"][:10])]
        clear = [
            r
            for r in rows
            if not (r["cloud_cover"] is not None and r["cloud_cover"] > CLEAR_CLOUD)
            and not (r["nodata_fraction"] is not None and r["nodata_fraction"] > CLEAR_NODATA)
        ]
        medians.append(float(np.median([scores[r["id"]] for r in (clear or rows)])))
    return medians[0], medians[1]


def store_comparison(index, searcher: Searcher, **pt) -> None:
    (bridge,) = searcher.bridges()
    save_routes(index, bridge, {"k": 100, "queryset": "q.csv", "languages": {"pt": dict(pt, queries=20)}})


def test_a_bridged_change_is_scored_with_the_bridged_vector_in_the_multispectral_space(index):
    searcher = Searcher(index, query_cache=None)
    answer = ChangeFinder(searcher).find(SPLIT, to=TEXT, from_text=FROM_TEXT, lang="pt", route="bridge", top_k=9)
    assert (answer.space, answer.route, answer.lang) == (MULTISPECTRAL, "bridge", "pt")
    assert answer.info()["route"] == "bridge" and len(answer.results) == 9
    to_scores = scores_by_hand(searcher, MULTISPECTRAL, bridged_by_hand(searcher, TEXT))
    from_scores = scores_by_hand(searcher, MULTISPECTRAL, bridged_by_hand(searcher, FROM_TEXT))
    for result in answer.results:
        assert (result.before_score, result.after_score) == pytest.approx(
            period_medians(searcher, result.place_id, to_scores), abs=1e-6
        )
        assert (result.from_before_score, result.from_after_score) == pytest.approx(
            period_medians(searcher, result.place_id, from_scores), abs=1e-6
        )
    # The rgb route scores the same text in the multilingual space: other scores.
    rgb = ChangeFinder(searcher).find(SPLIT, to=TEXT, lang="pt", route="rgb", top_k=9)
    assert (rgb.space, rgb.route) == (MULTILINGUAL, "rgb")
    rgb_scores = scores_by_hand(searcher, MULTILINGUAL, searcher.embed_text(MULTILINGUAL, TEXT)[0])
    first = rgb.results[0]
    assert (first.before_score, first.after_score) == pytest.approx(
        period_medians(searcher, first.place_id, rgb_scores), abs=1e-6
    )


def test_a_bridged_timeline_scores_are_the_bridged_vector_against_the_stored_vectors(index):
    searcher = Searcher(index, query_cache=None)
    place = searcher.store.place_of_tile(searcher.store.all_vectors(MULTISPECTRAL)[0][0])
    timeline = place_timeline(searcher, place, TEXT, lang="pt", route="bridge")
    assert (timeline.space, timeline.route, timeline.lang) == (MULTISPECTRAL, "bridge", "pt")
    assert timeline.to_dict()["route"] == "bridge" and len(timeline.acquisitions) == 6
    expected = scores_by_hand(searcher, MULTISPECTRAL, bridged_by_hand(searcher, TEXT))
    assert [p.score for p in timeline.acquisitions] == pytest.approx(
        [expected[p.tile_id] for p in timeline.acquisitions], abs=1e-6
    )
    rgb = place_timeline(searcher, place, TEXT, lang="pt", route="rgb")
    assert (rgb.space, rgb.route) == (MULTILINGUAL, "rgb")
    # English takes no route, as a query in English takes none.
    english = place_timeline(searcher, place, "a reservoir", lang="en")
    assert (english.space, english.route) == (MULTISPECTRAL, None)


def test_the_default_route_is_the_stored_one_and_the_better_single_space_one_when_fuse_was_chosen(index):
    def read(**kind):
        found = place_timeline(Searcher(index, query_cache=None), 1, TEXT, lang="pt")
        changed = ChangeFinder(Searcher(index, query_cache=None)).find(SPLIT, to=TEXT, lang="pt", **kind)
        assert (changed.route, changed.space) == (found.route, found.space)
        return found.route, found.space

    searcher = Searcher(index, query_cache=None)
    assert read() == ("rgb", MULTILINGUAL)  # nothing measured yet
    store_comparison(index, searcher, rgb=0.2, bridge=0.5, fuse=0.4, chosen="bridge")
    assert read() == ("bridge", MULTISPECTRAL)
    store_comparison(index, searcher, rgb=0.3, bridge=0.2, fuse=0.4, chosen="rgb")
    assert read() == ("rgb", MULTILINGUAL)
    # fuse was best: the better of the two that score in one space, ties going to rgb.
    store_comparison(index, searcher, rgb=0.2, bridge=0.5, fuse=0.6, chosen="fuse")
    assert read() == ("bridge", MULTISPECTRAL)
    assert Searcher(index, query_cache=None).query(TEXT, lang="pt").route == "fuse"  # a query takes fuse itself
    store_comparison(index, searcher, rgb=0.4, bridge=0.3, fuse=0.6, chosen="fuse")
    assert read() == ("rgb", MULTILINGUAL)
    store_comparison(index, searcher, rgb=0.4, bridge=0.4, fuse=0.6, chosen="fuse")
    assert read() == ("rgb", MULTILINGUAL)
    route, why = searcher.default_route("pt", among=("rgb", "bridge"))
    assert route == "rgb" and "fuse was chosen" in why


@pytest.mark.parametrize(
    "kind, message",
    [
        (dict(route="fuse", lang="pt"), "no scores to compare"),
        (dict(route="bridge", lang="en"), "leave it out for English"),
        (dict(route="rgb", lang="pt", space=MULTILINGUAL), "do not combine it with --space"),
        (dict(route="teleport", lang="pt"), "--route must be one of rgb, bridge"),
    ],
)
def test_routes_a_change_or_a_timeline_cannot_take_are_refused(bridged_series, kind, message):
    searcher = Searcher(bridged_series, query_cache=None)
    text = "a reservoir" if kind["lang"] == "en" else TEXT
    with pytest.raises(QueryError, match=message):
        ChangeFinder(searcher).find(SPLIT, to=text, **kind)
    with pytest.raises(QueryError, match=message):
        place_timeline(searcher, 1, text, **kind)
    with pytest.raises(QueryError, match="--route is how a --to TEXT"):
        ChangeFinder(searcher).find(SPLIT, any_change=True, route="bridge")
    with pytest.raises(QueryError, match="--like scores by an example"):
        place_timeline(searcher, 1, like="1", route="bridge")


def test_cli_change_and_timeline_take_a_route_and_say_which(bridged_series):
    base = ["--index", str(bridged_series), "--lang", "pt"]
    change = ["change", "--after", SPLIT.isoformat(), "--to", TEXT, *base]
    data = json.loads(_cli(change + ["--route", "bridge", "--json"]).stdout)
    assert (data["route"], data["space"], data["lang"]) == ("bridge", MULTISPECTRAL, "pt")
    expected = ChangeFinder(Searcher(bridged_series, query_cache=None)).find(SPLIT, to=TEXT, lang="pt", route="bridge")
    assert [r["change"] for r in data["results"]] == pytest.approx([r.change for r in expected.results])
    geo = json.loads(_cli(change + ["--route", "bridge", "--geojson"]).stdout)
    assert geo["route"] == "bridge"
    assert "pt → tiny-ms-clip, route bridge" in " ".join(_cli(change + ["--route", "bridge"]).stdout.split())
    assert "pt → rs-m-clip, route rgb" in " ".join(_cli(change).stdout.split())  # no stored comparison: rgb

    timeline = ["timeline", "1", TEXT, *base]
    found = json.loads(_cli(timeline + ["--route", "bridge", "--json"]).stdout)
    assert (found["route"], found["space"]) == ("bridge", MULTISPECTRAL)
    assert "pt → tiny-ms-clip, route bridge" in " ".join(_cli(timeline + ["--route", "bridge"]).stdout.split())

    for args, message in (
        (change + ["--route", "fuse"], "no scores to compare"),
        (timeline + ["--route", "fuse"], "no scores to compare"),
        (
            [
                "change",
                "--after",
                SPLIT.isoformat(),
                "--to",
                "a reservoir",
                "--index",
                str(bridged_series),
                "--lang",
                "en",
                "--route",
                "rgb",
            ],
            "leave it out for English",
        ),
        (
            ["timeline", "1", "a reservoir", "--index", str(bridged_series), "--lang", "en", "--route", "bridge"],
            "leave it out for English",
        ),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())


def test_api_change_and_timeline_take_a_route(bridged_series):
    searcher = Searcher(bridged_series, query_cache=None)
    client = TestClient(create_app(searcher, allowed_hosts=["127.0.0.1"]), base_url="http://127.0.0.1")
    changed = client.get(
        "/api/change", params={"after": SPLIT.isoformat(), "to": TEXT, "lang": "pt", "route": "bridge"}
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["route"], body["space"]) == ("bridge", MULTISPECTRAL)
    expected = ChangeFinder(searcher).find(SPLIT, to=TEXT, lang="pt", route="bridge")
    assert [f["properties"]["change"] for f in body["features"]] == pytest.approx([r.change for r in expected.results])
    timeline = client.get("/api/places/1/timeline", params={"q": TEXT, "lang": "pt", "route": "bridge"})
    assert timeline.status_code == 200, timeline.text
    assert (timeline.json()["route"], timeline.json()["space"]) == ("bridge", MULTISPECTRAL)
    assert client.get("/api/places/1/timeline", params={"q": TEXT, "lang": "pt"}).json()["route"] == "rgb"

    for path, params, message in (
        ("/api/change", {"after": SPLIT.isoformat(), "to": TEXT, "lang": "pt", "route": "fuse"}, "no scores"),
        ("/api/places/1/timeline", {"q": TEXT, "lang": "pt", "route": "fuse"}, "no scores to compare"),
        ("/api/places/1/timeline", {"q": "a river", "lang": "en", "route": "rgb"}, "leave it out for English"),
        ("/api/change", {"after": SPLIT.isoformat(), "any": "true", "route": "rgb"}, "route is how a to TEXT"),
    ):
        response = client.get(path, params=params)
        assert response.status_code == 422, response.text
        assert message in response.json()["error"]
    assert client.get("/api/places/1/timeline", params={"q": TEXT, "route": "teleport"}).status_code == 400

    schema = client.get("/api/openapi.json").json()
    for path in ("/api/change", "/api/places/{place_id}/timeline"):
        (route,) = [p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == "route"]
        assert "rgb" in json.dumps(route["schema"]) and "no scores to compare" in route["description"]
        assert "route=fuse" in schema["paths"][path]["get"]["responses"]["422"]["description"]


def _cli(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result
