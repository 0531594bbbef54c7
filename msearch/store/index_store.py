"""An index: its catalogue (durable truth) and, per encoder space, a FAISS view of it in the index directory.

Layout:
    <index>/catalogue.sqlite                   tiles, vectors, spaces, runs, problems (WAL mode); or a
                                               PostgreSQL database named by --catalogue / $MSEARCH_CATALOGUE
    <index>/spaces/<space>/manifest.json       encoder identity, dimension, metric, index type, sync point,
                                               and the id of the catalogue the FAISS file was built from
    <index>/spaces/<space>/index-G-S.faiss     every vector with seq <= S, as of generation G

A FAISS file is read only against the catalogue its manifest names (a catalogue id, made once when the
catalogue was created): the seq and generation it is synced to mean nothing in another catalogue.

Crash safety: vectors are committed with their tile rows in one transaction. A FAISS file is written
under a new name, fsynced, then the manifest is replaced atomically to point at it; so after a crash at
any moment the manifest names a complete file, and opening a space appends the vectors committed since
(seq > S). Deletions bump the generation; a writer that holds the view removes the deleted ids from it
and saves it at the new generation, and a file left at an older generation (a crash in between) is
emptied and refilled from the vectors, keeping its trained quantisers.

The kind of FAISS index follows the size of the space (msearch.store.ann): exact search while it is
small, a trained and tuned inverted file once it crosses a threshold. Additions go into the trained
index; `rebuild_ann` retrains it (`msearch index --rebuild-ann`), and `ann.needs_retrain` says when that pays.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection

from msearch.config import index_dir as resolve_index_dir
from msearch.schema import catalog
from msearch.schema.catalog import CATALOGUE_FILE
from msearch.schema.manifest import SpaceManifest
from msearch.store import ann, places, vector_codec
from msearch.store.ann import AnnInfo
from msearch.store.catalogue import (
    CatalogueError,
    WriterLock,
    catalogue_url,
    dialect_insert,
    display_url,
    open_engine,
    run_transaction,
    snapshot,
    sqlite_path,
)
from msearch.store.migrations import prepare_catalogue
from msearch.store.places import PlaceAssigner, delete_empty_places

log = logging.getLogger(__name__)

SPACES_DIR = "spaces"
# A reader that finds the FAISS file its manifest named already replaced by a concurrent writer reads the
# manifest again; a writer saves at most every few minutes, so a second attempt nearly always succeeds.
OPEN_ATTEMPTS = 5


class SpaceMismatchError(RuntimeError):
    """An index space filled by one encoder, asked to take or answer with vectors of another."""


class CatalogueMismatchError(CatalogueError):
    """An index directory whose FAISS files were built from another catalogue than the one given."""


@dataclass
class SpaceIndex:
    """A FAISS index over one space, current up to `synced_seq` at `generation`."""

    manifest: SpaceManifest
    index: object  # faiss.Index with tile ids as labels
    ann: AnnInfo  # its kind, tuned parameters and measured recall
    synced_seq: int
    generation: int

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)


def vector_bytes(vector: np.ndarray) -> bytes:
    """One vector as the catalogue stores it (msearch.store.vector_codec)."""
    return vector_codec.encode(vector)[0]


def vector_from_bytes(blob: bytes) -> np.ndarray:
    """One vector that `vector_bytes` wrote, as float32."""
    return vector_codec.decode(blob, 1, len(blob) - vector_codec.SCALE_BYTES)[0]


def vectors_from_rows(rows, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(tile ids, float32 matrix) from rows of (tile id, stored vector, ...)."""
    ids, scales, codes = codes_from_rows(rows, dim)
    return ids, vector_codec.decode_codes(scales, codes)


def codes_from_rows(rows, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tile ids, scales, int8 codes) from rows of (tile id, stored vector, ...), undecoded (vector_codec.split)."""
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    try:
        scales, codes = vector_codec.split(b"".join(r[1] for r in rows), len(rows), dim)
    except ValueError as exc:
        raise CatalogueError(f"stored vectors do not match the manifest: {exc}") from None
    return ids, scales, codes


class IndexStore:
    """An index directory and its catalogue (`catalogue`: a SQLAlchemy URL or path; default
    $MSEARCH_CATALOGUE, else catalogue.sqlite in the directory), its schema checked or migrated on open."""

    def __init__(self, directory: str | os.PathLike | None = None, create: bool = False, catalogue: str | None = None):
        self.directory = resolve_index_dir(directory)
        self.url = catalogue_url(catalogue, self.directory)
        self.engine = open_engine(self.url, create)
        self.catalogue_id = prepare_catalogue(self.engine, self.url, create)
        self._writer_lock = WriterLock(self.engine, self.url)

    def lock_for_writing(self, purpose: str) -> None:
        """Become the catalogue's one writer until `unlock` (or the process ends); CatalogueBusyError if
        another process is."""
        self._writer_lock.acquire(purpose)

    def unlock(self) -> None:
        self._writer_lock.release()

    def space_dir(self, space: str) -> Path:
        return self.directory / SPACES_DIR / space

    def _read_manifest(self, folder: Path) -> SpaceManifest | None:
        """The manifest in `folder`, if it belongs to this catalogue; another catalogue's is an error."""
        manifest = SpaceManifest.read(folder)
        if manifest is None or manifest.catalogue_id == self.catalogue_id:
            return manifest
        # Manifests written before catalogues had ids belong to the SQLite catalogue of their directory.
        if manifest.catalogue_id is None and sqlite_path(self.url) == self.directory / CATALOGUE_FILE:
            return manifest
        raise CatalogueMismatchError(
            f"the index directory {self.directory} (space {manifest.space!r}) belongs to catalogue "
            f"{manifest.catalogue_id or 'catalogue.sqlite in that directory'}"
            f"{f' at {manifest.catalogue_url}' if manifest.catalogue_url else ''}, not to the catalogue "
            f"{self.catalogue_id} at {display_url(self.url)}: its FAISS files would be read against the wrong "
            f"tiles. Give the --catalogue it was built with, or another --index for this catalogue "
            f"(`msearch catalogue copy SRC DST --index DIR` moves an index's catalogue and re-binds DIR)."
        )

    def manifests(self) -> dict[str, SpaceManifest]:
        folder = self.directory / SPACES_DIR
        found = {}
        if folder.is_dir():
            for sub in sorted(folder.iterdir()):
                manifest = self._read_manifest(sub)
                if manifest:
                    found[manifest.space] = manifest
        return found

    def manifest(self, space: str) -> SpaceManifest:
        manifest = self._read_manifest(self.space_dir(space))
        if manifest is None:
            known = ", ".join(self.manifests()) or "none"
            raise SpaceMismatchError(
                f"the index at {self.directory} has no space {space!r} (it has: {known}); "
                f"run `msearch index ... --model {space}` to add it"
            )
        return manifest

    def check_space(self, space: str, card: str, weights_sha256: str, dim: int) -> SpaceManifest | None:
        """The space's manifest (None before its first use); one built by another encoder identity is an error."""
        manifest = self._read_manifest(self.space_dir(space))
        if manifest is not None and (manifest.card, manifest.weights_sha256, manifest.dim) != (
            card,
            weights_sha256,
            dim,
        ):
            raise SpaceMismatchError(
                f"space {space!r} of {self.directory} was built with {manifest.identity} (dim {manifest.dim}); "
                f"this encoder is {card}@sha256:{weights_sha256[:12]} (dim {dim}). Vectors of different "
                f"encoders cannot share an index: use another --index, or the weights the index was built with."
            )
        return manifest

    def ensure_space(
        self, space: str, card: str, weights_sha256: str, dim: int, precision: str = "fp32"
    ) -> SpaceManifest:
        """The space's manifest, created on first use, with `precision` among the precisions that wrote its
        vectors; a different encoder identity is an error."""
        manifest = self.check_space(space, card, weights_sha256, dim)
        if manifest is not None:
            if precision not in manifest.precisions:
                manifest.precisions = sorted([*manifest.precisions, precision])
                manifest.write(self.space_dir(space))
            return manifest
        manifest = SpaceManifest(
            space=space,
            card=card,
            weights_sha256=weights_sha256,
            dim=dim,
            precisions=[precision],
            catalogue_id=self.catalogue_id,
            catalogue_url=display_url(self.url),
        )
        with self.engine.begin() as conn:
            exists = conn.execute(select(catalog.spaces.c.name).where(catalog.spaces.c.name == space)).first()
            if not exists:
                conn.execute(
                    catalog.spaces.insert().values(
                        name=space, card=card, weights_sha256=weights_sha256, dim=dim, metric="cosine", generation=0
                    )
                )
        manifest.write(self.space_dir(space))
        return manifest

    # -- FAISS views -----------------------------------------------------------------------------------

    def open_space(self, space: str, *, fill: bool = True) -> SpaceIndex:
        """The space's FAISS index, brought up to the catalogue's committed state (one consistent snapshot).

        Without a usable FAISS file (a new index directory over a team's catalogue, a file deleted or lost), the
        view is filled from the catalogue's vectors: exact search while the space is below its exact threshold;
        past it, the index kind its size calls for, trained and tuned as `rebuild_ann` builds it (minutes for
        millions of vectors, logged), never every vector in an exact index in RAM (20 GB at 10M 512-d vectors).
        Readers do not save it: `msearch index --rebuild-ann` does. `fill=False` leaves such a view empty, for a
        caller that rebuilds the index itself."""
        for _ in range(OPEN_ATTEMPTS):
            manifest = self.manifest(space)
            path = self.space_dir(space) / manifest.faiss_file if manifest.faiss_file else None
            build = False
            with snapshot(self.engine) as conn:
                generation = self._generation(conn, space)
                try:
                    index = ann.read_index(path) if path is not None else None
                except RuntimeError:
                    if self.manifest(space).faiss_file != manifest.faiss_file:
                        continue  # a concurrent save replaced the file after we read the manifest: read it again
                    index = None  # the named file is lost (deleted by hand, disk trouble): refill from the vectors
                if index is None:
                    recorded = ann_info(manifest)  # the settings of the index the space had, if any
                    empty = AnnInfo(
                        "flat", 0, recorded.target_recall, 1.0, recorded.exact_threshold, recorded.compressed_threshold
                    )
                    view = SpaceIndex(manifest, ann.new_flat_index(manifest.dim), empty, 0, generation)
                    n = self._vector_count(conn, space)
                    build = ann.choose_kind(n, empty.exact_threshold, empty.compressed_threshold) != "flat"
                    if build or not fill:
                        break
                else:
                    view = SpaceIndex(manifest, index, ann_info(manifest), manifest.synced_seq, generation)
                    if manifest.generation != generation:
                        # Vectors were deleted since this file was saved: empty it and refill it from the
                        # catalogue. reset() keeps an inverted file's training, so nothing is retrained.
                        view.index.reset()
                        view.synced_seq = 0
                self.catch_up(view, conn)
            return view
        else:
            raise RuntimeError(f"space {space!r}: its FAISS file kept being replaced while opening it; try again")
        if build and fill:
            log.warning(
                "space %s has no usable FAISS file: building its index from the catalogue's %d vectors (save one "
                "with `msearch index --rebuild-ann`)",
                space,
                n,
            )
            self.rebuild_ann(view)
        return view

    def catch_up(self, view: SpaceIndex, conn: Connection) -> int:
        """Add vectors committed after the view's sync point (replacing older vectors of the same tiles)."""
        total, synced = 0, view.synced_seq
        for ids, matrix, last in self.vector_chunks(conn, view.manifest.space, view.manifest.dim, after_seq=synced):
            if view.synced_seq:  # a refill from zero has nothing to replace
                ann.remove(view.index, ids)
            ann.add(view.index, matrix, ids)
            total, synced = total + len(ids), last
        view.synced_seq = synced
        return total

    def vector_chunks(
        self, conn: Connection, space: str, dim: int, after_seq: int = 0, chunk_rows: int = ann.CHUNK_ROWS
    ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """(tile ids, float32 matrix, last seq) of the space's vectors committed after `after_seq`, in seq order
        and in chunks: a space of millions of vectors is never held in memory at once."""
        seq = after_seq
        while True:
            rows = conn.execute(
                select(catalog.vectors.c.tile_id, catalog.vectors.c.vector, catalog.vectors.c.seq)
                .where(catalog.vectors.c.space == space, catalog.vectors.c.seq > seq)
                .order_by(catalog.vectors.c.seq)
                .limit(chunk_rows)
            ).all()
            if not rows:
                return
            seq = int(rows[-1][2])
            yield (*vectors_from_rows(rows, dim), seq)

    def sample_vectors(self, space: str, n: int, seed: int, exclude=()) -> tuple[np.ndarray, np.ndarray]:
        """(tile ids, vectors) of up to n of the space's tiles drawn at random (seeded: the same draw for the
        same catalogue), leaving out `exclude`. Drawn by seq, so a space of millions is not listed to draw a few."""
        excluded = {int(t) for t in exclude}
        rng = np.random.default_rng(seed)
        with snapshot(self.engine) as conn:
            seq, in_space = catalog.vectors.c.seq, catalog.vectors.c.space == space
            # One aggregate a statement: SQLite answers a lone min() or max() from the (space, seq) index at once,
            # but scans every entry of the space for several in one statement (1.1 s at 10M vectors).
            low = conn.execute(select(func.min(seq)).where(in_space)).scalar()
            if low is None:
                return np.empty(0, np.int64), np.empty((0, self.manifest(space).dim), np.float32)
            high = conn.execute(select(func.max(seq)).where(in_space)).scalar()
            # Counted only as far as the draw needs to know: whether n vectors are left beyond the excluded tiles.
            count = conn.execute(
                select(func.count()).select_from(select(seq).where(in_space).limit(n + len(excluded)).subquery())
            ).scalar()
            wanted = min(n, count - len(excluded))
            chosen: dict[int, np.ndarray] = {}
            tried: set[int] = set()
            # Seqs have gaps where vectors were replaced or deleted: draw again until enough are found.
            while len(chosen) < wanted and len(tried) < high - low + 1:
                draw = [int(s) for s in rng.integers(low, high + 1, size=2 * (wanted - len(chosen)) + 16)]
                draw = sorted(set(draw) - tried)
                tried.update(draw)
                for chunk in id_chunks(draw):
                    rows = conn.execute(
                        select(catalog.vectors.c.tile_id, catalog.vectors.c.vector).where(
                            catalog.vectors.c.space == space, catalog.vectors.c.seq.in_(chunk)
                        )
                    ).all()
                    ids, matrix = vectors_from_rows(rows, self.manifest(space).dim)
                    for tile_id, vector in zip(ids.tolist(), matrix):
                        if tile_id not in excluded and len(chosen) < wanted:
                            chosen[tile_id] = vector
        ids = np.fromiter(chosen, dtype=np.int64, count=len(chosen))
        matrix = np.stack(list(chosen.values())) if chosen else np.empty((0, self.manifest(space).dim), np.float32)
        return ids, matrix

    def save_space(self, view: SpaceIndex) -> None:
        """Write the view under a new file name, then point the manifest at it, then drop older files."""
        folder = self.space_dir(view.manifest.space)
        name = f"index-{view.generation}-{view.synced_seq}.faiss"
        ann.write_index(view.index, folder / name)
        view.manifest.faiss_file = name
        view.manifest.synced_seq = view.synced_seq
        view.manifest.generation = view.generation
        view.manifest.vectors = view.ntotal
        view.manifest.index = view.ann.to_dict()
        view.manifest.catalogue_id = self.catalogue_id
        view.manifest.catalogue_url = display_url(self.url)
        view.manifest.write(folder)
        for old in folder.glob("index-*.faiss"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def rebuild_ann(
        self,
        view: SpaceIndex,
        *,
        target_recall: float | None = None,
        sample_queries: np.ndarray | None = None,
        exact_threshold: int | None = None,
        compressed_threshold: int | None = None,
    ) -> AnnInfo:
        """Choose, train and tune the index kind that suits the space's size now, from the catalogue's
        vectors, into the view (save it to keep it). Unset settings keep the space's own (its manifest), else ann's defaults.

        The vectors' int8 codes are streamed to a scratch file beside the index (dim bytes a vector: 5.1 GB for
        10M 512-d vectors, a quarter of float32) and memory-mapped, so a space larger than RAM can be rebuilt; they
        are decoded a chunk at a time as the build reads them. `sample_queries` (encoded prompts) make the tuning
        measure recall on text queries.
        """
        space, dim = view.manifest.space, view.manifest.dim
        old = view.ann
        scratch = self.space_dir(space) / f".rebuild.{os.getpid()}.i8"
        try:
            with snapshot(self.engine) as conn:
                generation = self._generation(conn, space)
                n = self._vector_count(conn, space)
                codes = (
                    np.lib.format.open_memmap(scratch, mode="w+", dtype=np.int8, shape=(n, dim))
                    if n
                    else np.empty((0, dim), np.int8)
                )
                ids = np.empty(n, dtype=np.int64)
                rows = conn.execute(
                    select(catalog.vectors.c.tile_id, catalog.vectors.c.vector, catalog.vectors.c.seq)
                    .where(catalog.vectors.c.space == space)
                    .order_by(catalog.vectors.c.seq)
                )
                at, synced = 0, 0
                while chunk := rows.fetchmany(ann.CHUNK_ROWS):
                    chunk_ids, _, chunk_codes = codes_from_rows(chunk, dim)
                    ids[at : at + len(chunk)], codes[at : at + len(chunk)] = chunk_ids, chunk_codes
                    at, synced = at + len(chunk), int(chunk[-1][2])
            index, info = ann.choose_and_build(
                vector_codec.UnitCodes(codes),
                ids,
                target_recall=target_recall if target_recall is not None else old.target_recall,
                exact_threshold=exact_threshold if exact_threshold is not None else old.exact_threshold,
                compressed_threshold=compressed_threshold
                if compressed_threshold is not None
                else old.compressed_threshold,
                sample_queries=sample_queries,
            )
        finally:
            scratch.unlink(missing_ok=True)
        view.index, view.ann, view.synced_seq, view.generation = index, info, synced, generation
        return info

    def search(
        self,
        view: SpaceIndex,
        queries: np.ndarray,
        k: int,
        allowed_ids: np.ndarray | None = None,
        nprobe_scale: int = 1,
        rerank: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, tile ids) per query in a view; exact re-ranking and id subsets read the stored
        vectors from the catalogue (see ann.search, also for `nprobe_scale` and `rerank`)."""
        space = view.manifest.space
        return ann.search(
            view.index,
            view.ann,
            queries,
            k,
            allowed_ids=allowed_ids,
            vectors_lookup=lambda ids: self.vectors_of(space, ids),
            nprobe_scale=nprobe_scale,
            rerank=rerank,
        )

    def vector_count(self, space: str) -> int:
        """How many vectors the catalogue holds in the space."""
        with self.engine.connect() as conn:
            return self._vector_count(conn, space)

    def _vector_count(self, conn: Connection, space: str) -> int:
        return int(
            conn.execute(
                select(func.count()).select_from(catalog.vectors).where(catalog.vectors.c.space == space)
            ).scalar()
        )

    def _generation(self, conn: Connection, space: str) -> int:
        value = conn.execute(select(catalog.spaces.c.generation).where(catalog.spaces.c.name == space)).scalar()
        return int(value or 0)

    def bump_generation(self, conn: Connection, space: str) -> None:
        conn.execute(
            update(catalog.spaces)
            .where(catalog.spaces.c.name == space)
            .values(generation=catalog.spaces.c.generation + 1)
        )

    # -- vectors and tiles -----------------------------------------------------------------------------

    def write_batch(
        self,
        run_id: int,
        done: list[tuple[dict, dict[str, np.ndarray]]],
        problems: list[tuple[str, str, str, str]],
        views: dict[str, SpaceIndex] | None = None,
    ) -> None:
        """One transaction: tile rows (upserted by root and key), their vectors per space (replacing older
        ones), and problems (root, key, kind, reason); then the given views catch up with the commit.

        A transaction that loses its connection is run again (catalogue.run_transaction); the views catch up
        only after the commit, so they never hold a tile whose rows were rolled back."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")

        def write(conn: Connection) -> None:
            # One statement per kind, built once and run with each tile's values: building and compiling
            # a statement per tile cost more than running it.
            upserts: dict[tuple[str, ...], object] = {}
            vectors_by_space: dict[str, list[dict]] = {}
            written_keys: dict[str, list[str]] = {}
            assigner = PlaceAssigner(conn)
            earlier_places = self._places_of_keys(conn, [row for row, _ in done])
            for row, vectors in done:
                values = dict(row, run_id=run_id, indexed_at=now)
                values["place_id"] = assigner.place_for(values)
                columns = tuple(values)
                if columns not in upserts:
                    statement = dialect_insert(conn, catalog.tiles)
                    upserts[columns] = statement.on_conflict_do_update(
                        index_elements=["root", "key"],
                        set_={k: statement.excluded[k] for k in columns if k not in ("root", "key")},
                    ).returning(catalog.tiles.c.id)
                tile_id = conn.execute(upserts[columns], values).scalar_one()
                for space, vector in vectors.items():
                    vectors_by_space.setdefault(space, []).append(
                        {"tile_id": tile_id, "space": space, "vector": vector_bytes(vector)}
                    )
                written_keys.setdefault(row["root"], []).append(row["key"])
            for space, rows in vectors_by_space.items():
                conn.execute(
                    delete(catalog.vectors).where(
                        catalog.vectors.c.space == space, catalog.vectors.c.tile_id.in_([r["tile_id"] for r in rows])
                    )
                )
                conn.execute(catalog.vectors.insert(), rows)
            delete_empty_places(conn, earlier_places)  # a re-read tile may have moved to another grid
            for root, keys in written_keys.items():
                conn.execute(
                    delete(catalog.problems).where(catalog.problems.c.root == root, catalog.problems.c.key.in_(keys))
                )
            for root, key, kind, reason in problems:
                statement = dialect_insert(conn, catalog.problems).values(
                    run_id=run_id, root=root, key=key, kind=kind, reason=reason
                )
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=["root", "key"], set_={"run_id": run_id, "kind": kind, "reason": reason}
                    )
                )

        run_transaction(self.engine, write, f"a batch of {len(done)} tiles")
        if views:
            with snapshot(self.engine) as conn:
                for view in views.values():
                    self.catch_up(view, conn)

    def _places_of_keys(self, conn: Connection, rows: list[dict]) -> set[int]:
        """The places that the catalogued tiles of these rows (by root and key) belong to now."""
        keys_by_root: dict[str, list[str]] = {}
        for row in rows:
            keys_by_root.setdefault(row["root"], []).append(row["key"])
        t = catalog.tiles.c
        found: set[int] = set()
        for root, keys in keys_by_root.items():
            for chunk in id_chunks(keys):
                found.update(conn.execute(select(t.place_id).where(t.root == root, t.key.in_(chunk))).scalars())
        return found - {None}

    def vectors_of(self, space: str, tile_ids) -> np.ndarray:
        """Stored vectors of the given tiles, in the order given (for exact re-ranking and query-by-example)."""
        dim = self.manifest(space).dim
        wanted = [int(i) for i in tile_ids]
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(catalog.vectors.c.tile_id, catalog.vectors.c.vector).where(
                    catalog.vectors.c.space == space, catalog.vectors.c.tile_id.in_(wanted)
                )
            ).all()
        ids, matrix = vectors_from_rows(rows, dim)
        position = {int(t): i for i, t in enumerate(ids)}
        missing = [t for t in wanted if t not in position]
        if missing:
            raise KeyError(f"no {space} vectors for tiles {missing[:5]}")
        return matrix[[position[t] for t in wanted]]

    def stored_vectors(self, space: str, tile_ids) -> tuple[np.ndarray, np.ndarray]:
        """(tile ids, vectors) of those of the given tiles that have a vector in the space, in no set order."""
        dim = self.manifest(space).dim
        wanted = [int(i) for i in tile_ids]
        rows = []
        with self.engine.connect() as conn:
            for chunk in id_chunks(wanted):
                rows += conn.execute(
                    select(catalog.vectors.c.tile_id, catalog.vectors.c.vector).where(
                        catalog.vectors.c.space == space, catalog.vectors.c.tile_id.in_(chunk)
                    )
                ).all()
        return vectors_from_rows(rows, dim)

    def all_vectors(self, space: str) -> tuple[np.ndarray, np.ndarray]:
        dim = self.manifest(space).dim
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(catalog.vectors.c.tile_id, catalog.vectors.c.vector)
                .where(catalog.vectors.c.space == space)
                .order_by(catalog.vectors.c.tile_id)
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

    # -- places (msearch.store.places): every tile is an acquisition of one place ----------------------------

    def places_of(self, tile_ids) -> dict[int, int | None]:
        """{tile id: place id} of the given tiles: what search results are grouped by."""
        with self.engine.connect() as conn:
            return places.place_ids_of(conn, tile_ids)

    def place_of_tile(self, tile_id: int) -> int | None:
        """The place of one tile; None when the tile is unknown."""
        with self.engine.connect() as conn:
            return places.place_of_tile(conn, tile_id)

    def place(self, place_id: int) -> dict | None:
        """A place's row (grid and geometry of its first acquisition); None when unknown."""
        with self.engine.connect() as conn:
            return places.place_row(conn, place_id)

    def place_acquisitions(self, place_id: int) -> list[dict]:
        """The tile rows of a place in date order (empty for an unknown place)."""
        with self.engine.connect() as conn:
            return places.acquisitions(conn, place_id)

    def acquisitions_by_place(self, place_ids, where=None) -> dict[int, list[tuple[int, str | None]]]:
        """{place id: [(tile id, acquired), ...] in date order}, only acquisitions passing `where` (a clause on
        the tiles table) when given."""
        with self.engine.connect() as conn:
            return places.acquisitions_by_place(conn, place_ids, where)

    def place_counts(self) -> tuple[int, int]:
        """(places, acquisitions) in the catalogue."""
        with self.engine.connect() as conn:
            return places.place_counts(conn)

    def delete_tiles(self, conn: Connection, tile_ids: list[int], views: dict[str, SpaceIndex] | None = None) -> None:
        """Delete tiles and their vectors; the given open views drop them too and move to the new generation
        (so that saving them needs no refill). Other views of the space are refilled when next opened."""
        if not tile_ids:
            return
        for chunk in id_chunks(tile_ids):
            emptied = (
                conn.execute(select(catalog.tiles.c.place_id).where(catalog.tiles.c.id.in_(chunk))).scalars().all()
            )
            conn.execute(delete(catalog.vectors).where(catalog.vectors.c.tile_id.in_(chunk)))
            conn.execute(delete(catalog.tiles).where(catalog.tiles.c.id.in_(chunk)))
            delete_empty_places(conn, emptied)
        for space in self.manifests():
            self.bump_generation(conn, space)
            if views and space in views:
                ann.remove(views[space].index, np.asarray(tile_ids, dtype=np.int64))
                views[space].generation = self._generation(conn, space)


def id_chunks(ids: list[int], size: int = 10_000):
    """Slices of an id list for `IN (...)` clauses: SQLite allows at most 250,000 variables in a statement."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def ann_info(manifest: SpaceManifest) -> AnnInfo:
    """The index description a manifest records (manifests written before ANN indexes say only 'flat')."""
    return AnnInfo.from_dict(manifest.index) if "trained_on" in manifest.index else flat_info(manifest.vectors)


def flat_info(n: int) -> AnnInfo:
    return AnnInfo("flat", n, ann.DEFAULT_TARGET_RECALL, 1.0)
