"""Shared helpers of the indexer tests: small copies of the sample tiles (good and broken ones), a run of the
indexer, runs in another process to kill, and views of an index directory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from sqlalchemy import select

from msearch.indexer.pipeline import index_archive
from msearch.indexer.tiles import ReadSettings
from msearch.schema import catalog
from msearch.schema.bands import BAND_LAYOUTS
from msearch.store import vector_codec
from msearch.store.index_store import IndexStore
from msearch.store.migrations import PLACE_COLUMNS

MODELS = ["tiny-ms-clip", "rs-m-clip"]
EUROSAT = ReadSettings(band_order=BAND_LAYOUTS["eurosat"])
WORKTREE = Path(__file__).resolve().parents[2]


def copy_eurosat(shared: Path, dest: Path, classes=("Forest", "River"), per_class: int = 2) -> list[Path]:
    """A few EuroSAT tiles, copied as <dest>/<Class>/<Class>_<n>.tif; returns the copies, sorted."""
    copies = []
    for name in classes:
        (dest / name).mkdir(parents=True, exist_ok=True)
        for path in sorted((shared / "eurosat-ms" / name).glob("*.tif"))[:per_class]:
            copies.append(Path(shutil.copy2(path, dest / name / path.name)))
    return sorted(copies)


def tiles_by_key(index: Path) -> dict[str, dict]:
    store = IndexStore(index)
    with store.engine.connect() as conn:
        return {row["key"]: dict(row) for row in conn.execute(select(catalog.tiles)).mappings()}


def vectors_by_key(index: Path, space: str) -> dict[str, np.ndarray]:
    store = IndexStore(index)
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(catalog.tiles.c.key, catalog.vectors.c.vector)
            .join(catalog.vectors, catalog.vectors.c.tile_id == catalog.tiles.c.id)
            .where(catalog.vectors.c.space == space)
        ).all()
    return {key: vector_codec.decode(blob, 1, len(blob) - vector_codec.SCALE_BYTES)[0] for key, blob in rows}


def vector_seqs(index: Path) -> dict[tuple[int, str], int]:
    store = IndexStore(index)
    with store.engine.connect() as conn:
        return {
            (t, s): q
            for t, s, q in conn.execute(
                select(catalog.vectors.c.tile_id, catalog.vectors.c.space, catalog.vectors.c.seq)
            )
        }


def problems_by_key(index: Path) -> dict[str, tuple[str, str]]:
    store = IndexStore(index)
    with store.engine.connect() as conn:
        return {r.key: (r.kind, r.reason) for r in conn.execute(select(catalog.problems))}


def faiss_ids(view) -> np.ndarray:
    """The labels of a SpaceIndex's FAISS index, whatever its kind."""
    from msearch.store import ann

    return ann.stored_ids(view.index)


def assert_view_matches_catalogue(index: Path, space: str, catalogue: str | None = None) -> None:
    """The FAISS view opened now holds exactly the catalogue's vectors of the space, each once, by tile id."""
    store = IndexStore(index, catalogue=catalogue)
    view = store.open_space(space)
    ids = faiss_ids(view)
    cat_ids, matrix = store.all_vectors(space)
    assert view.ntotal == len(cat_ids)
    assert len(set(ids.tolist())) == len(ids), "a tile appears twice in the FAISS view"
    assert sorted(ids.tolist()) == sorted(cat_ids.tolist())
    for tile_id, vector in zip(cat_ids, matrix):
        np.testing.assert_allclose(view.index.reconstruct(int(tile_id)), vector, atol=1e-6)


def subprocess_env() -> dict[str, str]:
    """The test process's environment (offline hub, tiny models' cache and cards) plus the worktree on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(WORKTREE), env.get("PYTHONPATH", "")) if p)
    for name in ("HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "MSEARCH_CARDS", "MSEARCH_CACHE"):
        assert env.get(name), f"{name} is not set by tests/conftest.py"
    return env


def index_command(src: Path, index: Path, batch_size: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "msearch",
        "index",
        str(src),
        "--index",
        str(index),
        "--model",
        "tiny-ms-clip",
        "--model",
        "rs-m-clip",
        "--band-order",
        "eurosat",
        "--batch-size",
        str(batch_size),
    ]


def gdal_on_grid(source, settings: ReadSettings) -> np.ndarray:
    """The reference for what readers hand over: a tile's (or chip's) bands each resampled onto the grid by
    GDAL itself (nearest neighbour, the window scaled to the band's own pixels), as msearch read tiles before
    readers kept the bands at their own resolution."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    from msearch.indexer.readers import READERS_BY_NAME
    from msearch.indexer.readers.stack import reference_band

    bands, _, _ = READERS_BY_NAME[source.reader].parts(source, settings)
    with rasterio.open(reference_band(bands).path) as grid:
        grid_width, grid_height = grid.width, grid.height
    col, row, width, height = source.window or (0, 0, grid_width, grid_height)
    planes = []
    for band in bands:
        with rasterio.open(band.path) as raster:
            x, y = raster.width / grid_width, raster.height / grid_height
            window = Window(col * x, row * y, width * x, height * y)
            planes.append(
                raster.read(band.index, window=window, out_shape=(height, width), resampling=Resampling.nearest)
            )
    return np.stack(planes)


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


def store_count(store: IndexStore, space: str) -> int:
    from sqlalchemy import func

    with store.engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(catalog.vectors).where(catalog.vectors.c.space == space)
        ).scalar_one()


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


def as_catalogue_before_places(conn) -> None:
    """Take places out of a catalogue, as schemas 1 to 4 had none (the caller sets the version)."""
    conn.exec_driver_sql("DROP INDEX ix_tiles_place")
    for name in PLACE_COLUMNS:
        conn.exec_driver_sql(f"ALTER TABLE tiles DROP COLUMN {name}")
    catalog.places.drop(conn)


def as_catalogue_of_schema_3(conn) -> None:
    """Take places and collections out of a catalogue, as schemas 1 to 3 had neither (the caller sets the
    version and the vectors' format)."""
    as_catalogue_before_places(conn)
    catalog.collection_labels.drop(conn)  # collections came with schema 4
    catalog.collections.drop(conn)
