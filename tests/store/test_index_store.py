"""The store's search index follows the size of the space: kinds at the thresholds, recall measured and kept
in the manifest, additions and deletions without retraining, and the same answers as exact search; each
test on both catalogue backends (SQLite and PostgreSQL, tests/store/conftest.py).

The catalogue is filled with synthetic clustered vectors (tile rows without files), so that thresholds a
few thousand vectors apart put every kind of index within reach in seconds."""

import json

import faiss
import numpy as np
import pytest

from msearch.schema import catalog
from msearch.store import ann
from msearch.store.index_store import IndexStore, ann_info, vector_bytes
from msearch.store.synthetic import ClusteredUnitVectors
from msearch.store.vector_codec import VECTOR_ATOL
from tests.indexer.helpers import assert_view_matches_catalogue, faiss_ids

DIM = 64
SPACE = "synthetic"
THRESHOLDS = {"exact_threshold": 1_000, "compressed_threshold": 4_000}
GENERATOR = ClusteredUnitVectors(DIM, n_clusters=30, seed=3)


def synthetic_tile(i: int) -> dict:
    """The catalogue row of synthetic tile i (id i + 1): a name, no file."""
    return {
        "id": i + 1,
        "root": "/archive",
        "key": f"t{i}.tif",
        "path": f"t{i}.tif",
        "reader": "geotiff",
        "stat_signature": "s",
    }


def fill(store: IndexStore, start: int, stop: int) -> np.ndarray:
    """Tiles start..stop-1 (ids start+1..stop), each with the generator's vector of that row, in one commit."""
    vectors = GENERATOR.rows(start, stop)
    with store.engine.begin() as conn:
        conn.execute(catalog.tiles.insert(), [synthetic_tile(i) for i in range(start, stop)])
        conn.execute(
            catalog.vectors.insert(),
            [
                {"tile_id": i + 1, "space": SPACE, "vector": vector_bytes(vectors[i - start])}
                for i in range(start, stop)
            ],
        )
    return vectors


@pytest.fixture
def store(tmp_path, catalogue):
    store = IndexStore(tmp_path / "index", create=True, catalogue=catalogue)
    store.ensure_space(SPACE, "synthetic-card", "0" * 64, DIM)
    return store


def exact_top(store, queries, k):
    ids, matrix = store.all_vectors(SPACE)
    return ann.exact_search(matrix, ids, queries, k)


@pytest.mark.parametrize("n, kind", [(999, "flat"), (1_000, "ivf-flat"), (3_999, "ivf-flat"), (4_000, "ivf-pq")])
def test_rebuild_chooses_the_kind_at_the_thresholds_and_stores_its_measured_recall(store, n, kind):
    fill(store, 0, n)
    view = store.open_space(SPACE)
    assert view.ann.kind == "flat"  # a new space is searched exactly until it is rebuilt
    info = store.rebuild_ann(view, **THRESHOLDS)
    store.save_space(view)
    assert info.kind == kind and info.trained_on == n
    manifest = json.loads((store.space_dir(SPACE) / "manifest.json").read_text())
    assert manifest["index"] == info.to_dict()
    assert manifest["index"]["exact_threshold"] == 1_000
    reopened = store.open_space(SPACE)
    assert ann_info(reopened.manifest) == info and reopened.ntotal == n
    assert sorted(faiss_ids(reopened).tolist()) == list(range(1, n + 1))
    if kind == "flat":
        assert info.measured_recall_at_100 == 1.0
    else:
        assert info.measured_recall_at_100 >= info.target_recall
        assert info.params["nprobe"] >= 1
        # the stored figure is what a fresh measurement on the reopened index gives for the same queries
        queries = GENERATOR.rows(100_000, 100_050)
        found = store.search(reopened, queries, 100)[1]
        assert ann.recall_at_k(found, exact_top(store, queries, 100)[1]) >= 0.9


def test_additions_to_a_trained_index_are_found_without_retraining(store):
    fill(store, 0, 2_000)
    view = store.open_space(SPACE)
    store.rebuild_ann(view, **THRESHOLDS)
    store.save_space(view)
    trained = ann_info(store.manifest(SPACE))
    added = fill(store, 2_000, 2_300)

    reopened = store.open_space(SPACE)  # catches up on the 300 committed after the save
    assert reopened.ntotal == 2_300 and ann_info(reopened.manifest) == trained
    assert reopened.ann.kind == "ivf-flat" and reopened.ann.trained_on == 2_000
    scores, ids = store.search(reopened, added[:50], 1)
    assert ids[:, 0].tolist() == list(range(2_001, 2_051))  # each added vector is its own nearest neighbour
    # scored with the stored (compact) vectors exactly: a vector's score with its own stored copy
    stored = store.vectors_of(SPACE, ids[:, 0])
    np.testing.assert_allclose(scores[:, 0], (stored * added[:50]).sum(axis=1), atol=1e-5)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=VECTOR_ATOL)
    assert not ann.needs_retrain(reopened.ann, reopened.ntotal)
    assert ann.needs_retrain(reopened.ann, 8_001)  # grown 4x (and past the compressed threshold)


def test_deleted_tiles_leave_a_trained_index_without_retraining(store):
    fill(store, 0, 2_000)
    view = store.open_space(SPACE)
    store.rebuild_ann(view, **THRESHOLDS)
    store.save_space(view)
    gone = list(range(1, 101))

    # A writer holding the view removes the ids and saves at the new generation.
    with store.engine.begin() as conn:
        store.delete_tiles(conn, gone, {SPACE: view})
    store.save_space(view)
    assert view.ntotal == 1_900 and view.ann.kind == "ivf-flat"
    assert_view_matches_catalogue(store.directory, SPACE, store.url)

    # A crash before that save: the older file is refilled from the catalogue, its training kept.
    fill(store, 5_000, 5_010)
    stale = store.open_space(SPACE)
    with store.engine.begin() as conn:
        store.delete_tiles(conn, list(range(5_001, 5_006)))  # no views given: the saved file goes stale
    refilled = store.open_space(SPACE)
    assert refilled.ntotal == 1_905 and refilled.ann == stale.ann
    assert isinstance(refilled.index, faiss.IndexIVFFlat)  # emptied and refilled, not rebuilt as flat
    assert not set(range(5_001, 5_006)) & set(faiss_ids(refilled).tolist())
    assert_view_matches_catalogue(store.directory, SPACE, store.url)


@pytest.mark.parametrize("n", [2_000, 6_000])  # ivf-flat, ivf-pq
def test_filtered_and_unfiltered_search_agree_with_exact_search_at_the_top(store, n):
    fill(store, 0, n)
    view = store.open_space(SPACE)
    store.rebuild_ann(view, **THRESHOLDS)
    queries = GENERATOR.rows(200_000, 200_020)
    want_scores, want_ids = exact_top(store, queries, 10)
    scores, ids = store.search(view, queries, 10)
    assert (ids[:, 0] == want_ids[:, 0]).mean() >= 0.95
    np.testing.assert_allclose(scores[ids == want_ids], want_scores[ids == want_ids], atol=1e-5)  # exact scores
    # a third of the space: scored exactly at n=2000 (below the exact threshold), through the index at 6000
    allowed = np.arange(1, n + 1, 3, dtype=np.int64)
    for _query, row in zip(queries, store.search(view, queries, 10, allowed_ids=allowed)[1]):
        assert set(row.tolist()) <= set(allowed.tolist()) and len(row) == 10


def test_a_space_past_its_exact_threshold_without_its_faiss_file_is_built_as_its_size_calls_for(store, caplog):
    """A FAISS file lost, or a new index directory over a team's catalogue: the view is not every vector in an
    exact index in RAM (20 GB at 10M) but the index rebuild_ann builds, with the space's recorded settings."""
    fill(store, 0, 4_500)
    view = store.open_space(SPACE)
    saved = store.rebuild_ann(view, **THRESHOLDS)
    store.save_space(view)
    queries = GENERATOR.rows(300_000, 300_020)
    want = store.search(view, queries, 10)
    (store.space_dir(SPACE) / store.manifest(SPACE).faiss_file).unlink()

    with caplog.at_level("WARNING", logger="msearch.store.index_store"):
        rebuilt = store.open_space(SPACE)
    assert "no usable FAISS file" in caplog.text and "4500 vectors" in caplog.text
    assert isinstance(rebuilt.index, faiss.IndexIVFPQ) and rebuilt.ann == saved and rebuilt.ntotal == 4_500
    found = store.search(rebuilt, queries, 10)
    np.testing.assert_array_equal(found[1], want[1])
    np.testing.assert_allclose(found[0], want[0], atol=1e-6)

    empty = store.open_space(SPACE, fill=False)  # for a caller that rebuilds anyway: --rebuild-ann
    assert empty.ntotal == 0 and empty.ann.exact_threshold == THRESHOLDS["exact_threshold"]


def test_a_sample_of_the_space_is_seeded_leaves_out_what_is_excluded_and_never_asks_for_more_than_there_is(store):
    fill(store, 0, 40)
    with store.engine.begin() as conn:
        store.delete_tiles(conn, list(range(11, 21)))  # a gap of seqs in the middle: 30 vectors left
    ids, vectors = store.sample_vectors(SPACE, 10, seed=3, exclude=[1, 2, 3])
    assert len(set(ids.tolist())) == 10 and not {1, 2, 3} & set(ids.tolist()) and not set(range(11, 21)) & set(ids)
    np.testing.assert_array_equal(vectors, store.vectors_of(SPACE, ids))
    assert store.sample_vectors(SPACE, 10, seed=3, exclude=[1, 2, 3])[0].tolist() == ids.tolist()
    everything, _ = store.sample_vectors(SPACE, 500, seed=3, exclude=[1, 2, 3])  # more than there is: all 27 left
    assert sorted(everything.tolist()) == [t for t in range(4, 41) if not 11 <= t <= 20]


def test_a_reader_retries_when_a_writer_replaces_the_file_it_was_about_to_read(store, monkeypatch):
    fill(store, 0, 50)
    writer = store.open_space(SPACE)
    store.save_space(writer)
    first = store.manifest(SPACE).faiss_file
    real_read = ann.read_index
    calls = []

    def read_after_a_concurrent_save(path, **kwargs):
        if not calls:  # between the reader's manifest read and its file read, a writer saves and deletes
            fill(store, 50, 60)
            store.catch_up(writer, store.engine.connect())
            store.save_space(writer)
        calls.append(path)
        return real_read(path, **kwargs)

    monkeypatch.setattr(ann, "read_index", read_after_a_concurrent_save)
    view = store.open_space(SPACE)
    assert [p.name for p in calls] == [first, store.manifest(SPACE).faiss_file] and first != calls[1].name
    assert view.ntotal == 60


def test_deleting_more_tiles_than_one_statement_takes_variables(store):
    # SQLite takes at most 250,000 variables per statement, PostgreSQL 65,535 parameters
    n, gone = (300_000, 260_000) if store.engine.dialect.name == "sqlite" else (70_000, 66_000)
    fill(store, 0, n)
    with store.engine.begin() as conn:
        store.delete_tiles(conn, list(range(1, gone + 1)))
    assert store.tile_count() == n - gone
    assert len(store.all_vectors(SPACE)[0]) == n - gone
