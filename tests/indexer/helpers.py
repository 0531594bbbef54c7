"""Shared helpers of the indexer tests: small copies of the sample tiles and views of an index directory."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
from sqlalchemy import select

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


def as_catalogue_before_places(conn) -> None:
    """Take places out of a catalogue, as schemas 1 to 3 had none (the caller sets the version)."""
    conn.exec_driver_sql("DROP INDEX ix_tiles_place")
    for name in PLACE_COLUMNS:
        conn.exec_driver_sql(f"ALTER TABLE tiles DROP COLUMN {name}")
    catalog.places.drop(conn)
