"""Every acquisition of a space in memory, place by place and in date order, with its stored vector: what a
question over all places and their dates at once (msearch.search.change) reads.

The vectors are kept as the catalogue stores them (int8 codes and a scale, msearch.store.vector_codec), a
quarter of float32's size (516 MB for 1M 512-d vectors), and scored a chunk at a time: a score computed here
is the score a query gives the tile, to float32 rounding. A loaded table stays valid while the space's vectors do: `AcquisitionCache` reloads it when an
index run added, replaced or deleted vectors since (the space's generation and latest `seq`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select

from msearch.schema import catalog
from msearch.store import vector_codec
from msearch.store.catalogue import CatalogueError, snapshot

CHUNK_ROWS = 65_536  # rows read from the catalogue at a time
SCORE_CHUNK_ROWS = 4_096  # rows scored at a time: 8 MB of float32 at 512 dimensions


@dataclass
class SpaceAcquisitions:
    """One row per tile with a vector in `space`, ordered by (place, date, tile id).

    `days` are acquisition dates (NaT when unknown); `cloud` is cloud cover in percent and `nodata` the
    nodata fraction (NaN when unknown); `scales` and `codes` are the stored vectors (vector_codec.split)."""

    space: str
    version: tuple[int, int]  # (the space's generation, its latest vector seq) when read
    tile_ids: np.ndarray
    place_ids: np.ndarray
    days: np.ndarray
    cloud: np.ndarray
    nodata: np.ndarray
    scales: np.ndarray
    codes: np.ndarray

    def __len__(self) -> int:
        return len(self.tile_ids)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The float32 vectors of the given rows."""
        return vector_codec.decode_codes(self.scales[rows], self.codes[rows])

    def scores(self, vector: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Cosine of a unit query vector with the stored vector of every row (or of `rows`), as float32: per row
        (codes . q) x scale, which is the decoded vector's inner product with the query up to float32 rounding
        (within 1e-6 of the score a query gives the tile), without writing the decoded vectors out."""
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
        out = np.empty(len(self), dtype=np.float32)
        for start in range(0, len(self), SCORE_CHUNK_ROWS):  # chunks that stay in the CPU's cache
            stop = start + SCORE_CHUNK_ROWS
            out[start:stop] = self.codes[start:stop].astype(np.float32) @ query
        out *= self.scales[:, 0]
        return out if rows is None else out[rows]


def space_version(conn, space: str) -> tuple[int, int]:
    generation = conn.execute(select(catalog.spaces.c.generation).where(catalog.spaces.c.name == space)).scalar()
    latest = conn.execute(select(func.max(catalog.vectors.c.seq)).where(catalog.vectors.c.space == space)).scalar()
    return int(generation or 0), int(latest or 0)


def read_acquisitions(engine, space: str, dim: int) -> SpaceAcquisitions:
    """Every tile of the space with its place, date, cloud, nodata and stored vector, in one snapshot."""
    t, v = catalog.tiles.c, catalog.vectors.c
    with snapshot(engine) as conn:
        version = space_version(conn, space)
        n = int(conn.execute(select(func.count()).select_from(catalog.vectors).where(v.space == space)).scalar())
        tile_ids = np.empty(n, np.int64)
        place_ids = np.empty(n, np.int64)
        cloud = np.empty(n, np.float64)
        nodata = np.empty(n, np.float64)
        scales = np.empty((n, 1), np.float32)
        codes = np.empty((n, dim), np.int8)
        dates: list[str] = []
        rows = conn.execute(
            select(t.id, t.place_id, t.acquired, t.cloud_cover, t.nodata_fraction, v.vector)
            .join(catalog.tiles, t.id == v.tile_id)
            .where(v.space == space)
        )
        at = 0
        while chunk := rows.fetchmany(CHUNK_ROWS):
            stop = at + len(chunk)
            if stop > n:
                raise CatalogueError(f"space {space!r} gained vectors while being read in one snapshot")
            ids, places, acquired, clouds, nodatas, blobs = zip(*chunk)
            tile_ids[at:stop] = ids
            # A tile without a place (a row written by hand) is a place of its own, as place_counts counts it.
            place_ids[at:stop] = [-tile if place is None else place for tile, place in zip(ids, places)]
            cloud[at:stop] = [np.nan if c is None else c for c in clouds]
            nodata[at:stop] = [np.nan if f is None else f for f in nodatas]
            try:
                scales[at:stop], codes[at:stop] = vector_codec.split(b"".join(blobs), len(chunk), dim)
            except ValueError as exc:
                raise CatalogueError(f"stored vectors of space {space!r} do not match its manifest: {exc}") from None
            dates += [a[:10] if a else "NaT" for a in acquired]
            at = stop
    days = np.array(dates, dtype="datetime64[D]") if dates else np.empty(0, "datetime64[D]")
    order = np.lexsort((tile_ids[:at], days, place_ids[:at]))
    return SpaceAcquisitions(
        space,
        version,
        tile_ids[order],
        place_ids[order],
        days[order],
        cloud[order],
        nodata[order],
        scales[order],
        codes[order],
    )


class AcquisitionCache:
    """The last table read per space, read again when the space's vectors changed since (one cheap query)."""

    def __init__(self):
        self._tables: dict[str, SpaceAcquisitions] = {}
        self._lock = threading.Lock()

    def get(self, store, space: str) -> SpaceAcquisitions:
        with self._lock:
            cached = self._tables.get(space)
            if cached is not None:
                with store.engine.connect() as conn:
                    if space_version(conn, space) == cached.version:
                        return cached
            table = read_acquisitions(store.engine, space, store.manifest(space).dim)
            self._tables[space] = table
            return table
