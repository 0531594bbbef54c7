"""Rebuilding search indexes (msearch.indexer.rebuild): a run whose space crosses a size threshold trains
the next kind of index, and --prune keeps it."""

from __future__ import annotations

import numpy as np

from msearch.store.index_store import IndexStore, ann_info
from tests.indexer.helpers import (
    MODELS,
    assert_view_matches_catalogue,
    copy_eurosat,
    run,
)


def test_a_run_that_crosses_the_exact_threshold_trains_an_inverted_file_and_prune_keeps_it(
    shared_data, tmp_path, encoders
):
    from msearch.search.searcher import Searcher
    from msearch.store import ann

    src, index = tmp_path / "src", tmp_path / "index"
    copy_eurosat(shared_data, src, classes=("Forest",), per_class=4)
    run(src, index, encoders)
    store = IndexStore(index)
    for space in MODELS:  # this index's threshold: inverted files from 6 vectors on
        view = store.open_space(space)
        store.rebuild_ann(view, exact_threshold=6, compressed_threshold=10_000)
        store.save_space(view)
        assert store.manifest(space).index["kind"] == "flat"

    copy_eurosat(shared_data, src, classes=("Forest", "River", "SeaLake"), per_class=4)
    summary = run(src, index, encoders)
    assert summary.indexed == 8
    for space in MODELS:
        info = ann_info(store.manifest(space))
        assert (info.kind, info.trained_on, info.exact_threshold) == ("ivf-flat", 12, 6)
        assert any(note.startswith(f"{space}: 12 vectors, now searched with ivf-flat") for note in summary.notes)
        assert_view_matches_catalogue(index, space)
    searcher = Searcher(index)
    ids, matrix = store.all_vectors("tiny-ms-clip")
    query = encoders["tiny-ms-clip"].encode_texts(["a river"])[0]
    want = ids[np.argsort(-(matrix @ query), kind="stable")[:5]].tolist()
    assert [t for t, _ in searcher.search_vector("tiny-ms-clip", query, 5, None)] == want

    (src / "River" / sorted(p.name for p in (src / "River").iterdir())[0]).unlink()
    pruned = run(src, index, prune=True)
    assert pruned.removed == 1
    for space in MODELS:
        view = store.open_space(space)
        assert view.ntotal == 11 and view.ann.kind == "ivf-flat" and view.ann.trained_on == 12
        assert store.manifest(space).generation == view.generation  # saved with the removal: no refill
        assert_view_matches_catalogue(index, space)
    assert ann.needs_retrain(view.ann, 49) and not ann.needs_retrain(view.ann, 48)
