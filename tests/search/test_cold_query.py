"""The cold query path: only the text tower is loaded (in numpy once exported, without torch), embeddings are
cached, and a cold `msearch query` answers as a warm searcher holding the whole model does."""

import json
import os
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


def cold_query(index, text, cache_dir, *options):
    """`msearch query --json` in a fresh interpreter; also reports which heavy modules it imported."""
    code = (
        "import sys, json; from msearch.cli import app\n"
        "try:\n    app(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(json.dumps({m: m in sys.modules for m in ('torch', 'open_clip')}), file=sys.stderr)"
    )
    env = dict(subprocess_env(), MSEARCH_CACHE=str(cache_dir))
    done = subprocess.run(
        [sys.executable, "-c", code, "query", text, "--index", str(index), "--json", "-k", "8", *options],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
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

    # the first query exported the text tower: a new text is encoded in numpy, with the same answer
    new_text = text.replace("fields", "farms").replace("campos", "fazendas")
    vector = warm.encoder(space).encode_texts([new_text])[0]
    want = warm.search_vector(space, vector, 8, None)
    new, imported = cold_query(eurosat_index, new_text, tmp_path / "cache")
    assert imported == {"torch": False, "open_clip": False}
    got = [(r["tile_id"], r["score"]) for r in new["results"]]
    assert [t for t, _ in got] == [t for t, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


def test_indexing_exports_each_text_tower_so_a_first_query_loads_no_torch_model(eurosat_index):
    from msearch.models.numpy_text import NumpyTextEncoder

    searcher = Searcher(eurosat_index, query_cache=None)
    assert set(searcher.spaces()) == {"tiny-ms-clip", "rs-m-clip"}
    for space in searcher.spaces():
        assert isinstance(searcher.text_encoder(space), NumpyTextEncoder)
    assert [r.space for r in searcher.query("floresta densa", top_k=3).results] == ["rs-m-clip"] * 3


def test_a_text_tower_numpy_cannot_run_stays_on_torch_and_says_so(shared_data, tmp_path, monkeypatch, caplog):
    """A user card whose text tower pools at the first token (no numpy implementation): indexing notes it,
    and queries load the torch tower, with a warning, and still answer."""
    from msearch.indexer.pipeline import index_archive
    from msearch.indexer.tiles import ReadSettings
    from msearch.models.encoder import TextEncoder
    from msearch.schema.bands import BAND_LAYOUTS
    from tests.conftest import CARD_DIR
    from tests.indexer.helpers import copy_eurosat

    card = json.loads((CARD_DIR / "tiny-ms-clip.json").read_text())
    card["name"] = "tiny-ms-clip-first-token"
    card["architecture"]["text_cfg"]["pool_type"] = "first"  # no parameters: the tiny weights still load
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "tiny-ms-clip-first-token.json").write_text(json.dumps(card))
    monkeypatch.setenv("MSEARCH_CARDS", f"{CARD_DIR}{os.pathsep}{cards}")
    monkeypatch.setenv("MSEARCH_CACHE", str(tmp_path / "cache"))
    copy_eurosat(shared_data, tmp_path / "tiles")
    summary = index_archive(
        [tmp_path / "tiles"],
        index=tmp_path / "index",
        models=["tiny-ms-clip-first-token"],
        settings=ReadSettings(band_order=BAND_LAYOUTS["eurosat"]),
        workers=0,
    )
    assert summary.indexed > 0
    assert any("stays on torch" in note and "pooled by 'first'" in note for note in summary.notes)
    assert not list((tmp_path / "cache").rglob("tower.json"))

    searcher = Searcher(tmp_path / "index", query_cache=None)
    with caplog.at_level("WARNING"):
        answer = searcher.query("a river between fields", top_k=3)
    assert len(answer.results) == 3
    assert isinstance(searcher.text_encoder("tiny-ms-clip-first-token"), TextEncoder)
    assert "queries will keep loading torch" in caplog.text and "pooled by 'first'" in caplog.text
