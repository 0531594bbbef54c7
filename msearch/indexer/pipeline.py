"""The indexing run: plan -> read and prepare (worker processes) -> encode -> write, batch by batch.

- plan: discover tiles, compare each with the catalogue by file size and mtime; only new, changed or
  incomplete tiles are read (re-checking an unchanged archive reads no pixels and loads no model); a space
  filled by other weights than the ones given is refused before anything is written; what is catalogued
  at or beneath the paths given and no longer found there is gone (dropped with --prune);
- read: worker processes read pixels, hash the files and select each encoder's bands as stored (uint16
  digital numbers: a quarter of float32's bytes to move), so that the main process only runs the encoders;
- encode: per space per batch, the input recipe and one forward pass on the encoder's device (CPU or CUDA);
  on CUDA the next batch's copy to the device runs on a side stream while the current batch computes;
- write: each batch is one catalogue transaction (tiles, vectors, problems), so a killed run loses at most the
  batch in flight, and the next run redoes exactly the tiles that have no committed vectors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
from sqlalchemy import Table, delete, or_, select
from sqlalchemy.engine import Connection

from msearch.indexer.readers import LAYOUTS_READ, Discovery, discover, discover_urls, read_scene
from msearch.indexer.readers.remote import is_remote, redact
from msearch.indexer.readers.stack import KNOWN_GRID_SIZES
from msearch.indexer.stac_search import StacSearch, search_sources
from msearch.indexer.tiles import IdentityResolver, ReadSettings, SkipTile, Tile, TileSource, tile_locations
from msearch.models import DEFAULT_MODEL, InputRecipe, ModelNotAvailableError, get_card
from msearch.models.device import default_batch_size, describe_device, parse_device, resolve_device
from msearch.models.hub import weights_digest
from msearch.schema import catalog
from msearch.schema.bands import canonical_order
from msearch.schema.pixels import CannotFeed
from msearch.store import ann
from msearch.store.ann import AnnInfo
from msearch.store.catalogue import CatalogueError, run_transaction
from msearch.store.index_store import IndexStore, SpaceIndex, SpaceMismatchError, id_chunks

if TYPE_CHECKING:  # torch and the encoders load only when something needs embedding
    import torch

    from msearch.models import Encoder

DEFAULT_SPACES = (DEFAULT_MODEL, "rs-m-clip")  # English multispectral + ten-language RGB
FAISS_CHECKPOINT_SECONDS = 300.0
IGNORED_NAMED = 5  # files that are not rasters, named in a summary


@dataclass
class RunSummary:
    run_id: int
    spaces: list[str]
    discovered: int = 0
    indexed: int = 0  # embedded in this run (new or changed)
    unchanged: int = 0  # already indexed with the same content
    removed: int = 0  # pruned: files gone
    missing: int = 0  # files gone, kept because --prune was not given
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): read fine, not indexed
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): unreadable or bad
    ignored: int = 0  # files that are not rasters of a known layout
    ignored_files: list[str] = field(default_factory=list)  # the first few of them, to name them
    duplicates: int = 0  # tiles reached a second time (another root, a symbolic link), indexed once
    repaired: int = 0  # catalogued copies of a tile under another root or link, dropped
    unfed: dict[str, int] = field(default_factory=dict)  # space -> tiles indexed without it (lacking its bands)
    unreadable_folders: list[tuple[str, str]] = field(default_factory=list)  # (folder, why): not searched
    committed: int = 0  # tiles whose rows (and vectors) this run committed
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what changed in the search indexes, or should
    device: str = ""  # where the encoders ran, e.g. "cuda:0 (NVIDIA H200)" or "cpu"
    precisions: dict[str, str] = field(default_factory=dict)  # space -> fp32 or bf16, for the spaces encoded
    stage_seconds: dict[str, float] = field(default_factory=dict)  # a Ray run's read, encode and merge time

    def record(self, batch: EmbeddedBatch) -> None:
        """A committed batch's counts; problems named by the file as found (root joined with key)."""
        self.indexed += batch.embedded
        self.unchanged += len(batch.done) - batch.embedded
        self.committed += len(batch.done) + len(batch.problems)
        for source, kind, reason in batch.problems:
            where = os.path.join(source.root, source.key)
            (self.skipped if kind == "skipped" else self.failed).append((where, reason))
        for space, n in batch.unfed.items():
            self.unfed[space] = self.unfed.get(space, 0) + n

    @property
    def ok(self) -> bool:
        """A run fails only when nothing could be indexed although there was something to index."""
        return not (self.failed and self.indexed == 0 and self.unchanged == 0)

    def to_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "spaces": self.spaces,
            "discovered": self.discovered,
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "missing": self.missing,
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "ignored": self.ignored,
            "duplicates": self.duplicates,
            "repaired": self.repaired,
            "unfed": self.unfed,
            "unreadable_folders": len(self.unreadable_folders),
            "seconds": round(self.seconds, 2),
            "notes": self.notes,
            **(
                {"stage_seconds": {k: round(v, 2) for k, v in self.stage_seconds.items()}} if self.stage_seconds else {}
            ),
            "device": self.device,
            "precisions": self.precisions,
        }


@dataclass(frozen=True)
class PendingTile:
    source: TileSource
    stat_signature: str
    spaces: tuple[str, ...]  # spaces this tile needs vectors for
    # The catalogued content digest, when the tile already has vectors in every space: a re-read that finds
    # the same digest means the files were only touched, and the vectors are kept.
    complete_digest: str | None = None


# -- plan ---------------------------------------------------------------------------------------------


@dataclass
class Plan:
    pending: list[PendingTile]
    unchanged: int
    # Catalogued beneath the paths given but not found in this run: ids of tiles, and of problems of files
    gone_tiles: list[int]
    gone_problems: list[int]
    duplicates: int = 0  # discovered sources dropped: another source of this run is the same tile
    # Catalogued rows that are another copy of a tile found in this run (the same resolved file and window
    # under another root or symbolic link): dropped, one row per tile is kept.
    duplicate_tiles: list[int] = field(default_factory=list)
    duplicate_problems: list[int] = field(default_factory=list)


def plan(
    store: IndexStore, found: Discovery, spaces: Sequence[str], recipes: dict[str, InputRecipe] | None = None
) -> Plan:
    """The discovered tiles against the catalogue, by size and mtime: no file is read.

    A tile is its resolved file (or folder) and window: the same file found under two roots, or through a
    symbolic link, is one tile. A discovered tile already catalogued under another root keeps that row (and
    its vectors); extra catalogued copies of it are dropped. A space whose bands a catalogued tile lacks
    (an RGB-only file, for a multispectral space) is not needed for it."""
    recipes = recipes if recipes is not None else {space: get_card(space).input for space in spaces}
    resolver = IdentityResolver()
    sources, duplicates = _unique_tiles(found.sources, resolver)
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(
                catalog.tiles.c.id,
                catalog.tiles.c.root,
                catalog.tiles.c.key,
                catalog.tiles.c.stat_signature,
                catalog.tiles.c.digest,
                catalog.tiles.c.bands,
            )
        ).all()
        problem_rows = conn.execute(
            select(catalog.problems.c.id, catalog.problems.c.root, catalog.problems.c.key)
        ).all()
        tiles_beneath = _catalogued_beneath(conn, catalog.tiles, found.paths)
        problems_beneath = _catalogued_beneath(conn, catalog.problems, found.paths)
        have: dict[int, set[str]] = {}
        for tile_id, space in conn.execute(select(catalog.vectors.c.tile_id, catalog.vectors.c.space)):
            have.setdefault(tile_id, set()).add(space)
    wanted = set(sources)
    known = {(row.root, row.key): row for row in rows}
    rows_of: dict[str, list] = {}
    for row in rows:
        identity = resolver.tile_identity(row.root, row.key)
        if identity in wanted:
            rows_of.setdefault(identity, []).append(row)
    problems_of: dict[str, list] = {}
    for row in problem_rows:
        identity = resolver.tile_identity(row.root, row.key)
        if identity in wanted:
            problems_of.setdefault(identity, []).append(row)

    pending, unchanged, duplicate_tiles, duplicate_problems, kept_sources = [], 0, [], [], []
    signatures: dict[tuple, str] = {}
    for identity, source in sources.items():
        copies = rows_of.get(identity, [])
        entry = known.get((str(source.root), source.key)) or min(copies, key=lambda r: r.id, default=None)
        if entry is not None and (entry.root, entry.key) != (str(source.root), source.key):
            source = replace(source, root=Path(entry.root), key=entry.key)  # the tile keeps its catalogued row
        kept_sources.append(source)
        duplicate_tiles += [row.id for row in copies if row.id != entry.id]
        duplicate_problems += [
            row.id for row in problems_of.get(identity, []) if (row.root, row.key) != (str(source.root), source.key)
        ]
        files = (source.files, source.remote_identity)  # the chips of a scene share their files
        try:
            if files not in signatures:
                signatures[files] = source.stat_signature()
            signature = signatures[files]
        except OSError:
            signature = ""  # unreadable now: the read reports why
        feedable = feedable_spaces(spaces, recipes, entry.bands if entry is not None else None)
        if entry is not None and entry.stat_signature == signature:
            needed = tuple(s for s in feedable if s not in have.get(entry.id, set()))
            if not needed:
                unchanged += 1
                continue
            pending.append(PendingTile(source, signature, needed))
        else:
            complete = entry is not None and set(feedable) <= have.get(entry.id, set())
            pending.append(PendingTile(source, signature, tuple(spaces), entry.digest if complete else None))
    # By location, not by (root, key): a tile catalogued under a folder above the path given is found again
    # under another root, and is not gone.
    found_at = {location for s in kept_sources for location in tile_locations(str(s.root), s.key)}
    gone_tiles, gone_problems = (
        [
            row_id
            for row_id, (root, key) in beneath.items()
            if row_id not in dropped and found_at.isdisjoint(tile_locations(root, key))
        ]
        for beneath, dropped in ((tiles_beneath, set(duplicate_tiles)), (problems_beneath, set(duplicate_problems)))
    )
    return Plan(pending, unchanged, gone_tiles, gone_problems, duplicates, duplicate_tiles, duplicate_problems)


def _unique_tiles(found: Sequence[TileSource], resolver: IdentityResolver) -> tuple[dict[str, TileSource], int]:
    """identity -> source, one source per tile: of several ways to one file, the one that takes no symbolic
    link (its own location is its identity), else the first found."""
    unique: dict[str, TileSource] = {}
    for source in found:
        identity = resolver.tile_identity(str(source.root), source.key)
        if identity not in unique:
            unique[identity] = source
        elif not _is_direct(unique[identity], identity) and _is_direct(source, identity):
            unique[identity] = source
    return unique, len(found) - len(unique)


def _is_direct(source: TileSource, identity: str) -> bool:
    return identity in tile_locations(str(source.root), source.key)


def feedable_spaces(spaces: Sequence[str], recipes: dict[str, InputRecipe], bands: str | None) -> tuple[str, ...]:
    """The spaces a tile with the catalogued `bands` can feed (all of them while its bands are unknown)."""
    if not bands:
        return tuple(spaces)
    present = set(bands.split(","))
    return tuple(s for s in spaces if s not in recipes or set(recipes[s].bands) <= present)


# SQLite nests an OR of n terms n deep, and refuses expressions deeper than 1000.
TERMS_PER_QUERY = 300


def _catalogued_beneath(conn: Connection, table: Table, paths: Sequence[Path]) -> dict[int, tuple[str, str]]:
    """id -> (root, key) of the rows of `table` (tiles or problems) whose tile lies at or beneath one of
    `paths` (resolved): every row of a root at or beneath a path; under a root above a path, the rows keyed
    by the path relative to it, by what lies beneath it ('/': files of a folder, granules of a zipped SAFE,
    items of a FeatureCollection) and by its chips ('#')."""
    roots = set(conn.execute(select(table.c.root).distinct()).scalars())
    given = {str(path) for path in paths}
    whole_roots = [root for root in roots if root in given or not given.isdisjoint(map(str, Path(root).parents))]
    within = sorted(
        {
            (str(folder), path.relative_to(folder).as_posix())
            for path in paths
            for folder in path.parents
            if str(folder) in roots
        }
    )
    # One flat term per range of the (root, key) index: SQLite then reads range by range; an OR nested
    # inside a term would make it read every row of the root instead.
    terms = []
    for root, relative in within:
        at_root = table.c.root == root
        terms += [
            at_root & (table.c.key == relative),
            at_root & _begins_with(table.c.key, relative + "/"),
            at_root & _begins_with(table.c.key, relative + "#"),
        ]
    columns = (table.c.id, table.c.root, table.c.key)
    queries = [select(*columns).where(table.c.root.in_(whole_roots))] if whole_roots else []
    queries += [
        select(*columns).where(or_(*terms[start : start + TERMS_PER_QUERY]))
        for start in range(0, len(terms), TERMS_PER_QUERY)
    ]
    return {row.id: (row.root, row.key) for query in queries for row in conn.execute(query)}


def _begins_with(column, prefix: str):
    """`column LIKE 'prefix%'` as a range an index serves (and without LIKE's wildcards and case folding)."""
    return (column >= prefix) & (column < prefix[:-1] + chr(ord(prefix[-1]) + 1))


def check_weights(
    store: IndexStore, spaces: Sequence[str], encoders: dict[str, "Encoder"], checkpoint: str | Path | None
) -> None:
    """Refuse a space filled by other weights before anything is written, also when there is nothing to
    embed (no model is loaded then, so ensure_space never sees the weights). The identity is taken from the
    weights file without loading it: a hub blob is named by its sha256, a local file is hashed once."""
    from msearch.models.loading import weights_file, weights_status

    existing = store.manifests()
    for space in spaces:
        if space not in existing:
            continue  # a new space: ensure_space creates it
        if space in encoders:
            identity = encoders[space].identity
            store.check_space(space, identity.card, identity.weights_sha256, encoders[space].dim)
            continue
        card = get_card(space)
        if not checkpoint and weights_status(card) != "cached":
            continue  # not on this machine: known only after a download, which a model load checks (ensure_space)
        store.check_space(space, card.name, weights_digest(weights_file(card, checkpoint)), card.embed_dim)


def load_encoder(
    space: str, checkpoint: str | Path | None = None, device="cpu", precision: str | None = None
) -> "Encoder":
    """msearch.models.load_encoder, imported when first called: torch loads only when a model is needed."""
    from msearch.models import load_encoder as load

    return load(space, checkpoint, device, precision)


# -- read (in worker processes) -----------------------------------------------------------------------


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


class PreparedTiles:
    """Reads pending tiles and selects the bands of the spaces each needs, as stored (the recipe runs on the
    encoder's device: `Encoder.stage`), in batches of `batch_size`. The unit of work a reader process takes is
    a scene: all chips of a scene go to one reader, which decodes each block of it once (`read_scene`); whole
    tiles go in groups of `batch_size`. A tile that lacks what a space needs (an RGB file, for a multispectral
    space) feeds the others; one that feeds none, or whose bands are not finite, fails here, alone. Plain
    Python (no torch): reader processes get it through `msearch.indexer.reader_processes`."""

    def __init__(
        self, pending: list[PendingTile], recipes: dict[str, InputRecipe], settings: ReadSettings, batch_size: int
    ):
        self.recipes, self.settings, self.batch_size = recipes, settings, batch_size
        self.units = scene_units(pending, batch_size)

    def __len__(self) -> int:
        return sum(len(unit) for unit in self.units)

    def __iter__(self) -> Iterator[list[dict]]:
        return self.batches()

    def batches(self, share: int = 0, shares: int = 1) -> Iterator[list[dict]]:
        """Batches of `batch_size` results from every `shares`-th unit, starting at `share` (one reader's part)."""
        batch = []
        for result in self.results(share, shares):
            batch.append(result)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def results(self, share: int = 0, shares: int = 1) -> Iterator[dict]:
        """One result per tile, unit by unit."""
        for unit in self.units[share::shares]:
            yield from self._results(unit)

    def _results(self, unit: list[PendingTile]):
        items = {item.source.key: item for item in unit}
        scenes = [unit] if unit[0].source.window is not None else [[item] for item in unit]
        for scene in scenes:
            remaining = dict.fromkeys(item.source.key for item in scene)
            try:
                for source, outcome in read_scene([item.source for item in scene], self.settings):
                    del remaining[source.key]
                    yield self._result(items[source.key], outcome)
            except Exception as exc:  # a scene that breaks off mid-way: its chips not yet read fail with it
                for key in remaining:
                    yield self._result(items[key], exc)

    def _result(self, item: PendingTile, tile: Tile | Exception) -> dict:
        from msearch.models.recipe import stored_bands  # imports torch: only when a tile is read

        inputs, unfed = {}, {}
        try:
            if isinstance(tile, Exception):
                raise tile
            digest = content_digest(item.source.files, item.source.remote_identity)
            for space in item.spaces:
                try:
                    inputs[space] = stored_bands(self.recipes[space], tile.pixels)
                except CannotFeed as exc:
                    unfed[space] = str(exc)
            if not inputs:
                reasons = list(unfed.values())
                if len(set(reasons)) == 1:
                    raise ValueError(reasons[0])
                raise ValueError("; ".join(f"{space}: {why}" for space, why in unfed.items()))
        except SkipTile as exc:
            return {"item": item, "skipped": str(exc)}
        except Exception as exc:  # any failure of one tile is recorded, never the end of the run
            return {"item": item, "failed": _reason(exc)}
        row = tile_row(tile, item.stat_signature, digest)
        pixels = tile.pixels
        return {
            "item": item,
            "row": row,
            "inputs": inputs,
            "unfed": unfed,
            "offset": pixels.offset,
            "full_scale": pixels.full_scale,
        }


def scene_units(pending: list[PendingTile], tiles_per_unit: int) -> list[list[PendingTile]]:
    """All chips of each scene together, and whole tiles in groups of `tiles_per_unit`, in the order of
    their first appearance."""
    scenes: dict[tuple, list[PendingTile]] = {}
    tiles: list[PendingTile] = []
    for item in pending:
        if item.source.window is None:
            tiles.append(item)
        else:
            scenes.setdefault(item.source.scene, []).append(item)
    chunks = [tiles[start : start + tiles_per_unit] for start in range(0, len(tiles), tiles_per_unit)]
    return [*scenes.values(), *chunks]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return f"permission denied ({exc.filename or exc})"
    if isinstance(exc, FileNotFoundError):
        return f"file vanished during the run ({exc.filename or exc})"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, ValueError) else f"{type(exc).__name__}: {text}"


def tile_row(tile: Tile, stat_signature: str, digest: str) -> dict:
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
        "origin_x": tile.origin[0] if tile.origin else None,
        "origin_y": tile.origin[1] if tile.origin else None,
        "pixel_height": tile.pixel_height,
    }


def default_workers() -> int:
    """Reader processes when --workers is not given: none on two cores or fewer, where a reader can only take
    a core from the encoder, whose threads then all wait for it at every barrier (measured with
    bench/index_throughput.py on 2 cores: 0.92 of the bare encoder's rate reading in the main process,
    0.87 with one reader process); otherwise the cores the encoder's two-thread minimum leaves, up to 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 2))


# -- write ----------------------------------------------------------------------------------------------


class CatalogueWriter:
    def __init__(self, store: IndexStore, run_id: int, views: dict[str, SpaceIndex]):
        self.store, self.run_id, self.views = store, run_id, views

    def write_batch(
        self, done: list[tuple[dict, dict[str, "object"]]], problems: list[tuple[TileSource, str, str]]
    ) -> None:
        """One transaction: tile rows, their vectors per space, and the problems of this batch."""
        self.store.write_batch(
            self.run_id,
            done,
            [(str(source.root), source.key, kind, reason) for source, kind, reason in problems],
            self.views,
        )


# -- run ------------------------------------------------------------------------------------------------


@dataclass
class Progress:
    """Where a run stands: the total is known once planning is done; tiles are counted as they are read,
    and as their batch is encoded and committed."""

    total: int = 0  # tiles to read
    read: int = 0
    committed: int = 0


ProgressCallback = Callable[[Progress], None]


class NothingToIndex(Exception):
    """The paths given hold no tile of any layout msearch reads."""


class RunInterrupted(Exception):
    """The run was interrupted (Ctrl-C); what was committed stays, and the same command resumes it."""

    def __init__(self, summary: RunSummary):
        super().__init__(f"interrupted: {_count(summary.committed, 'tile')} committed, run the same command to resume")
        self.summary = summary


def index_archive(
    paths: Sequence[str | Path],
    index: str | Path | None = None,
    models: Sequence[str] | None = None,
    checkpoint: str | Path | None = None,
    settings: ReadSettings = ReadSettings(),
    batch_size: int | None = None,
    workers: int | None = None,
    prune: bool = False,
    progress: ProgressCallback | None = None,
    encoders: dict[str, "Encoder"] | None = None,
    ray_address: str | None = None,
    ray_actors: int | None = None,
    device: str = "auto",
    precision: str | None = None,
    catalogue: str | None = None,
    stac_search: StacSearch | None = None,
) -> RunSummary:
    """Index the tiles under `paths` into the index directory. Incremental and resumable: run it again
    after a crash, or after new acquisitions land, and it embeds exactly what is missing. Encoders (and
    torch) are loaded only when something needs embedding.
    `paths` are folders and files, or URLs of STAC documents; `stac_search` adds the items a STAC API finds.
    `encoders` lets a caller that already holds loaded encoders (keyed by space) reuse them; otherwise they
    are loaded on `device` (auto, cpu, cuda, cuda:N) in `precision` (default: bf16 on CUDA, fp32 on the CPU).
    `batch_size` defaults to the device's (msearch.models.device.DEFAULT_BATCH_SIZE).
    `ray_address` (local, auto or HOST:PORT) reads and encodes on a Ray cluster instead of in this process
    (msearch.indexer.distributed); everything else, from the plan to the search indexes, stays here.
    `catalogue` is the catalogue's URL (default: $MSEARCH_CATALOGUE, else catalogue.sqlite in the index
    directory). One run at a time writes to a catalogue: a second is refused (CatalogueBusyError).

    Raises FileNotFoundError for a path that does not exist and NothingToIndex when the paths hold no tile
    (both before anything is written), RunInterrupted on Ctrl-C (the run is recorded as interrupted)."""
    started = time.perf_counter()
    if ray_address:
        # Ray's encoder actors run on the GPU Ray gives them, else on a CPU (distributed.actor_device), in the
        # precision of the driver's encoders (fp32 unless --precision bf16), which the manifests record.
        if device not in ("auto", "cpu"):
            raise ValueError(
                "--ray encodes on the cluster's actors (each on its GPU where there are GPUs): leave out --device"
            )
        device = "cpu"
    # Checked first: a GPU asked for by name that is not there is an error before anything is written or
    # loaded. 'auto' and 'cpu' cannot fail: they are resolved (torch imported) only when something needs
    # embedding, so that an unchanged re-check imports no torch.
    if encoders:
        device = next(iter(encoders.values())).device
    elif parse_device(device)[0] == "cuda":
        device = resolve_device(device)
    workers = default_workers() if workers is None else workers
    urls = [str(p) for p in paths if is_remote(str(p))]
    roots = [Path(p) for p in paths if not is_remote(str(p))]
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist")
    spaces = list(encoders) if encoders else list(models or DEFAULT_SPACES)
    if checkpoint and len(spaces) != 1:
        raise ValueError("--checkpoint names the weights of one model: give exactly one --model with it")
    recipes = {space: (encoders[space].card if encoders else get_card(space)).input for space in spaces}
    # Remote documents and searches first: a search that fails leaves no trace in the index.
    remote_sources = discover_urls(urls, settings) if urls else []
    remote_sources += search_sources(stac_search, settings) if stac_search else []
    existing = _existing_store(index, catalogue)
    try:
        token = KNOWN_GRID_SIZES.set(_catalogued_grid_sizes(existing) if existing else {})
        try:
            found = discover(roots, settings)
        finally:
            KNOWN_GRID_SIZES.reset(token)
        found.sources += remote_sources
        if not found.sources and not (existing and _catalogued_anything_beneath(existing, found.paths)):
            raise NothingToIndex(nothing_found(roots, found))
    finally:
        if existing:
            existing.engine.dispose()
    request = RunRequest(
        roots=roots,
        urls=urls,
        stac_search=stac_search,
        spaces=spaces,
        recipes=recipes,
        checkpoint=checkpoint,
        settings=settings,
        batch_size=batch_size,
        workers=workers,
        prune=prune,
        progress=progress,
        ray_address=ray_address,
        ray_actors=ray_actors,
        device=device,
        precision=precision,
        started=started,
    )
    store = IndexStore(index, create=True, catalogue=catalogue)
    store.lock_for_writing("msearch index")
    try:
        return _index_locked(store, request, found, encoders or {})
    finally:
        store.unlock()


@dataclass(frozen=True)
class RunRequest:
    """What an `index_archive` run was asked for, its arguments checked (see there)."""

    roots: list[Path]
    urls: list[str]
    stac_search: StacSearch | None
    spaces: list[str]
    recipes: dict[str, InputRecipe]
    checkpoint: str | Path | None
    settings: ReadSettings
    batch_size: int | None  # None: the device's default, once the device is known
    workers: int
    prune: bool
    progress: ProgressCallback | None
    ray_address: str | None
    ray_actors: int | None
    device: object  # 'auto'/'cpu' until something needs embedding, else a torch.device
    precision: str | None
    started: float  # time.perf_counter() when the run was called

    def paths_json(self) -> str:
        """The run's paths as `msearch info` lists them (URLs without credentials)."""
        return json.dumps(
            [str(r.resolve()) for r in self.roots]
            + [redact(u) for u in self.urls]
            + ([self.stac_search.describe()] if self.stac_search else [])
        )


def _index_locked(store: IndexStore, request: RunRequest, found: Discovery, encoders: dict[str, "Encoder"]):
    """The run, with the catalogue locked for writing: `encoders` holds those the caller gave, and gets the
    ones this run loads."""
    with store.engine.begin() as conn:
        run_id = conn.execute(
            catalog.runs.insert().values(
                started_at=_now(),
                status="running",
                paths=request.paths_json(),
                spaces=json.dumps(request.spaces),
            )
        ).inserted_primary_key[0]
    spaces, settings, progress, checkpoint = request.spaces, request.settings, request.progress, request.checkpoint
    device, batch_size = request.device, request.batch_size  # resolved below once something needs embedding
    summary = RunSummary(run_id=run_id, spaces=spaces)
    summary.discovered, summary.ignored = len(found.sources), len(found.ignored)
    summary.ignored_files = [str(path) for path in found.ignored[:IGNORED_NAMED]]
    summary.unreadable_folders = [(str(folder), why) for folder, why in found.unreadable]
    views: dict[str, SpaceIndex] = {}
    status = "failed"
    try:
        planned = plan(store, found, spaces, request.recipes)
        pending, summary.unchanged, gone = planned.pending, planned.unchanged, planned.gone_tiles
        summary.duplicates = planned.duplicates
        prune_now = request.prune and bool(gone or planned.gone_problems)
        repair = bool(planned.duplicate_tiles or planned.duplicate_problems)
        if not request.prune:
            summary.missing = len(gone)
        if progress:
            progress(Progress(total=len(pending)))
        check_weights(store, spaces, encoders, checkpoint)
        if pending and isinstance(device, str):
            device = resolve_device(device)
        if not isinstance(device, str):
            summary.device = describe_device(device)
            batch_size = batch_size or default_batch_size(device)
        if pending or prune_now or repair:
            for space in spaces:
                if pending and space not in encoders:
                    encoders[space] = load_encoder(space, checkpoint, device, request.precision)
            for space in spaces:
                if space in encoders:
                    encoder = encoders[space]
                    identity = encoder.identity
                    store.ensure_space(space, identity.card, identity.weights_sha256, encoder.dim, encoder.precision)
                    summary.precisions[space] = encoder.precision
            views = {
                space: store.open_space(space) for space in store.manifests() if space in spaces or prune_now or repair
            }
            with store.engine.begin() as conn:
                store.delete_tiles(conn, planned.duplicate_tiles, views)
                for chunk in id_chunks(planned.duplicate_problems):
                    conn.execute(delete(catalog.problems).where(catalog.problems.c.id.in_(chunk)))
                if prune_now:
                    store.delete_tiles(conn, gone, views)
                    for chunk in id_chunks(planned.gone_problems):
                        conn.execute(delete(catalog.problems).where(catalog.problems.c.id.in_(chunk)))
            summary.repaired = len(planned.duplicate_tiles)
            summary.removed = len(gone) if prune_now else 0
            if request.ray_address and pending:
                from msearch.indexer.distributed import index_on_ray  # imports Ray: only when it is asked for

                index_on_ray(
                    store,
                    summary,
                    pending,
                    encoders,
                    views,
                    settings,
                    batch_size,
                    progress,
                    address=request.ray_address,
                    actors=request.ray_actors,
                    checkpoint=checkpoint,
                )
            else:
                _run_batches(store, summary, pending, encoders, views, settings, batch_size, request.workers, progress)
            for space, view in views.items():
                if (
                    ann.choose_kind(view.ntotal, view.ann.exact_threshold, view.ann.compressed_threshold)
                    != view.ann.kind
                ):
                    info = rebuild_ann(store, view, encoders.get(space))
                    summary.notes.append(f"{space}: {view.ntotal} vectors, now searched with {info.describe()}")
            if encoders:
                from msearch.models.numpy_text_export import export_numpy_text_or_say_why

                for space, encoder in encoders.items():  # so that queries need no torch (msearch.models.numpy_text)
                    why_not = export_numpy_text_or_say_why(encoder)
                    if why_not:
                        summary.notes.append(
                            f"{space}: its text tower stays on torch, so queries load torch ({why_not})"
                        )
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise RunInterrupted(summary) from None
    finally:
        for view in views.values():
            store.save_space(view)
        summary.seconds = time.perf_counter() - request.started
        finished = (
            catalog.runs.update()
            .where(catalog.runs.c.id == run_id)
            .values(finished_at=_now(), status=status, summary=json.dumps(summary.to_dict()))
        )
        run_transaction(store.engine, lambda conn: conn.execute(finished), "the run's summary")
    for space, view in views.items():
        if ann.needs_retrain(view.ann, view.ntotal):
            summary.notes.append(
                f"{space}: its {view.ann.kind} index was trained on {view.ann.trained_on} vectors "
                f"and now holds {view.ntotal}: run `msearch index --rebuild-ann` to retrain it"
            )
    return summary


def _existing_store(index: str | Path | None, catalogue: str | None) -> IndexStore | None:
    """The index's catalogue if there is one yet (nothing is created); None for a first run."""
    try:
        return IndexStore(index, create=False, catalogue=catalogue)
    except (FileNotFoundError, CatalogueError):
        return None  # an unusable catalogue URL is reported when the run opens it to write


def _catalogued_grid_sizes(store: IndexStore) -> dict[str, tuple[int, int]]:
    """stat signature -> (width, height) of the whole (not chipped) tiles of an existing index."""
    tiles = catalog.tiles
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(tiles.c.stat_signature, tiles.c.width, tiles.c.height).where(
                tiles.c.window.is_(None), tiles.c.width.is_not(None), tiles.c.height.is_not(None)
            )
        )
        return {row.stat_signature: (row.width, row.height) for row in rows}


def _catalogued_anything_beneath(store: IndexStore, paths: Sequence[Path]) -> bool:
    """Whether an existing index holds tiles or problems beneath `paths`: a folder emptied since it was
    indexed is not "nothing", its tiles are gone (and pruned with --prune)."""
    with store.engine.connect() as conn:
        return any(_catalogued_beneath(conn, table, paths) for table in (catalog.tiles, catalog.problems))


def nothing_found(roots: Sequence[Path], found: Discovery) -> str:
    """Why a run found nothing: the paths, the layouts looked for, and what was there instead."""
    where = ", ".join(str(root) for root in roots)
    message = f"found no rasters under {where}; layouts read: {LAYOUTS_READ}"
    if found.ignored:
        names = ", ".join(path.name for path in found.ignored[:IGNORED_NAMED])
        more = f" and {len(found.ignored) - IGNORED_NAMED} more" if len(found.ignored) > IGNORED_NAMED else ""
        message += f". {_count(len(found.ignored), 'file')} there: {names}{more}"
    else:
        message += ". The folder holds no files" if len(roots) == 1 and roots[0].is_dir() else ""
    for folder, why in found.unreadable:
        message += f". Could not list {folder}: {why}"
    return message


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def rebuild_ann(store: IndexStore, view: SpaceIndex, encoder: Encoder | None = None, **settings) -> AnnInfo:
    """Retrain and retune a space's index. With its encoder at hand, the recall target is measured on encoded
    text queries (what users search with) rather than on perturbed image vectors."""
    from msearch.models.prompts import query_like_texts

    queries = None
    if encoder is not None:
        queries = encoder.encode_texts(query_like_texts(encoder.card.languages, ann.TUNING_QUERIES))
    return store.rebuild_ann(view, sample_queries=queries, **settings)


def rebuild_indexes(
    index: str | Path | None = None,
    spaces: Sequence[str] | None = None,
    checkpoints: dict[str, str | Path] | None = None,
    catalogue: str | None = None,
    **settings,
) -> list[str]:
    """`msearch index --rebuild-ann`: retrain and retune the search index of each space (default: all) from
    its stored vectors. Returns one line per space saying what it is searched with now."""
    store = IndexStore(index, create=False, catalogue=catalogue)
    store.lock_for_writing("msearch index --rebuild-ann")
    try:
        return _rebuild_locked(store, spaces, checkpoints, settings)
    finally:
        store.unlock()


def _rebuild_locked(store, spaces, checkpoints, settings) -> list[str]:
    notes = []
    for space in spaces or list(store.manifests()):
        manifest = store.manifest(space)
        view = store.open_space(space)
        encoder, why_not = None, ""
        # Below the exact threshold the index is exact search: there is nothing to tune, so no model is loaded.
        tuned = ann.choose_kind(
            view.ntotal,
            settings.get("exact_threshold", view.ann.exact_threshold),
            settings.get("compressed_threshold", view.ann.compressed_threshold),
        )
        try:
            if tuned != "flat":
                encoder = load_encoder(manifest.card, (checkpoints or {}).get(space))
        except ModelNotAvailableError as exc:
            why_not = f" (tuned on perturbed image vectors, not text queries: {exc})"
        if encoder is not None and encoder.identity.weights_sha256 != manifest.weights_sha256:
            raise SpaceMismatchError(
                f"space {space!r} was built with {manifest.identity}, but the weights found "
                f"now are {encoder.identity}: pass the weights it was built with"
            )
        info = rebuild_ann(store, view, encoder, **settings)
        store.save_space(view)
        notes.append(f"{space}: {view.ntotal} vectors, searched with {info.describe()}{why_not}")
    return notes


def _run_batches(store, summary, pending, encoders, views, settings, batch_size, workers, progress) -> None:
    if not pending:
        return
    recipes = {space: encoder.card.input for space, encoder in encoders.items()}
    tiles = PreparedTiles(pending, recipes, settings, batch_size)
    state = Progress(total=len(pending))
    # Page-locked batches copy to a GPU without a bounce buffer, and asynchronously (Encoder.stage).
    pin_memory = any(encoder.device.type == "cuda" for encoder in encoders.values())
    writer = CatalogueWriter(store, summary.run_id, views)
    last_save = time.monotonic()
    batches = _read_batches(tiles, batch_size, workers, state, progress, pin_memory)
    current = _stage_batch(next(batches, None), encoders)
    while current is not None:
        # Queue this batch's forward passes, then read and stage the next batch while the device computes
        # (on CUDA; on the CPU the passes have run by the time _launch returns).
        launched = _launch(current, encoders)
        following = _stage_batch(next(batches, None), encoders)
        embedded = _finish(current, launched, encoders)
        with _interrupt_after():
            writer.write_batch(embedded.done, embedded.problems)
            summary.record(embedded)
            state.committed += current.size
        if progress:
            progress(state)
        if time.monotonic() - last_save > FAISS_CHECKPOINT_SECONDS:
            for view in views.values():
                store.save_space(view)
            last_save = time.monotonic()
        current = following


@dataclass
class _StagedBatch:
    size: int
    problems: list[tuple[TileSource, str, str]]  # (source, "skipped" or "error", reason)
    embed: list[dict]  # read results to embed
    touched: list[dict]  # read results whose files were only touched: their vectors are kept
    needing: dict[str, list[dict]]  # space -> the results of `embed` that need a vector in it
    staged: dict[str, object]  # space -> its encoder's StagedBatch of those results
    unfed: dict[str, int]  # space -> tiles of `embed` and `touched` that lack its bands


def _stage_batch(batch: list[dict] | None, encoders: dict[str, Encoder]) -> _StagedBatch | None:
    """Sort a batch of read results, and start moving what each space embeds to its encoder's device."""
    if batch is None:
        return None
    problems = [
        (r["item"].source, "skipped", r["skipped"]) if "skipped" in r else (r["item"].source, "error", r["failed"])
        for r in batch
        if "row" not in r
    ]
    ok = [r for r in batch if "row" in r]
    # A tile whose files were only touched (same content, all spaces present) keeps its vectors.
    touched = [r for r in ok if r["item"].complete_digest == r["row"]["digest"]]
    embed = [r for r in ok if r not in touched]
    needing = {space: [r for r in embed if space in r["inputs"]] for space in encoders}
    needing = {space: results for space, results in needing.items() if results}
    staged = {
        space: encoders[space].stage(
            [r["inputs"][space] for r in results], [r["offset"] for r in results], [r["full_scale"] for r in results]
        )
        for space, results in needing.items()
    }
    unfed: dict[str, int] = {}
    for r in ok:
        for space in r["unfed"]:
            unfed[space] = unfed.get(space, 0) + 1
    return _StagedBatch(len(batch), problems, embed, touched, needing, staged, unfed)


@dataclass
class EmbeddedBatch:
    """What one batch of read tiles (PreparedTiles items) gives the catalogue."""

    done: list[tuple[dict, dict[str, np.ndarray]]]  # (tile row, vector by space): embedded, then kept
    problems: list[tuple[TileSource, str, str]]  # (source, "skipped" or "error", reason)
    embedded: int  # tiles of `done` with new vectors; the others only had their files touched
    unfed: dict[str, int] = field(default_factory=dict)  # space -> tiles of `done` that lack its bands


def embed_batch(batch: list[dict], encoders: dict[str, "Encoder"]) -> EmbeddedBatch:
    """Problems recorded, touched tiles kept, the rest encoded: the recipe and one forward pass per space,
    on each encoder's device."""
    staged = _stage_batch(batch, encoders)
    return _finish(staged, _launch(staged, encoders), encoders)


def _launch(staged: _StagedBatch, encoders: dict[str, "Encoder"]) -> dict[str, "torch.Tensor"]:
    """Queue each space's forward pass of a staged batch (on CUDA, without waiting for it)."""
    return {space: encoders[space].launch(batch) for space, batch in staged.staged.items()}


def _finish(staged: _StagedBatch, launched: dict[str, "torch.Tensor"], encoders: dict[str, "Encoder"]) -> EmbeddedBatch:
    """Wait for the launched forward passes: the batch's rows with their vectors, and its problems."""
    vectors = {id(r): {} for r in staged.embed}
    for space, features in launched.items():
        for r, vector in zip(staged.needing[space], encoders[space].collect(features)):
            vectors[id(r)][space] = vector
    done = [(r["row"], vectors[id(r)]) for r in staged.embed] + [(r["row"], {}) for r in staged.touched]
    return EmbeddedBatch(done, staged.problems, len(staged.embed), staged.unfed)


@contextlib.contextmanager
def _interrupt_after():
    """Ctrl-C waits for the block (a batch's commit and its count) to finish: interrupted inside it, the
    commit could land uncounted, and SQLAlchemy would print a traceback while resetting the connection."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _read_batches(tiles: PreparedTiles, batch_size: int, workers: int, state: Progress, progress, pin_memory: bool):
    """Batches of read tiles. Read in the main process, the count of tiles read moves tile by tile; with
    reader processes, a batch at a time as it arrives (their stored bands as tensors, pinned when
    `pin_memory`)."""
    if not workers:
        batch = []
        for result in tiles.results():
            batch.append(result)
            state.read += 1
            if progress:
                progress(state)
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
        return
    from msearch.indexer.reader_processes import reader_loader  # torch, only when there is something to read

    for batch in reader_loader(tiles, workers, pin_memory):
        state.read += len(batch)
        if progress:
            progress(state)
        yield batch


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
