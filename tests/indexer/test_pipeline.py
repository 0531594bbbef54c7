"""The indexing run on real Sentinel-2 tiles (small copies in tmp_path) with the tiny models of both families:
what is recorded, incremental re-runs, crash safety of the catalogue and its FAISS views, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.warp import transform_bounds, transform_geom
from sqlalchemy import select

import msearch.indexer.pipeline as pipeline
from msearch.indexer.pipeline import index_archive
from msearch.indexer.tiles import ReadSettings
from msearch.models import get_card
from msearch.models.loading import weights_file
from msearch.schema import catalog
from msearch.schema.bands import BAND_LAYOUTS
from msearch.schema.manifest import SpaceManifest
from msearch.schema.pixels import Pixels
from msearch.store.index_store import IndexStore, SpaceMismatchError, ann_info
from msearch.store.vector_codec import VECTOR_ATOL
from tests import tiny_models
from tests.indexer.helpers import (
    EUROSAT,
    MODELS,
    assert_view_matches_catalogue,
    copy_eurosat,
    faiss_ids,
    index_command,
    problems_by_key,
    subprocess_env,
    tiles_by_key,
    vector_seqs,
    vectors_by_key,
)


@pytest.fixture
def encoders(tiny_msclip, tiny_rsmclip):
    """Loaded once per session; a fresh dict per test because index_archive fills in what it loads."""
    return {"tiny-ms-clip": tiny_msclip, "rs-m-clip": tiny_rsmclip}


@pytest.fixture
def load_calls(monkeypatch):
    """Observes pipeline.load_encoder (the real function still runs): the spaces it was asked to load."""
    calls = []
    real = pipeline.load_encoder

    def counting(space, *args, **kwargs):
        calls.append(space)
        return real(space, *args, **kwargs)

    monkeypatch.setattr(pipeline, "load_encoder", counting)
    return calls


@pytest.fixture
def eurosat4(shared_data, tmp_path):
    src = tmp_path / "eurosat"
    copy_eurosat(shared_data, src)
    return src


def run(src, index, encoders=None, **kw):
    kw.setdefault("settings", EUROSAT)
    kw.setdefault("workers", 0)
    kw.setdefault("batch_size", 4)
    if encoders is None:
        kw.setdefault("models", MODELS)
    return index_archive([src], index=index, encoders=dict(encoders) if encoders else None, **kw)


def read_raw(path: Path) -> np.ndarray:
    with rasterio.open(path) as raster:
        return raster.read()


# -- what a run records -----------------------------------------------------------------------------------


def test_eurosat_tiles_vectors_bands_and_geometry(eurosat4, tmp_path, encoders):
    index = tmp_path / "index"
    summary = run(eurosat4, index, encoders)

    assert (summary.discovered, summary.indexed, summary.unchanged) == (4, 4, 0)
    assert not summary.failed and not summary.skipped and summary.ok
    tiles = tiles_by_key(index)
    assert sorted(tiles) == ["Forest/Forest_1.tif", "Forest/Forest_10.tif", "River/River_1.tif", "River/River_10.tif"]
    for space, encoder in encoders.items():
        vectors = vectors_by_key(index, space)
        assert sorted(vectors) == sorted(tiles)
        for key, row in tiles.items():
            path = eurosat4 / key
            raw = read_raw(path)
            # 13 bands, B8A last: the encoder must have received the bands under their true names, offset-free
            # the catalogue lists them in canonical order, and keeps the file's own order for re-reading it
            assert row["bands"] == ",".join(BAND_LAYOUTS["l1c"])
            assert row["file_band_order"] == ",".join(BAND_LAYOUTS["eurosat"])
            assert row["offset"] == 0.0
            expected = encoder.encode_pixels([Pixels(raw, BAND_LAYOUTS["eurosat"])])[0]
            assert vectors[key].shape == (encoder.dim,)
            np.testing.assert_allclose(vectors[key], expected, atol=VECTOR_ATOL)
            # the same tile read in L1C order (B8A after B08) is a different input: the check can fail
            wrong = encoder.encode_pixels([Pixels(raw, BAND_LAYOUTS["l1c"])])[0]
            if space == "tiny-ms-clip":
                assert np.abs(wrong - vectors[key]).max() > 1e-4

    for key, row in tiles.items():
        with rasterio.open(eurosat4 / key) as raster:
            bounds = transform_bounds(raster.crs, "EPSG:4326", *raster.bounds, densify_pts=21)
            corners = [
                (raster.bounds.left, raster.bounds.bottom),
                (raster.bounds.right, raster.bounds.bottom),
                (raster.bounds.right, raster.bounds.top),
                (raster.bounds.left, raster.bounds.top),
                (raster.bounds.left, raster.bounds.bottom),
            ]
            ring = transform_geom(raster.crs, "EPSG:4326", {"type": "Polygon", "coordinates": [corners]})[
                "coordinates"
            ][0]
            assert (row["width"], row["height"], row["crs"]) == (64, 64, raster.crs.to_string())
        assert (row["min_lon"], row["min_lat"], row["max_lon"], row["max_lat"]) == pytest.approx(bounds, abs=1e-9)
        assert (row["centre_lon"], row["centre_lat"]) == pytest.approx(
            ((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)
        )
        footprint = json.loads(row["footprint"])
        assert footprint["type"] == "Polygon"
        np.testing.assert_allclose(np.array(footprint["coordinates"][0]), np.array(ring), atol=1e-9)
        assert row["stat_signature"] and len(row["digest"]) == 64 and row["reader"] == "geotiff"

    store = IndexStore(index)
    assert set(store.manifests()) == set(MODELS)
    for space, encoder in encoders.items():
        manifest = store.manifest(space)
        assert (manifest.card, manifest.dim, manifest.vectors) == (space, encoder.dim, 4)
        assert manifest.weights_sha256 == encoder.identity.weights_sha256
        assert (store.space_dir(space) / manifest.faiss_file).is_file()
        assert_view_matches_catalogue(index, space)


def test_terramesh_l2a_default_band_order(shared_data, tmp_path, encoders):
    src = shared_data / "terramesh-examples" / "S2L2A"
    index = tmp_path / "index"
    summary = run(src, index, encoders, settings=ReadSettings())  # 12 bands: the L2A stack, no order needed

    files = sorted(p.name for p in src.glob("*.tif"))
    assert len(files) == 5
    assert (summary.discovered, summary.indexed, len(summary.failed)) == (5, 5, 0)
    tiles = tiles_by_key(index)
    assert sorted(tiles) == files
    for space, encoder in encoders.items():
        vectors = vectors_by_key(index, space)
        assert len(vectors) == 5
        for key in files:
            assert tiles[key]["bands"] == ",".join(BAND_LAYOUTS["l2a"])
            assert tiles[key]["offset"] == 0.0  # TerraMesh S2L2A is offset-free
            expected = encoder.encode_pixels([Pixels(read_raw(src / key), BAND_LAYOUTS["l2a"])])[0]
            np.testing.assert_allclose(vectors[key], expected, atol=VECTOR_ATOL)
    with rasterio.open(src / files[0]) as raster:
        bounds = transform_bounds(raster.crs, "EPSG:4326", *raster.bounds, densify_pts=21)
    row = tiles[files[0]]
    assert (row["min_lon"], row["min_lat"], row["max_lon"], row["max_lat"]) == pytest.approx(bounds, abs=1e-9)
    assert (row["width"], row["height"]) == (224, 224)
    for space in MODELS:
        assert_view_matches_catalogue(index, space)


# -- incremental runs -------------------------------------------------------------------------------------


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


def catalogued(index: Path) -> list[tuple[int, str, str]]:
    """(id, root, path) of every catalogued tile: the same path may be catalogued under two roots."""
    with IndexStore(index).engine.connect() as conn:
        return sorted(conn.execute(select(catalog.tiles.c.id, catalog.tiles.c.root, catalog.tiles.c.path)).all())


def assert_index_holds(index: Path, tile_ids: list[int]) -> None:
    """The catalogue, each space's vectors and its FAISS view hold exactly these tiles."""
    assert sorted(tile_id for tile_id, _, _ in catalogued(index)) == sorted(tile_ids)
    store = IndexStore(index)
    for space in MODELS:
        assert sorted(store.all_vectors(space)[0].tolist()) == sorted(tile_ids)
        assert sorted(faiss_ids(store.open_space(space)).tolist()) == sorted(tile_ids)
        assert_view_matches_catalogue(index, space)


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


# -- crash safety of the FAISS views ---------------------------------------------------------------------


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


# -- crash safety of a real run: SIGKILL ----------------------------------------------------------------


@pytest.fixture(scope="module")
def archive12(shared_data, tmp_path_factory, tiny_msclip, tiny_rsmclip):
    """12 EuroSAT tiles and an index of them built by one uninterrupted run."""
    base = tmp_path_factory.mktemp("archive12")
    src = base / "src"
    copy_eurosat(shared_data, src, classes=("AnnualCrop", "Forest", "River", "SeaLake"), per_class=3)
    reference = base / "reference"
    summary = run(src, reference, {"tiny-ms-clip": tiny_msclip, "rs-m-clip": tiny_rsmclip})
    assert summary.indexed == 12
    return src, reference


def catalogue_vectors(index: Path) -> int:
    path = index / catalog.CATALOGUE_FILE
    if not path.exists():
        return 0
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM vectors").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def start_index(src: Path, index: Path, log: Path, batch_size: int) -> subprocess.Popen:
    return subprocess.Popen(
        index_command(src, index, batch_size),
        env=subprocess_env(),
        cwd=log.parent,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for_first_commit(proc: subprocess.Popen, index: Path, log: Path, unit: str) -> None:
    """Until the run in `proc` has committed vectors to the catalogue (its first `unit`: batch or shard);
    fails if the run ends first or nothing is committed within 4 minutes."""
    deadline = time.monotonic() + 240
    while catalogue_vectors(index) == 0:
        assert proc.poll() is None, f"the run ended before its first {unit}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {unit} committed within 4 minutes"
        time.sleep(0.02)


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its reader worker, as a crash or OOM kill would
    proc.wait(timeout=30)


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


def store_count(store: IndexStore, space: str) -> int:
    from sqlalchemy import func

    with store.engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(catalog.vectors).where(catalog.vectors.c.space == space)
        ).scalar_one()


# -- bad input -----------------------------------------------------------------------------------------


def write_tif(path: Path, data: np.ndarray, like: Path) -> None:
    with rasterio.open(like) as raster:
        profile = dict(raster.profile)
    profile.update(count=data.shape[0], dtype=str(data.dtype), height=data.shape[1], width=data.shape[2])
    with rasterio.open(path, "w", **profile) as out:
        out.write(data)


def make_bad_archive(shared_data: Path, src: Path) -> dict[str, tuple[str, str]]:
    """Two good EuroSAT tiles beside broken files; returns key -> (problem kind, reason pattern)."""
    good = copy_eurosat(shared_data, src, classes=("Forest",), per_class=2)
    bad = src / "bad"
    bad.mkdir()
    truncated = bad / "truncated.tif"
    content = good[0].read_bytes()
    truncated.write_bytes(content[: len(content) // 3])
    (bad / "text.tif").write_text("this is not a GeoTIFF\n")
    write_tif(bad / "twelve_bands.tif", read_raw(good[0])[:12], like=good[0])
    write_tif(bad / "all_zeros.tif", np.zeros((13, 64, 64), np.uint16), like=good[0])
    floats = read_raw(good[1]).astype(np.float32)
    floats[:, 10:20, 10:20] = np.nan
    write_tif(bad / "nans.tif", floats, like=good[0])
    (bad / "notes.txt").write_text("not a raster\n")
    return {
        "bad/truncated.tif": ("error", r"^not a readable raster \(.*(IReadBlock|TIFFRead)"),
        "bad/text.tif": ("error", r"^not a readable raster \(.*not recognized as being in a supported file format"),
        "bad/twelve_bands.tif": ("error", r"12 bands but --band-order names 13"),
        "bad/all_zeros.tif": ("skipped", r"every pixel is nodata"),
        "bad/nans.tif": ("error", r"NaN"),
    }


def test_bad_files_are_recorded_and_the_good_ones_indexed(shared_data, tmp_path, encoders):
    import re

    src, index = tmp_path / "src", tmp_path / "index"
    expected = make_bad_archive(shared_data, src)
    summary = run(src, index, encoders, batch_size=3)  # good and bad files share batches

    assert summary.discovered == 7
    assert summary.indexed == 2 and summary.ok
    assert summary.ignored == 1  # notes.txt: not a raster, counted as ignored rather than a problem
    # Problems name the file as found: the root joined with the key.
    assert sorted(p for p, _ in summary.failed) == sorted(
        str(src / k) for k, (kind, _) in expected.items() if kind == "error"
    )
    assert [p for p, _ in summary.skipped] == [str(src / "bad/all_zeros.tif")]
    problems = problems_by_key(index)
    assert problems.keys() == expected.keys()
    for key, (kind, pattern) in expected.items():
        assert problems[key][0] == kind, (key, problems[key])
        assert re.search(pattern, problems[key][1]), (key, problems[key])
    assert sorted(tiles_by_key(index)) == ["Forest/Forest_1.tif", "Forest/Forest_10.tif"]
    for space in MODELS:
        assert len(vectors_by_key(index, space)) == 2
        assert_view_matches_catalogue(index, space)

    # Fixing a file clears its problem and indexes it; the rest stay recorded.
    shutil.copy2(src / "Forest" / "Forest_1.tif", src / "bad" / "text.tif")
    again = run(src, index, encoders)
    assert again.indexed == 1 and again.unchanged == 2
    assert "bad/text.tif" not in problems_by_key(index) and len(problems_by_key(index)) == 4


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: chmod 000 does not stop root from reading")
def test_unreadable_file_is_recorded(shared_data, tmp_path, encoders):
    src, index = tmp_path / "src", tmp_path / "index"
    good = copy_eurosat(shared_data, src, classes=("Forest",), per_class=2)
    good[1].chmod(0)
    try:
        summary = run(src, index, encoders)
    finally:
        good[1].chmod(0o644)
    assert summary.indexed == 1 and [p for p, _ in summary.failed] == [str(src / "Forest/Forest_10.tif")]
    kind, reason = problems_by_key(index)["Forest/Forest_10.tif"]
    assert kind == "error" and "ermission denied" in reason


def test_only_bad_files_is_a_failed_run(shared_data, tmp_path, encoders):
    src, index = tmp_path / "src", tmp_path / "index"
    make_bad_archive(shared_data, src)
    for path in (src / "Forest").glob("*.tif"):
        path.unlink()
    summary = run(src, index, encoders)
    assert summary.indexed == 0 and len(summary.failed) == 4 and not summary.ok


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


def test_other_weights_on_an_unchanged_archive_are_refused(eurosat4, tmp_path, encoders, load_calls):
    """Nothing to embed, so no model is loaded: the space's identity is checked against the weights file."""
    index = tmp_path / "index"
    run(eurosat4, index, encoders)
    seqs, tiles = vector_seqs(index), tiles_by_key(index)
    built_with = IndexStore(index).manifest("tiny-ms-clip").weights_sha256
    other = tmp_path / "other-weights.pt"  # same card and architecture, other weights
    torch.save(
        tiny_models.msclip_release_state_dict(tiny_models.build_msclip(tiny_models.TINY_MSCLIP_CFG, seed=1)), other
    )
    other_sha = hashlib.sha256(other.read_bytes()).hexdigest()
    (eurosat4 / "Forest" / "Forest_10.tif").unlink()  # with --prune: something to write, refused all the same

    with pytest.raises(
        SpaceMismatchError,
        match=rf"space 'tiny-ms-clip' of .* was built with "
        rf"tiny-ms-clip@sha256:{built_with[:12]} .*this encoder is tiny-ms-clip@sha256:{other_sha[:12]}",
    ):
        run(eurosat4, index, models=["tiny-ms-clip"], checkpoint=other, prune=True)
    assert load_calls == []
    assert vector_seqs(index) == seqs and tiles_by_key(index) == tiles
    with IndexStore(index).engine.connect() as conn:
        assert [r.status for r in conn.execute(catalog.runs.select().order_by(catalog.runs.c.id))] == [
            "finished",
            "failed",
        ]

    # The very weights the space was built with, as a local file: same sha256, nothing to do.
    same = tmp_path / "same-weights.pt"
    shutil.copyfile(weights_file(get_card("tiny-ms-clip")), same)
    summary = run(eurosat4, index, models=["tiny-ms-clip"], checkpoint=same)
    assert (summary.indexed, summary.unchanged, summary.missing) == (0, 3, 1)
    assert load_calls == []
    assert vector_seqs(index) == seqs


def test_space_of_another_encoder_is_refused(eurosat4, tmp_path, encoders):
    index = tmp_path / "index"
    run(eurosat4, index, encoders)
    store = IndexStore(index)
    manifest = store.manifest("tiny-ms-clip")
    manifest.weights_sha256 = "0" * 64  # as if another checkpoint had filled the space
    manifest.write(store.space_dir("tiny-ms-clip"))
    seqs = vector_seqs(index)
    os.utime(eurosat4 / "Forest" / "Forest_1.tif", (time.time() + 100,) * 2)  # something to do
    with pytest.raises(SpaceMismatchError, match="cannot share an index"):
        run(eurosat4, index, encoders)
    assert vector_seqs(index) == seqs
    with store.engine.connect() as conn:
        assert [r.status for r in conn.execute(catalog.runs.select().order_by(catalog.runs.c.id))] == [
            "finished",
            "failed",
        ]


# -- the search index follows the size of the space -------------------------------------------------------


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
