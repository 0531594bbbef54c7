"""Writing to the store (msearch.indexer.writing): each batch one transaction, so that a killed run resumes to
the same index, readers see a consistent one meanwhile, and the FAISS views catch up with the catalogue."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from msearch.schema import catalog
from msearch.schema.manifest import SpaceManifest
from msearch.store.index_store import IndexStore, SpaceMismatchError
from msearch.store.vector_codec import VECTOR_ATOL
from tests.indexer.helpers import (
    MODELS,
    assert_view_matches_catalogue,
    catalogue_vectors,
    copy_eurosat,
    faiss_ids,
    kill,
    run,
    start_index,
    store_count,
    tiles_by_key,
    vector_seqs,
    vectors_by_key,
    wait_for_first_commit,
)


def test_manifest_behind_newer_faiss_file_catches_up(shared_data, tmp_path, encoders, monkeypatch):
    """A crash after a FAISS file was written but before the manifest pointed at it."""
    src, index = tmp_path / "src", tmp_path / "index"
    copy_eurosat(shared_data, src, classes=("Forest",), per_class=2)
    run(src, index, encoders)
    store = IndexStore(index)
    saved = tmp_path / "saved-spaces"
    shutil.copytree(index / "spaces", saved)

    copy_eurosat(shared_data, src, classes=("River",), per_class=2)
    assert run(src, index, encoders).indexed == 2
    for space in MODELS:  # put back the old manifest and its file, beside the newer file
        shutil.copy2(saved / space / "manifest.json", store.space_dir(space) / "manifest.json")
        old_file = SpaceManifest.read(saved / space).faiss_file
        shutil.copy2(saved / space / old_file, store.space_dir(space) / old_file)
        assert len(list(store.space_dir(space).glob("index-*.faiss"))) == 2
        view = store.open_space(space)
        assert view.synced_seq == max(s for (_, sp), s in vector_seqs(index).items() if sp == space)
        assert_view_matches_catalogue(index, space)

    # The same crash through the real code path: the manifest write of the final save fails.
    copy_eurosat(shared_data, src, classes=("Pasture",), per_class=1)
    real_write = SpaceManifest.write

    def crash(self, folder):
        if self.faiss_file:
            raise OSError("simulated crash before the manifest was replaced")
        return real_write(self, folder)

    monkeypatch.setattr(SpaceManifest, "write", crash)
    with pytest.raises(OSError, match="simulated crash"):
        run(src, index, encoders)
    monkeypatch.setattr(SpaceManifest, "write", real_write)
    assert len(tiles_by_key(index)) == 5  # the batch was committed before the save failed
    for space in MODELS:
        assert store.manifest(space).vectors == 2  # still the restored manifest
        assert_view_matches_catalogue(index, space)
    again = run(src, index, encoders)
    assert (again.indexed, again.unchanged) == (0, 5)


def test_view_of_an_older_generation_is_rebuilt(eurosat4, tmp_path, encoders):
    """After a deletion (prune) a FAISS file of the previous generation still holds the deleted tile: a
    manifest left pointing at it must not bring the tile back."""
    index = tmp_path / "index"
    run(eurosat4, index, encoders)
    store = IndexStore(index)
    saved = tmp_path / "saved-spaces"
    shutil.copytree(index / "spaces", saved)
    gone_id = tiles_by_key(index)["River/River_10.tif"]["id"]
    (eurosat4 / "River" / "River_10.tif").unlink()
    assert run(eurosat4, index, prune=True).removed == 1

    for space in MODELS:
        shutil.copy2(saved / space / "manifest.json", store.space_dir(space) / "manifest.json")
        old_file = SpaceManifest.read(saved / space).faiss_file
        shutil.copy2(saved / space / old_file, store.space_dir(space) / old_file)
        assert store.manifest(space).generation == 0
        view = store.open_space(space)
        assert view.generation == 1
        assert gone_id not in faiss_ids(view).tolist()
        assert_view_matches_catalogue(index, space)

        # a manifest naming a file that is not there: rebuilt from the catalogue
        manifest = store.manifest(space)
        manifest.faiss_file, manifest.generation = "index-1-999.faiss", 1
        manifest.write(store.space_dir(space))
        assert_view_matches_catalogue(index, space)


@pytest.mark.parametrize("when", ["after 0.5 s", "after the first committed batch"])
def test_sigkill_then_resume_equals_uninterrupted_run(archive12, tmp_path, encoders, when):
    src, reference = archive12
    index, log = tmp_path / "index", tmp_path / "run.log"
    proc = start_index(src, index, log, batch_size=4)
    try:
        if when == "after 0.5 s":
            time.sleep(0.5)
        else:
            wait_for_first_commit(proc, index, log, "batch")
        assert proc.poll() is None, "the run finished before it could be killed: nothing was tested"
    finally:
        kill(proc)
    committed = catalogue_vectors(index)
    if when != "after 0.5 s":
        assert 0 < committed < 24 and committed % 2 == 0  # whole batches: both spaces of each tile
        with IndexStore(index).engine.connect() as conn:
            statuses = [r.status for r in conn.execute(catalog.runs.select())]
        assert statuses == ["running"]  # a killed run leaves its mark

    summary = run(src, index, encoders)
    assert summary.indexed == 12 - committed // 2
    assert summary.indexed + summary.unchanged == 12

    assert tiles_by_key(index).keys() == tiles_by_key(reference).keys()
    store = IndexStore(index)
    for space in MODELS:
        got, want = vectors_by_key(index, space), vectors_by_key(reference, space)
        assert got.keys() == want.keys() and len(got) == 12
        for key in want:
            np.testing.assert_allclose(got[key], want[key], atol=VECTOR_ATOL)
        view = store.open_space(space)
        assert view.ntotal == 12
        assert sorted(faiss_ids(view).tolist()) == sorted(r["id"] for r in tiles_by_key(index).values())
        assert_view_matches_catalogue(index, space)
        assert store.manifest(space).vectors == 12


def test_readers_see_a_consistent_index_during_a_run(archive12, tmp_path):
    """Best effort: open the space again and again while another process indexes; every view holds each
    tile at most once, only catalogued tiles, and as many vectors as were committed at some moment."""
    src, _ = archive12
    index, log = tmp_path / "index", tmp_path / "run.log"
    proc = start_index(src, index, log, batch_size=2)
    seen, deadline = [], time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if not (index / "spaces" / "tiny-ms-clip" / "manifest.json").exists():
                time.sleep(0.05)
                continue
            store = IndexStore(index)
            low = store_count(store, "tiny-ms-clip")
            try:
                view = store.open_space("tiny-ms-clip")
            except SpaceMismatchError:
                continue
            high = store_count(store, "tiny-ms-clip")
            ids = faiss_ids(view).tolist()
            catalogued = {row["id"] for row in tiles_by_key(index).values()}
            assert len(set(ids)) == len(ids) == view.ntotal
            assert set(ids) <= catalogued
            assert low <= view.ntotal <= high
            seen.append(view.ntotal)
            store.engine.dispose()
    finally:
        if proc.poll() is None:
            kill(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert seen, "the space never appeared during the run"
    assert seen == sorted(seen)  # an appending run: views only grow
    assert_view_matches_catalogue(index, "tiny-ms-clip")
    assert IndexStore(index).open_space("tiny-ms-clip").ntotal == 12
