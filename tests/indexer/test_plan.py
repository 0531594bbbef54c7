"""Planning a run (msearch.indexer.plan) on real tiles: what is unchanged reads nothing and loads no model,
what changed is re-embedded, what is gone is missing and pruned with --prune, within the paths given."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest
import rasterio

from msearch.indexer.tiles import ReadSettings
from msearch.schema.bands import BAND_LAYOUTS
from msearch.schema.pixels import Pixels
from msearch.store.index_store import IndexStore
from msearch.store.vector_codec import VECTOR_ATOL
from tests.indexer.helpers import (
    MODELS,
    assert_index_holds,
    assert_view_matches_catalogue,
    catalogued,
    copy_eurosat,
    faiss_ids,
    problems_by_key,
    run,
    tiles_by_key,
    vector_seqs,
    vectors_by_key,
)


def test_rerun_unchanged_reads_nothing_and_loads_no_model(eurosat4, tmp_path, encoders, load_calls):
    index = tmp_path / "index"
    run(eurosat4, index, encoders)
    before = vector_seqs(index)
    files_before = sorted(p.name for p in (index / "spaces").rglob("*.faiss"))

    started = time.perf_counter()
    summary = run(eurosat4, index)  # by model name: a model load would show in load_calls
    elapsed = time.perf_counter() - started

    assert load_calls == []
    assert (summary.discovered, summary.indexed, summary.unchanged, summary.missing) == (4, 0, 4, 0)
    assert elapsed < 5.0  # no model, no pixels: milliseconds even on a busy machine
    assert vector_seqs(index) == before
    assert sorted(p.name for p in (index / "spaces").rglob("*.faiss")) == files_before


def test_rerun_unchanged_needs_no_weights_on_this_machine(eurosat4, tmp_path, encoders, load_calls, monkeypatch):
    """Hub weights that are not cached cannot be compared with the spaces without a download: with nothing to
    embed, the run neither downloads them nor fails (offline here)."""
    from huggingface_hub import constants

    index = tmp_path / "index"
    run(eurosat4, index, encoders)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # as if the cache were cleared

    summary = run(eurosat4, index)
    assert (summary.indexed, summary.unchanged) == (0, 4)
    assert load_calls == []


def test_changed_pixels_reembed_exactly_that_tile(eurosat4, tmp_path, encoders):
    index = tmp_path / "index"
    run(eurosat4, index, encoders)
    old = {space: vectors_by_key(index, space) for space in MODELS}
    old_digest = tiles_by_key(index)["River/River_1.tif"]["digest"]

    path = eurosat4 / "River" / "River_1.tif"
    with rasterio.open(path, "r+") as raster:
        data = raster.read()
        data[[1, 2, 3]] = data[[3, 1, 2]]  # permute the visible bands: both encoders see it
        raster.write(data)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # coarse-mtime file systems too

    summary = run(eurosat4, index, encoders)
    assert (summary.indexed, summary.unchanged) == (1, 3)
    assert tiles_by_key(index)["River/River_1.tif"]["digest"] != old_digest
    for space, encoder in encoders.items():
        new = vectors_by_key(index, space)
        assert sorted(new) == sorted(old[space])
        for key in new:
            if key == "River/River_1.tif":
                assert np.abs(new[key] - old[space][key]).max() > 1e-4
                expected = encoder.encode_pixels([Pixels(data, BAND_LAYOUTS["eurosat"])])[0]
                np.testing.assert_allclose(new[key], expected, atol=VECTOR_ATOL)
            else:
                np.testing.assert_array_equal(new[key], old[space][key])
        assert_view_matches_catalogue(index, space)  # the replaced vector, not the old one, in the view


def test_touch_without_content_change_keeps_vectors(eurosat4, tmp_path, encoders, load_calls):
    """Design choice: a file whose mtime changed but whose content digest did not is not re-embedded; its
    row takes the new size/mtime signature so that the next run does not read it again."""
    index = tmp_path / "index"
    run(eurosat4, index, encoders)
    old = {space: vectors_by_key(index, space) for space in MODELS}
    seqs = vector_seqs(index)
    path = eurosat4 / "Forest" / "Forest_1.tif"
    old_signature = tiles_by_key(index)["Forest/Forest_1.tif"]["stat_signature"]
    os.utime(path, (time.time() + 100, time.time() + 100))

    summary = run(eurosat4, index, encoders)
    assert (summary.indexed, summary.unchanged, len(summary.failed)) == (0, 4, 0)
    assert vector_seqs(index) == seqs  # no vector row rewritten
    for space in MODELS:
        new = vectors_by_key(index, space)
        assert new.keys() == old[space].keys()
        for key in new:
            np.testing.assert_array_equal(new[key], old[space][key])
    assert tiles_by_key(index)["Forest/Forest_1.tif"]["stat_signature"] != old_signature

    again = run(eurosat4, index)
    assert (again.indexed, again.unchanged) == (0, 4)
    assert load_calls == []  # the new signature was recorded: nothing to read, no model to load


def test_deleted_file_missing_then_pruned(eurosat4, tmp_path, encoders):
    index = tmp_path / "index"
    run(eurosat4, index, encoders)
    gone_id = tiles_by_key(index)["Forest/Forest_10.tif"]["id"]
    (eurosat4 / "Forest" / "Forest_10.tif").unlink()

    kept = run(eurosat4, index, encoders)
    assert (kept.discovered, kept.indexed, kept.unchanged, kept.missing, kept.removed) == (3, 0, 3, 1, 0)
    assert "Forest/Forest_10.tif" in tiles_by_key(index)
    assert gone_id in faiss_ids(IndexStore(index).open_space("tiny-ms-clip")).tolist()

    pruned = run(eurosat4, index, prune=True)  # nothing to embed: no encoders needed
    assert (pruned.indexed, pruned.unchanged, pruned.missing, pruned.removed) == (0, 3, 0, 1)
    tiles = tiles_by_key(index)
    assert sorted(tiles) == ["Forest/Forest_1.tif", "River/River_1.tif", "River/River_10.tif"]
    store = IndexStore(index)
    for space in MODELS:
        assert len(vectors_by_key(index, space)) == 3
        view = store.open_space(space)
        assert view.ntotal == 3
        assert sorted(faiss_ids(view).tolist()) == sorted(row["id"] for row in tiles.values())
        # the saved file itself was rewritten without the tile (not only the view opened now)
        import faiss

        manifest = store.manifest(space)
        saved = faiss.read_index(str(store.space_dir(space) / manifest.faiss_file))
        assert saved.ntotal == 3 and gone_id not in faiss.vector_to_array(saved.id_map).tolist()
        assert manifest.vectors == 3


def test_one_file_given_prunes_nothing_else_of_its_folder(shared_data, tmp_path, encoders):
    """A file given as PATH has its folder as root: the other tiles catalogued under that folder were not
    looked for, so they are neither missing nor pruned."""
    src, index = tmp_path / "src", tmp_path / "index"
    copy_eurosat(shared_data, src, classes=("Forest",), per_class=4)
    folder = src / "Forest"
    run(folder, index, encoders)
    ids = [row["id"] for row in tiles_by_key(index).values()]
    assert len(ids) == 4

    kept = run(folder / "Forest_1.tif", index)
    assert (kept.discovered, kept.unchanged, kept.indexed, kept.missing, kept.removed) == (1, 1, 0, 0, 0)
    pruned = run(folder / "Forest_1.tif", index, prune=True)
    assert (pruned.discovered, pruned.unchanged, pruned.indexed, pruned.missing, pruned.removed) == (1, 1, 0, 0, 0)
    assert_index_holds(index, ids)


@pytest.mark.parametrize("indexed_as", ["its own PATH", "part of its parent"])
def test_an_emptied_folder_given_as_path_is_pruned(eurosat4, tmp_path, encoders, indexed_as):
    """A folder given as PATH whose files were all deleted: its tiles are missing, and pruned with --prune;
    the tiles beside it stay."""
    index, forest = tmp_path / "index", eurosat4 / "Forest"
    if indexed_as == "its own PATH":
        run(forest, index, encoders)
        run(eurosat4 / "River", index, encoders)
    else:
        run(eurosat4, index, encoders)
        ids = [row["id"] for row in tiles_by_key(index).values()]
        # Its tiles are catalogued under the parent, and found again under the folder: none is gone.
        again = run(forest, index, encoders, prune=True)
        assert (again.discovered, again.missing, again.removed) == (2, 0, 0)
        assert set(ids) <= {row["id"] for row in tiles_by_key(index).values()}
    forest_rows = [row["id"] for row in tiles_by_key(index).values() if row["path"].startswith("Forest")]
    river_rows = [row["id"] for row in tiles_by_key(index).values() if row["path"].startswith("River")]
    assert len(river_rows) == 2 and len(forest_rows) >= 2
    for path in forest.iterdir():
        path.unlink()

    kept = run(forest, index)
    assert (kept.discovered, kept.missing, kept.removed) == (0, len(forest_rows), 0)
    assert_index_holds(index, forest_rows + river_rows)
    pruned = run(forest, index, prune=True)
    assert (pruned.discovered, pruned.missing, pruned.removed) == (0, 0, len(forest_rows))
    assert_index_holds(index, river_rows)


def test_a_folder_that_is_one_tile_given_itself_is_found_again_from_its_parent(shared_data, tmp_path, encoders):
    """A per-band folder given as PATH is its own root and is keyed by its own name: seen from its parent it
    is the same folder, not a tile that is gone; once the folder is deleted it is."""
    patches, index = tmp_path / "patches", tmp_path / "index"
    first, second = "S2B_MSIL2A_20180204T94161_57_38", "S2A_MSIL2A_20170617T113321_4_55"
    for name in (first, second):
        shutil.copytree(shared_data / "bigearthnet-s2" / name, patches / name)
    run(patches / first, index, encoders, settings=ReadSettings())
    [(first_id, root, path)] = catalogued(index)
    assert (root, path) == (str(patches / first), first)

    again = run(patches, index, encoders, settings=ReadSettings(), prune=True)
    assert (again.discovered, again.missing, again.removed) == (2, 0, 0)
    assert first_id in {tile_id for tile_id, _, _ in catalogued(index)}

    first_rows = [tile_id for tile_id, _, path in catalogued(index) if path == first]
    shutil.rmtree(patches / first)
    kept = run(patches, index, settings=ReadSettings())
    assert (kept.discovered, kept.unchanged, kept.missing, kept.removed) == (1, 1, len(first_rows), 0)
    pruned = run(patches, index, settings=ReadSettings(), prune=True)
    assert (pruned.discovered, pruned.unchanged, pruned.missing, pruned.removed) == (1, 1, 0, len(first_rows))
    [(second_id, root, path)] = catalogued(index)
    assert (root, path) == (str(patches), second)
    assert_index_holds(index, [second_id])


def test_prune_drops_problems_of_files_that_are_gone(shared_data, tmp_path, encoders):
    """Problems are pruned like tiles: only those of files not found under the paths given to this run."""
    pruned_root, other_root, index = tmp_path / "pruned", tmp_path / "other", tmp_path / "index"
    for root in (pruned_root, other_root):
        copy_eurosat(shared_data, root, classes=("Forest",), per_class=1)
        (root / "bad").mkdir()
        (root / "bad" / f"{root.name}.tif").write_text("this is not a GeoTIFF\n")
    run(pruned_root, index, encoders)
    run(other_root, index, encoders)
    assert sorted(problems_by_key(index)) == ["bad/other.tif", "bad/pruned.tif"]
    (pruned_root / "bad" / "pruned.tif").unlink()

    kept = run(pruned_root, index, encoders)
    assert (kept.discovered, kept.unchanged, kept.missing, kept.removed) == (1, 1, 0, 0)
    assert sorted(problems_by_key(index)) == ["bad/other.tif", "bad/pruned.tif"]

    pruned = run(pruned_root, index, encoders, prune=True)
    assert (pruned.discovered, pruned.unchanged, pruned.missing, pruned.removed) == (1, 1, 0, 0)  # removed: tiles
    assert sorted(problems_by_key(index)) == ["bad/other.tif"]  # another root's problem is not this run's
    assert IndexStore(index).tile_count() == 2  # one tile under each root


def test_prune_scopes_problems_by_the_paths_given(shared_data, tmp_path, encoders):
    """A file given as PATH prunes no other problem of its folder; an emptied folder given as PATH loses
    the problems of its files."""
    src, index = tmp_path / "src", tmp_path / "index"
    copy_eurosat(shared_data, src, classes=("Forest",), per_class=1)
    bad = src / "bad"
    bad.mkdir()
    for name in ("one.tif", "two.tif"):
        (bad / name).write_text("this is not a GeoTIFF\n")
    run(src / "Forest", index, encoders)
    run(bad, index, encoders)
    assert sorted(problems_by_key(index)) == ["one.tif", "two.tif"]

    one_file = run(bad / "one.tif", index, encoders, prune=True)
    assert (one_file.discovered, len(one_file.failed), one_file.missing, one_file.removed) == (1, 1, 0, 0)
    assert sorted(problems_by_key(index)) == ["one.tif", "two.tif"]

    for path in bad.iterdir():
        path.unlink()
    run(bad, index, encoders)
    assert sorted(problems_by_key(index)) == ["one.tif", "two.tif"]  # kept without --prune
    emptied = run(bad, index, encoders, prune=True)
    assert (emptied.discovered, emptied.removed) == (0, 0)  # removed counts tiles
    assert problems_by_key(index) == {}
    assert list(tiles_by_key(index)) == ["Forest_1.tif"]
