"""Writing to the store: what the catalogue records of a read tile (its row, its content digest) and the
writer that commits a batch as one catalogue transaction (tiles, vectors, problems), so that a killed run
loses at most the batch in flight and the next run redoes exactly the tiles that have no committed vectors.
The FAISS views follow the catalogue, and are saved now and then during a long run.
"""

from __future__ import annotations

import hashlib
import json
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from msearch.indexer.runs import FAISS_CHECKPOINT_SECONDS, RunSummary, interrupt_after
from msearch.indexer.tiles import Tile
from msearch.schema.bands import canonical_order
from msearch.store.index_store import IndexStore, SpaceIndex

if TYPE_CHECKING:
    from msearch.indexer.encoding import EmbeddedBatch


@lru_cache(maxsize=4096)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            sha.update(chunk)
    return sha.hexdigest()


def content_digest(files: Sequence[Path], remote_identity: str | None = None) -> str:
    """sha256 over the files' own digests (memoised, so chips of one scene hash it once per process) and
    what stands for the content of remote assets, which are never downloaded whole to be hashed."""
    sha = hashlib.sha256(remote_identity.encode() if remote_identity else b"")
    for path in files:
        stat = path.stat()
        sha.update(_file_digest(str(path), stat.st_size, stat.st_mtime_ns).encode())
    return sha.hexdigest()


def tile_row(tile: Tile, stat_signature: str, digest: str) -> dict:
    """The catalogue's row of a read tile: where it is, its files' signature and content digest, its grid,
    footprint, bands and acquisition."""
    source = tile.source
    stats = [f.stat() for f in source.files]
    bounds = tile.bounds or (None, None, None, None)
    centre = ((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2) if tile.bounds else (None, None)
    return {
        "root": str(source.root),
        "key": source.key,
        "path": source.path,
        "reader": source.reader,
        "stat_signature": stat_signature,
        "size": sum(s.st_size for s in stats),
        "mtime": max((s.st_mtime for s in stats), default=None),  # None: read from remote assets only
        "digest": digest,
        "crs": tile.crs,
        "width": tile.width,
        "height": tile.height,
        "pixel_size": tile.pixel_size,
        "min_lon": bounds[0],
        "min_lat": bounds[1],
        "max_lon": bounds[2],
        "max_lat": bounds[3],
        "centre_lon": centre[0],
        "centre_lat": centre[1],
        "footprint": json.dumps(tile.footprint) if tile.footprint else None,
        "bands": ",".join(canonical_order(tile.pixels.bands)),
        # a multiband file's planes in file order: what a re-read of a file without band names is told
        "file_band_order": ",".join(tile.pixels.bands) if source.reader == "geotiff" else None,
        "offset": tile.pixels.offset,
        "level": tile.level,
        "acquired": tile.acquired,
        "product": tile.product,
        "mgrs_tile": tile.mgrs_tile,
        "processing_baseline": tile.processing_baseline,
        "cloud_cover": tile.cloud_cover,
        "nodata_fraction": tile.nodata_fraction,
        "scene": tile.scene,
        "window": ",".join(map(str, source.window)) if source.window else None,
        # the grid's upper-left corner and y pixel size, which with crs, size and pixel_size name the place
        "origin_x": tile.transform[2] if tile.transform else None,
        "origin_y": tile.transform[5] if tile.transform else None,
        "pixel_height": abs(tile.transform[4]) if tile.transform else None,
    }


class CatalogueWriter:
    """Commits a run's batches, whichever runner made them: each batch one transaction (tile rows, their
    vectors per space, the problems), counted in the run's summary. The FAISS views follow the catalogue in
    memory and are saved every FAISS_CHECKPOINT_SECONDS, so that a killed run's views have little to catch up."""

    def __init__(self, store: IndexStore, summary: RunSummary, views: dict[str, SpaceIndex]):
        self.store, self.summary, self.views = store, summary, views
        self.last_save = time.monotonic()

    def commit(self, batch: EmbeddedBatch) -> None:
        """Ctrl-C waits for the transaction and its count (runs.interrupt_after)."""
        problems = [(str(source.root), source.key, kind, reason) for source, kind, reason in batch.problems]
        with interrupt_after():
            self.store.write_batch(self.summary.run_id, batch.done, problems, self.views)
            self.summary.record(batch)
        if time.monotonic() - self.last_save > FAISS_CHECKPOINT_SECONDS:
            for view in self.views.values():
                self.store.save_space(view)
            self.last_save = time.monotonic()
