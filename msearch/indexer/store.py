"""The index directory: the SQLite catalogue (durable truth) and, per encoder space, a FAISS view of it.

Layout:
    <index>/catalogue.sqlite                   tiles, vectors, spaces, runs, problems (WAL mode)
    <index>/spaces/<space>/manifest.json       encoder identity, dimension, metric, index type, sync point
    <index>/spaces/<space>/index-G-S.faiss     every vector with seq <= S, as of generation G

Crash safety: vectors are committed with their tile rows in one transaction. A FAISS file is written
under a new name, fsynced, then the manifest is replaced atomically to point at it; so after a crash at
any moment the manifest names a complete file, and opening a space appends the vectors committed since
(seq > S). Deletions bump the generation, and a file of an older generation is rebuilt from the vectors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection

from msearch.config import index_dir as resolve_index_dir
from msearch.schema import catalog
from msearch.schema.catalog import catalogue_engine
from msearch.schema.manifest import SpaceManifest

SPACES_DIR = "spaces"


class SpaceMismatchError(RuntimeError):
    """An index space filled by one encoder, asked to take or answer with vectors of another."""


@dataclass
class SpaceIndex:
    """A FAISS index over one space, current up to `synced_seq` at `generation`."""

    manifest: SpaceManifest
    index: object  # faiss.Index with tile ids as labels
    synced_seq: int
    generation: int

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)


def vector_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def vectors_from_rows(rows, dim: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim) if rows else np.empty((0, dim), "<f4")
    return ids, np.ascontiguousarray(matrix, dtype=np.float32)


def new_faiss_index(dim: int):
    """Exact inner-product search, labelled by tile id."""
    import faiss

    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


class IndexStore:
    def __init__(self, directory: str | os.PathLike | None = None, create: bool = False):
        self.directory = resolve_index_dir(directory)
        self.engine = catalogue_engine(self.directory, create=create)

    def space_dir(self, space: str) -> Path:
        return self.directory / SPACES_DIR / space

    def manifests(self) -> dict[str, SpaceManifest]:
        folder = self.directory / SPACES_DIR
        found = {}
        if folder.is_dir():
            for sub in sorted(folder.iterdir()):
                manifest = SpaceManifest.read(sub)
                if manifest:
                    found[manifest.space] = manifest
        return found

    def manifest(self, space: str) -> SpaceManifest:
        manifest = SpaceManifest.read(self.space_dir(space))
        if manifest is None:
            known = ", ".join(self.manifests()) or "none"
            raise SpaceMismatchError(
                f"the index at {self.directory} has no space {space!r} (it has: {known}); "
                f"run `msearch index ... --model {space}` to add it"
            )
        return manifest

    def check_space(self, space: str, card: str, weights_sha256: str, dim: int) -> SpaceManifest | None:
        """The space's manifest (None before its first use); one built by another encoder identity is an error."""
        manifest = SpaceManifest.read(self.space_dir(space))
        if manifest is not None and (manifest.card, manifest.weights_sha256, manifest.dim) != (card, weights_sha256, dim):
            raise SpaceMismatchError(
                f"space {space!r} of {self.directory} was built with {manifest.identity} (dim {manifest.dim}); "
                f"this encoder is {card}@sha256:{weights_sha256[:12]} (dim {dim}). Vectors of different "
                f"encoders cannot share an index: use another --index, or the weights the index was built with."
            )
        return manifest

    def ensure_space(self, space: str, card: str, weights_sha256: str, dim: int) -> SpaceManifest:
        """The space's manifest, created on first use; a different encoder identity is an error."""
        manifest = self.check_space(space, card, weights_sha256, dim)
        if manifest is not None:
            return manifest
        manifest = SpaceManifest(space=space, card=card, weights_sha256=weights_sha256, dim=dim)
        with self.engine.begin() as conn:
            exists = conn.execute(select(catalog.spaces.c.name).where(catalog.spaces.c.name == space)).first()
            if not exists:
                conn.execute(catalog.spaces.insert().values(
                    name=space, card=card, weights_sha256=weights_sha256, dim=dim, metric="cosine", generation=0))
        manifest.write(self.space_dir(space))
        return manifest

    # -- FAISS views -----------------------------------------------------------------------------------

    def open_space(self, space: str) -> SpaceIndex:
        """The space's FAISS index, brought up to the catalogue's committed state (one consistent snapshot)."""
        import faiss

        manifest = self.manifest(space)
        with self.engine.connect() as conn, conn.begin():
            # pysqlite opens no transaction for SELECTs: without an explicit BEGIN each read could see a
            # different commit of a concurrent indexing run
            conn.exec_driver_sql("BEGIN")
            generation = self._generation(conn, space)
            path = self.space_dir(space) / manifest.faiss_file if manifest.faiss_file else None
            if path is not None and path.exists() and manifest.generation == generation:
                view = SpaceIndex(manifest, faiss.read_index(str(path)), manifest.synced_seq, generation)
            else:
                view = SpaceIndex(manifest, new_faiss_index(manifest.dim), 0, generation)
            self.catch_up(view, conn)
        return view

    def catch_up(self, view: SpaceIndex, conn: Connection) -> int:
        """Add vectors committed after the view's sync point (replacing older vectors of the same tiles)."""
        rows = conn.execute(
            select(catalog.vectors.c.tile_id, catalog.vectors.c.vector, catalog.vectors.c.seq)
            .where(catalog.vectors.c.space == view.manifest.space, catalog.vectors.c.seq > view.synced_seq)
            .order_by(catalog.vectors.c.seq)
        ).all()
        if not rows:
            return 0
        ids, matrix = vectors_from_rows(rows, view.manifest.dim)
        view.index.remove_ids(ids)
        view.index.add_with_ids(matrix, ids)
        view.synced_seq = int(rows[-1][2])
        return len(rows)

    def save_space(self, view: SpaceIndex) -> None:
        """Write the view under a new file name, then point the manifest at it, then drop older files."""
        import faiss

        folder = self.space_dir(view.manifest.space)
        name = f"index-{view.generation}-{view.synced_seq}.faiss"
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        faiss.write_index(view.index, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, folder / name)
        view.manifest.faiss_file = name
        view.manifest.synced_seq = view.synced_seq
        view.manifest.generation = view.generation
        view.manifest.vectors = view.ntotal
        view.manifest.write(folder)
        for old in folder.glob("index-*.faiss"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def _generation(self, conn: Connection, space: str) -> int:
        value = conn.execute(select(catalog.spaces.c.generation).where(catalog.spaces.c.name == space)).scalar()
        return int(value or 0)

    def bump_generation(self, conn: Connection, space: str) -> None:
        conn.execute(update(catalog.spaces).where(catalog.spaces.c.name == space)
                     .values(generation=catalog.spaces.c.generation + 1))

    # -- vectors and tiles -----------------------------------------------------------------------------

    def vectors_of(self, space: str, tile_ids) -> np.ndarray:
        """Stored vectors of the given tiles, in the order given (for exact re-ranking and query-by-example)."""
        dim = self.manifest(space).dim
        wanted = [int(i) for i in tile_ids]
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(catalog.vectors.c.tile_id, catalog.vectors.c.vector)
                .where(catalog.vectors.c.space == space, catalog.vectors.c.tile_id.in_(wanted))
            ).all()
        ids, matrix = vectors_from_rows(rows, dim)
        position = {int(t): i for i, t in enumerate(ids)}
        missing = [t for t in wanted if t not in position]
        if missing:
            raise KeyError(f"no {space} vectors for tiles {missing[:5]}")
        return matrix[[position[t] for t in wanted]]

    def all_vectors(self, space: str) -> tuple[np.ndarray, np.ndarray]:
        dim = self.manifest(space).dim
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(catalog.vectors.c.tile_id, catalog.vectors.c.vector)
                .where(catalog.vectors.c.space == space).order_by(catalog.vectors.c.tile_id)
            ).all()
        return vectors_from_rows(rows, dim)

    def tiles_by_id(self, tile_ids) -> dict[int, dict]:
        wanted = [int(i) for i in tile_ids]
        with self.engine.connect() as conn:
            rows = conn.execute(select(catalog.tiles).where(catalog.tiles.c.id.in_(wanted))).mappings().all()
        return {row["id"]: dict(row) for row in rows}

    def tile_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(catalog.tiles)).scalar())

    def delete_tiles(self, conn: Connection, tile_ids: list[int]) -> None:
        if not tile_ids:
            return
        conn.execute(delete(catalog.vectors).where(catalog.vectors.c.tile_id.in_(tile_ids)))
        conn.execute(delete(catalog.tiles).where(catalog.tiles.c.id.in_(tile_ids)))
        for space in self.manifests():
            self.bump_generation(conn, space)
