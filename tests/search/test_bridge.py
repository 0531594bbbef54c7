"""Text bridges: the fit, what is stored and refused, the routes a query beyond English takes, and the eval that
decides between them. Tiny models of both families (tests/tiny_models.py), the real numpy text towers."""

import json
import os
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from msearch.cli import app
from msearch.models.prompts import EUROSAT_SAMPLE_QUERIES
from msearch.search.bridge import (
    HELD_OUT_EVERY,
    CorpusText,
    align,
    default_corpus,
    fit_map,
    fit_procrustes,
    fit_ridge,
    translation_pairs,
)
from msearch.search.evaluate import evaluate_routes
from msearch.search.searcher import QueryError, Searcher, reciprocal_rank_fusion
from msearch.store.bridges import bridge_dir, bridges, save_routes

runner = CliRunner()


def _unit(rows):
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_the_fit_recovers_a_known_linear_relation():
    rng = np.random.default_rng(0)
    x = _unit(rng.normal(size=(600, 48)))
    true_map = rng.normal(size=(48, 16))
    y = x @ true_map  # cosine only sees directions; an exact linear relation must be found exactly
    groups = [f"class {i // 10}" for i in range(600)]
    method, matrix, quality = fit_map(x, y, groups)
    assert method == "ridge"  # a general linear map is not a rotation
    assert quality["ridge_cosine"] > 0.999 and quality["procrustes_cosine"] < quality["ridge_cosine"]
    assert quality["held_out_texts"] == 600 // HELD_OUT_EVERY
    assert np.min(np.sum(_unit(x @ matrix) * _unit(y), axis=1)) > 0.999
    # ridge at a tiny lambda solves the least squares problem
    assert np.allclose(fit_ridge(x, x @ true_map, 1e-9), true_map, atol=1e-4)


def test_procrustes_recovers_a_rotation():
    rng = np.random.default_rng(1)
    x = _unit(rng.normal(size=(400, 32)))
    rotation, _ = np.linalg.qr(rng.normal(size=(32, 32)))
    assert np.allclose(fit_procrustes(x, x @ rotation), rotation, atol=1e-6)
    _, _, quality = fit_map(x, x @ rotation, [str(i // 8) for i in range(400)])
    assert quality["procrustes_cosine"] > 0.9999


def test_the_default_corpus_has_thousands_of_texts_and_the_query_set_pairs_translations():
    corpus = default_corpus()
    texts = [c.text for c in corpus]
    assert len(texts) > 3000 and len(set(texts)) == len(texts)
    assert "a satellite image of the coniferous forest." in texts and "a river" in texts
    pairs = translation_pairs()
    assert set(pairs) == {"pt", "es", "fr", "de", "nl", "it", "zh", "ko", "ru"}
    assert ("floresta densa", "dense forest") in pairs["pt"]


@pytest.fixture(scope="module")
def bridged_index(tmp_path_factory, eurosat_index):
    """A copy of the shared EuroSAT index with a bridge rs-m-clip -> tiny-ms-clip fitted on a small corpus."""
    index = tmp_path_factory.mktemp("bridged") / "index"
    shutil.copytree(eurosat_index, index)
    corpus = [CorpusText(c.text, c.group) for c in default_corpus()[::8]]
    fit = align(Searcher(index, query_cache=None), corpus=corpus)
    assert (fit.bridge.from_space, fit.bridge.to_space) == ("rs-m-clip", "tiny-ms-clip")
    return index


def test_align_stores_a_bridge_tied_to_both_encoders(bridged_index):
    (bridge,) = bridges(bridged_index)
    folder = bridge_dir(bridged_index, "rs-m-clip", "tiny-ms-clip")
    described = json.loads((folder / "bridge.json").read_text())
    assert bridge.matrix.shape == (512, 64) and described["dims"] == [512, 64]
    manifests = json.loads((bridged_index / "spaces" / "rs-m-clip" / "manifest.json").read_text())
    assert described["from_identity"] == f"{manifests['card']}@sha256:{manifests['weights_sha256']}"
    assert set(bridge.quality["translations"]) == {"pt", "es", "fr", "de", "nl", "it", "zh", "ko", "ru"}
    assert -1 <= bridge.quality["ridge_cosine"] <= 1 and bridge.method in ("ridge", "procrustes")


def test_bridge_route_is_brute_force_over_the_multispectral_vectors_with_the_mapped_query(bridged_index):
    searcher = Searcher(bridged_index, query_cache=None)
    answer = searcher.query("floresta densa", top_k=7, lang="pt", route="bridge")
    (bridge,) = searcher.bridges()
    source_vector = searcher.text_encoder("rs-m-clip").encode_texts(["floresta densa"])[0]
    query = bridge.matrix.T.astype(np.float64) @ source_vector
    query /= np.linalg.norm(query)
    ids, matrix = searcher.store.all_vectors("tiny-ms-clip")
    expected = [int(ids[i]) for i in np.argsort(-(matrix @ query), kind="stable")[:7]]
    assert [r.tile_id for r in answer.results] == expected
    assert answer.spaces == ["tiny-ms-clip"] and answer.route == "bridge"
    assert [r.score for r in answer.results] == pytest.approx(np.sort(matrix @ query)[::-1][:7], abs=1e-5)


def test_rgb_and_fuse_routes(bridged_index):
    searcher = Searcher(bridged_index, query_cache=None)
    rgb = searcher.query("floresta densa", top_k=30, lang="pt", route="rgb")
    assert rgb.spaces == ["rs-m-clip"] and rgb.route == "rgb"
    fused = searcher.query("floresta densa", top_k=10, lang="pt", route="fuse")
    direct, _, _ = searcher.routed_ranking("floresta densa", "pt", "rgb", 100)
    bridged, _, _ = searcher.routed_ranking("floresta densa", "pt", "bridge", 100)
    expected = reciprocal_rank_fusion([direct, bridged])[:10]
    assert [r.tile_id for r in fused.results] == [t for t, _ in expected]
    assert fused.spaces == ["rs-m-clip", "tiny-ms-clip"]


def test_route_is_refused_for_english_and_with_space(bridged_index):
    searcher = Searcher(bridged_index, query_cache=None)
    with pytest.raises(QueryError, match="leave it out for English"):
        searcher.query("a river", lang="en", route="bridge")
    with pytest.raises(QueryError, match="--route must be one of"):
        searcher.query("floresta", lang="pt", route="teleport")


def test_the_default_route_follows_a_stored_eval(bridged_index, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(bridged_index, index)
    searcher = Searcher(index, query_cache=None)
    assert searcher.default_route("pt")[0] == "rgb"  # nothing measured yet
    (bridge,) = searcher.bridges()
    save_routes(
        index,
        bridge,
        {
            "k": 100,
            "queryset": "q.csv",
            "languages": {
                "pt": {"rgb": 0.2, "bridge": 0.5, "fuse": 0.4, "queries": 20, "chosen": "bridge"},
                "es": {"rgb": 0.6, "bridge": 0.5, "fuse": 0.4, "queries": 20, "chosen": "rgb"},
            },
        },
    )
    route, why = Searcher(index, query_cache=None).default_route("pt")
    assert route == "bridge" and "bridge 0.500" in why and "q.csv" in why
    assert Searcher(index, query_cache=None).query("floresta densa", lang="pt").route == "bridge"
    assert Searcher(index, query_cache=None).query("bosque denso", lang="es").route == "rgb"
    info = runner.invoke(app, ["info", "--index", str(index)])
    assert info.exit_code == 0, info.output
    assert "pt: bridge (mAP@100 on q.csv" in info.output and "es: rgb" in info.output


def test_a_bridge_for_other_weights_is_refused(bridged_index, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(bridged_index, index)
    folder = bridge_dir(index, "rs-m-clip", "tiny-ms-clip")
    described = json.loads((folder / "bridge.json").read_text())
    described["to_identity"] = described["to_identity"][:-8] + "00000000"
    (folder / "bridge.json").write_text(json.dumps(described))
    with pytest.raises(QueryError, match="run `msearch align` again"):
        Searcher(index, query_cache=None).query("floresta densa", lang="pt", route="bridge")
    with pytest.raises(QueryError, match="run `msearch align` again"):
        Searcher(index, query_cache=None).query("floresta densa", lang="pt")  # the default route checks it too
    info = runner.invoke(app, ["info", "--index", str(index)])
    assert "stale" in info.output


def test_eval_routes_compares_every_route_per_language_and_can_store_it(bridged_index, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(bridged_index, index)
    comparison = evaluate_routes(Searcher(index, query_cache=None), EUROSAT_SAMPLE_QUERIES)
    assert set(comparison.languages) == {"en", "pt", "es", "fr", "de", "nl", "it", "zh", "ko", "ru"}
    assert set(comparison.languages["en"]) == {"direct", "queries", "chosen"}
    for lang in ("pt", "ko"):
        entry = comparison.languages[lang]
        assert {"rgb", "bridge", "fuse"} <= set(entry) and entry["queries"] == 20
        assert entry[entry["chosen"]] == max(entry[r] for r in ("rgb", "bridge", "fuse"))
    result = runner.invoke(
        app, ["eval", str(EUROSAT_SAMPLE_QUERIES), "--index", str(index), "--routes", "--save-routes", "--json"]
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["languages"]["pt"]["rgb"] == pytest.approx(comparison.languages["pt"]["rgb"])
    chosen = printed["languages"]["pt"]["chosen"]
    assert Searcher(index, query_cache=None).default_route("pt")[0] == chosen


def test_eval_routes_on_a_query_set_in_english_only_says_so(bridged_index, tmp_path):
    """After `align` too: the set, not the index, lacks what --routes compares."""
    lines = EUROSAT_SAMPLE_QUERIES.read_text(encoding="utf-8").splitlines()
    english = tmp_path / "english.csv"
    english.write_text("\n".join([lines[0], *(line for line in lines[1:] if ",en," in line)]), encoding="utf-8")
    result = runner.invoke(app, ["eval", str(english), "--index", str(bridged_index), "--routes"])
    said = " ".join(result.output.split())  # as one line: the error is wrapped at the terminal's width
    assert result.exit_code == 2
    assert "english.csv has no query beyond English" in said and "msearch align" not in said


def test_align_and_routes_on_the_command_line(eurosat_index, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(eurosat_index, index)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(c.text for c in default_corpus()[::10]), encoding="utf-8")
    result = runner.invoke(app, ["align", "--index", str(index), "--texts", str(texts)])
    assert result.exit_code == 0, result.output
    assert "bridge rs-m-clip -> tiny-ms-clip" in result.output and "orthogonal Procrustes" in result.output
    assert "pt " in result.output  # translation cosines per language
    query = runner.invoke(
        app, ["query", "floresta densa", "--lang", "pt", "--route", "bridge", "--index", str(index), "--json"]
    )
    assert query.exit_code == 0, query.output
    assert json.loads(query.stdout)["route"] == "bridge"
    bad = runner.invoke(app, ["eval", str(EUROSAT_SAMPLE_QUERIES), "--index", str(index), "--save-routes"])
    assert bad.exit_code == 2 and "pass both" in bad.output
    few = tmp_path / "few.txt"
    few.write_text("a river\n", encoding="utf-8")
    refused = runner.invoke(app, ["align", "--index", str(index), "--texts", str(few)])
    assert refused.exit_code == 2 and "too few" in refused.output


def test_a_cold_bridged_query_runs_in_numpy_without_torch(bridged_index):
    from tests.search.test_cold_query import cold_query

    warm = Searcher(bridged_index, query_cache=None).query("floresta densa", top_k=8, lang="pt", route="bridge")
    # The session's cache holds the text towers that indexing exported.
    cold, imported = cold_query(
        bridged_index, "floresta densa", os.environ["MSEARCH_CACHE"], "--lang", "pt", "--route", "bridge"
    )
    assert imported == {"torch": False, "open_clip": False}
    assert [r["tile_id"] for r in cold["results"]] == [r.tile_id for r in warm.results]
    assert cold["route"] == "bridge"
