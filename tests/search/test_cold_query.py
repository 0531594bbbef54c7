"""The cold query path: only the text tower is loaded, embeddings are cached, and a cold `msearch query`
answers exactly as a warm searcher holding the whole model does."""

import json
import subprocess
import sys

import numpy as np
import pytest

from msearch.models import load_encoder, load_text_encoder
from msearch.search.query_cache import QueryCache
from msearch.search.searcher import Searcher
from tests.indexer.helpers import subprocess_env

TEXTS = ["a river between fields", "floresta densa", "被淹没的农田", "dense forest " * 40]


@pytest.mark.parametrize("model", ["tiny-ms-clip", "rs-m-clip"])
def test_the_text_tower_alone_embeds_exactly_as_the_whole_model(model):
    whole, text_only = load_encoder(model), load_text_encoder(model)
    np.testing.assert_array_equal(text_only.encode_texts(TEXTS), whole.encode_texts(TEXTS))
    assert text_only.identity == whole.identity
    assert [text_only.truncates(t) for t in TEXTS] == [whole.truncates(t) for t in TEXTS] == [False, False, False, True]
    names = [name for name, _ in text_only.model.named_parameters()]
    assert not any("visual" in name for name in names)
    assert sum(p.numel() for p in text_only.model.parameters()) < sum(p.numel() for p in whole.model.parameters())


def test_a_cached_query_loads_no_model_and_returns_the_same_answer(eurosat_index, tmp_path):
    cache = QueryCache(tmp_path / "queries.sqlite")
    first = Searcher(eurosat_index, query_cache=cache).query("a river between fields", top_k=5)
    again = Searcher(eurosat_index, query_cache=cache)
    second = again.query("a river between fields", top_k=5)
    assert again._text_encoders == {} and again._encoders == {}  # answered from the cache
    assert [(r.tile_id, r.score) for r in second.results] == [(r.tile_id, r.score) for r in first.results]
    assert again.query("rivers", top_k=5).results and set(again._text_encoders) == {"tiny-ms-clip"}
    long = "dense forest " * 40
    assert Searcher(eurosat_index, query_cache=cache).query(long).truncated
    assert Searcher(eurosat_index, query_cache=cache).query(long).truncated  # the flag is cached too


def cold_query(index, text, cache_dir):
    """`msearch query --json` in a fresh interpreter; also reports which heavy modules it imported."""
    code = ("import sys, json; from msearch.cli import app\n"
            "try:\n    app(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(json.dumps({m: m in sys.modules for m in ('torch', 'open_clip')}), file=sys.stderr)")
    env = dict(subprocess_env(), MSEARCH_CACHE=str(cache_dir))
    done = subprocess.run([sys.executable, "-c", code, "query", text, "--index", str(index), "--json", "-k", "8"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("text", ["a river between fields", "rio entre campos"])
def test_a_cold_cli_query_equals_a_warm_searcher_and_a_repeat_imports_no_torch(eurosat_index, tmp_path, text):
    warm = Searcher(eurosat_index, query_cache=None)
    space = warm.route("en" if text.startswith("a ") else "pt")
    vector = warm.encoder(space).encode_texts([text])[0]  # the whole model, as the naive path loads it
    want = warm.search_vector(space, vector, 8, None)

    cold, imported = cold_query(eurosat_index, text, tmp_path / "cache")
    got = [(r["tile_id"], r["score"]) for r in cold["results"]]
    assert [t for t, _ in got] == [t for t, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-6)
    assert imported == {"torch": True, "open_clip": True}  # a first query must encode

    repeat, imported = cold_query(eurosat_index, text, tmp_path / "cache")
    assert repeat["results"] == cold["results"]
    assert imported == {"torch": False, "open_clip": False}
