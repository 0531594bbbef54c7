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

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from sqlalchemy import Table, delete, or_, select
from sqlalchemy.engine import Connection

from msearch.indexer.readers import Discovery, discover, discover_urls, read_scene
from msearch.indexer.readers.remote import is_remote, redact
from msearch.indexer.stac_search import StacSearch, search_sources
from msearch.indexer.tiles import ReadSettings, SkipTile, Tile, TileSource
from msearch.models import DEFAULT_MODEL, Encoder, InputRecipe, ModelNotAvailableError, get_card, load_encoder
from msearch.models.device import default_batch_size, describe_device, resolve_device
from msearch.models.hub import weights_digest
from msearch.models.loading import weights_file, weights_status
from msearch.models.numpy_text_export import export_numpy_text_or_say_why
from msearch.models.recipe import stored_bands
from msearch.schema import catalog
from msearch.schema.bands import canonical_order
from msearch.store import ann
from msearch.store.ann import AnnInfo
from msearch.store.catalogue import run_transaction
from msearch.store.index_store import IndexStore, SpaceIndex, SpaceMismatchError, id_chunks

DEFAULT_SPACES = (DEFAULT_MODEL, "rs-m-clip")  # English multispectral + ten-language RGB
FAISS_CHECKPOINT_SECONDS = 300.0


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
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what changed in the search indexes, or should
    device: str = ""  # where the encoders ran, e.g. "cuda:0 (NVIDIA H200)" or "cpu"
    precisions: dict[str, str] = field(default_factory=dict)  # space -> fp32 or bf16, for the spaces encoded
    stage_seconds: dict[str, float] = field(default_factory=dict)  # a Ray run's read, encode and merge time

    def record(self, batch: EmbeddedBatch) -> None:
        self.indexed += batch.embedded
        self.unchanged += len(batch.done) - batch.embedded
        for source, kind, reason in batch.problems:
            (self.skipped if kind == "skipped" else self.failed).append((source.key, reason))

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


def plan(store: IndexStore, found: Discovery, spaces: Sequence[str]) -> Plan:
    """The discovered tiles against the catalogue, by size and mtime: no file is read."""
    sources = found.sources
    roots = sorted({str(s.root) for s in sources})
    with store.engine.connect() as conn:
        known = {
            (row.root, row.key): (row.id, row.stat_signature, row.digest)
            for row in conn.execute(
                select(
                    catalog.tiles.c.id,
                    catalog.tiles.c.root,
                    catalog.tiles.c.key,
                    catalog.tiles.c.stat_signature,
                    catalog.tiles.c.digest,
                ).where(catalog.tiles.c.root.in_(roots))
            )
        }
        tiles_beneath = _catalogued_beneath(conn, catalog.tiles, found.paths)
        problems_beneath = _catalogued_beneath(conn, catalog.problems, found.paths)
        have: dict[int, set[str]] = {}
        for tile_id, space in conn.execute(select(catalog.vectors.c.tile_id, catalog.vectors.c.space)):
            have.setdefault(tile_id, set()).add(space)
    pending, unchanged = [], 0
    for source in sources:
        entry = known.get((str(source.root), source.key))
        try:
            signature = source.stat_signature()
        except OSError:
            signature = ""  # unreadable now: the read reports why
        if entry and entry[1] == signature:
            needed = tuple(s for s in spaces if s not in have.get(entry[0], set()))
            if not needed:
                unchanged += 1
                continue
            pending.append(PendingTile(source, signature, needed))
        else:
            complete = entry is not None and set(spaces) <= have.get(entry[0], set())
            pending.append(PendingTile(source, signature, tuple(spaces), entry[2] if complete else None))
    # By location, not by (root, key): a tile catalogued under a folder above the path given is found again
    # under another root, and is not gone.
    found_at = {location for s in sources for location in _tile_locations(str(s.root), s.key)}
    gone_tiles, gone_problems = (
        [row_id for row_id, (root, key) in rows.items() if found_at.isdisjoint(_tile_locations(root, key))]
        for rows in (tiles_beneath, problems_beneath)
    )
    return Plan(pending, unchanged, gone_tiles, gone_problems)


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


def _tile_locations(root: str, key: str) -> tuple[str, ...]:
    """Where the tile `key` under `root` lies, its chip suffix kept: root/key; or, when the key begins with
    the root's own name, perhaps beside the root: a folder given as PATH that is itself a tile (a SAFE
    product, a per-band folder) is keyed by its own name (`tiles.relative_key`)."""
    location = os.path.join(root, key)
    if key.split("/", 1)[0].split("#", 1)[0] == os.path.basename(root):
        return location, os.path.join(os.path.dirname(root), key)
    return (location,)


def check_weights(
    store: IndexStore, spaces: Sequence[str], encoders: dict[str, Encoder], checkpoint: str | Path | None
) -> None:
    """Refuse a space filled by other weights before anything is written, also when there is nothing to
    embed (no model is loaded then, so ensure_space never sees the weights). The identity is taken from the
    weights file without loading it: a hub blob is named by its sha256, a local file is hashed once."""
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


class PreparedTiles(torch.utils.data.IterableDataset):
    """Reads pending tiles and selects the bands of the spaces each needs, as stored (the recipe runs on the
    encoder's device: `Encoder.stage`), in batches of `batch_size`; a tile whose bands are missing or not
    finite fails here, alone. The unit of work a reader process takes is a scene: all chips of a scene go to
    one reader, which decodes each block of it once (`read_scene`); whole tiles go in groups of `batch_size`."""

    def __init__(
        self, pending: list[PendingTile], recipes: dict[str, InputRecipe], settings: ReadSettings, batch_size: int
    ):
        self.recipes, self.settings, self.batch_size = recipes, settings, batch_size
        self.units = scene_units(pending, batch_size)

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        units = self.units if worker is None else self.units[worker.id :: worker.num_workers]
        batch = []
        for unit in units:
            for result in self._results(unit):
                batch.append(result)
                if len(batch) == self.batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch

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
        try:
            if isinstance(tile, Exception):
                raise tile
            digest = content_digest(item.source.files, item.source.remote_identity)
            inputs = {space: stored_bands(self.recipes[space], tile.pixels) for space in item.spaces}
        except SkipTile as exc:
            return {"item": item, "skipped": str(exc)}
        except Exception as exc:  # any failure of one tile is recorded, never the end of the run
            return {"item": item, "failed": _reason(exc)}
        row = tile_row(tile, item.stat_signature, digest)
        return {"item": item, "row": row, "inputs": inputs, "offset": tile.pixels.offset}


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
    }


def default_workers() -> int:
    """Reader processes when --workers is not given: none on two cores or fewer, where a reader can only take
    a core from the encoder, whose threads then all wait for it at every barrier (measured with
    bench/index_throughput.py on 2 cores: 0.92 of the bare encoder's rate reading in the main process,
    0.87 with one reader process); otherwise the cores the encoder's two-thread minimum leaves, up to 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 2))


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # the encoder in the main process gets the cores


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


ProgressCallback = Callable[[int, int], None]  # (tiles done, tiles to do)


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
    encoders: dict[str, Encoder] | None = None,
    ray_address: str | None = None,
    ray_actors: int | None = None,
    device: str = "auto",
    precision: str | None = None,
    catalogue: str | None = None,
    stac_search: StacSearch | None = None,
) -> RunSummary:
    """Index the tiles under `paths` into the index directory. Incremental and resumable: run it again
    after a crash, or after new acquisitions land, and it embeds exactly what is missing.
    `paths` are folders and files, or URLs of STAC documents; `stac_search` adds the items a STAC API finds.
    `encoders` lets a caller that already holds loaded encoders (keyed by space) reuse them; otherwise they
    are loaded on `device` (auto, cpu, cuda, cuda:N) in `precision` (default: bf16 on CUDA, fp32 on the CPU).
    `batch_size` defaults to the device's (msearch.models.device.DEFAULT_BATCH_SIZE).
    `ray_address` (local, auto or HOST:PORT) reads and encodes on a Ray cluster instead of in this process
    (msearch.indexer.distributed); everything else, from the plan to the search indexes, stays here.
    `catalogue` is the catalogue's URL (default: $MSEARCH_CATALOGUE, else catalogue.sqlite in the index
    directory). One run at a time writes to a catalogue: a second is refused (CatalogueBusyError)."""
    if ray_address:
        # Ray's encoder actors run in fp32 on the GPU Ray gives them, else on a CPU (distributed.actor_device):
        # the driver's encoders, whose precision the manifests record, must match them.
        if device not in ("auto", "cpu") or precision not in (None, "fp32"):
            raise ValueError(
                "--ray encodes on the cluster's actors (each on its GPU where there are GPUs, in fp32): leave out "
                "--device and --precision"
            )
        device = "cpu"
    # Checked first: a device that is not there is an error before anything is written or loaded.
    device = next(iter(encoders.values())).device if encoders else resolve_device(device)
    batch_size = batch_size or default_batch_size(device)
    workers = default_workers() if workers is None else workers
    urls = [str(p) for p in paths if is_remote(str(p))]
    roots = [Path(p) for p in paths if not is_remote(str(p))]
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist")
    spaces = list(encoders) if encoders else list(models or DEFAULT_SPACES)
    if checkpoint and len(spaces) != 1:
        raise ValueError("--checkpoint names the weights of one model: give exactly one --model with it")
    # Remote documents and searches first: a search that fails leaves no trace in the index.
    remote_sources = discover_urls(urls, settings) if urls else []
    remote_sources += search_sources(stac_search, settings) if stac_search else []
    store = IndexStore(index, create=True, catalogue=catalogue)
    store.lock_for_writing("msearch index")
    try:
        return _index_locked(
            store,
            roots,
            spaces,
            checkpoint,
            settings,
            batch_size,
            workers,
            prune,
            progress,
            encoders,
            ray_address,
            ray_actors,
            urls,
            stac_search,
            remote_sources,
            device,
            precision,
        )
    finally:
        store.unlock()


def _index_locked(
    store,
    roots,
    spaces,
    checkpoint,
    settings,
    batch_size,
    workers,
    prune,
    progress,
    encoders,
    ray_address,
    ray_actors,
    urls,
    stac_search,
    remote_sources,
    device,
    precision,
):
    started = time.perf_counter()
    with store.engine.begin() as conn:
        run_id = conn.execute(
            catalog.runs.insert().values(
                started_at=_now(),
                status="running",
                paths=json.dumps(
                    [str(r.resolve()) for r in roots]
                    + [redact(u) for u in urls]
                    + ([stac_search.describe()] if stac_search else [])
                ),
                spaces=json.dumps(spaces),
            )
        ).inserted_primary_key[0]
    summary = RunSummary(run_id=run_id, spaces=spaces, device=describe_device(device))
    found = discover(roots, settings)
    found.sources += remote_sources
    summary.discovered, summary.ignored = len(found.sources), len(found.ignored)
    planned = plan(store, found, spaces)
    pending, summary.unchanged, gone = planned.pending, planned.unchanged, planned.gone_tiles
    prune_now = prune and bool(gone or planned.gone_problems)
    if not prune:
        summary.missing = len(gone)

    views: dict[str, SpaceIndex] = {}
    status = "failed"
    try:
        encoders = encoders or {}
        check_weights(store, spaces, encoders, checkpoint)
        if pending or prune_now:
            for space in spaces:
                if pending and space not in encoders:
                    encoders[space] = load_encoder(space, checkpoint, device, precision)
            for space in spaces:
                if space in encoders:
                    encoder = encoders[space]
                    identity = encoder.identity
                    store.ensure_space(space, identity.card, identity.weights_sha256, encoder.dim, encoder.precision)
                    summary.precisions[space] = encoder.precision
            views = {space: store.open_space(space) for space in store.manifests() if space in spaces or prune}
            if prune_now:
                with store.engine.begin() as conn:
                    store.delete_tiles(conn, gone, views)
                    for chunk in id_chunks(planned.gone_problems):
                        conn.execute(delete(catalog.problems).where(catalog.problems.c.id.in_(chunk)))
                summary.removed = len(gone)
            if ray_address and pending:
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
                    address=ray_address,
                    actors=ray_actors,
                    checkpoint=checkpoint,
                )
            else:
                _run_batches(store, summary, pending, encoders, views, settings, batch_size, workers, progress)
            for space, view in views.items():
                if (
                    ann.choose_kind(view.ntotal, view.ann.exact_threshold, view.ann.compressed_threshold)
                    != view.ann.kind
                ):
                    info = rebuild_ann(store, view, encoders.get(space))
                    summary.notes.append(f"{space}: {view.ntotal} vectors, now searched with {info.describe()}")
            for space, encoder in encoders.items():  # so that queries need no torch (msearch.models.numpy_text)
                why_not = export_numpy_text_or_say_why(encoder)
                if why_not:
                    summary.notes.append(f"{space}: its text tower stays on torch, so queries load torch ({why_not})")
        status = "finished"
    finally:
        for view in views.values():
            store.save_space(view)
        summary.seconds = time.perf_counter() - started
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
        try:
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
    loader = torch.utils.data.DataLoader(
        PreparedTiles(pending, recipes, settings, batch_size),
        batch_size=None,  # the dataset yields whole batches
        num_workers=workers,
        collate_fn=_with_tensors,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=2 if workers else None,
        # Page-locked batches copy to a GPU without a bounce buffer, and asynchronously (Encoder.stage).
        pin_memory=any(encoder.device.type == "cuda" for encoder in encoders.values()),
    )
    writer = CatalogueWriter(store, summary.run_id, views)
    last_save, done_count = time.monotonic(), 0
    batches = iter(loader)
    current = _stage_batch(next(batches, None), encoders)
    while current is not None:
        # Queue this batch's forward passes, then read and stage the next batch while the device computes
        # (on CUDA; on the CPU the passes have run by the time _launch returns).
        launched = _launch(current, encoders)
        following = _stage_batch(next(batches, None), encoders)
        embedded = _finish(current, launched, encoders)
        writer.write_batch(embedded.done, embedded.problems)
        summary.record(embedded)
        done_count += current.size
        if progress:
            progress(done_count, len(pending))
        if time.monotonic() - last_save > FAISS_CHECKPOINT_SECONDS:
            for view in views.values():
                store.save_space(view)
            last_save = time.monotonic()
        current = following


def _with_tensors(batch: list[dict]) -> list[dict]:
    """The loader's batch: stored bands as tensors, which leave a reader process through shared memory and
    which the loader pins on CUDA. (Items stay numpy arrays: Ray pickles them, and torch cannot unpickle a
    uint16 tensor.)"""
    for result in batch:
        if "inputs" in result:
            result["inputs"] = {space: torch.from_numpy(values) for space, values in result["inputs"].items()}
    return batch


@dataclass
class _StagedBatch:
    size: int
    problems: list[tuple[TileSource, str, str]]  # (source, "skipped" or "error", reason)
    embed: list[dict]  # read results to embed
    touched: list[dict]  # read results whose files were only touched: their vectors are kept
    needing: dict[str, list[dict]]  # space -> the results of `embed` that need a vector in it
    staged: dict[str, object]  # space -> its encoder's StagedBatch of those results


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
        space: encoders[space].stage([r["inputs"][space] for r in results], [r["offset"] for r in results])
        for space, results in needing.items()
    }
    return _StagedBatch(len(batch), problems, embed, touched, needing, staged)


@dataclass
class EmbeddedBatch:
    """What one batch of read tiles (PreparedTiles items) gives the catalogue."""

    done: list[tuple[dict, dict[str, np.ndarray]]]  # (tile row, vector by space): embedded, then kept
    problems: list[tuple[TileSource, str, str]]  # (source, "skipped" or "error", reason)
    embedded: int  # tiles of `done` with new vectors; the others only had their files touched


def embed_batch(batch: list[dict], encoders: dict[str, Encoder]) -> EmbeddedBatch:
    """Problems recorded, touched tiles kept, the rest encoded: the recipe and one forward pass per space,
    on each encoder's device."""
    staged = _stage_batch(batch, encoders)
    return _finish(staged, _launch(staged, encoders), encoders)


def _launch(staged: _StagedBatch, encoders: dict[str, Encoder]) -> dict[str, torch.Tensor]:
    """Queue each space's forward pass of a staged batch (on CUDA, without waiting for it)."""
    return {space: encoders[space].launch(batch) for space, batch in staged.staged.items()}


def _finish(staged: _StagedBatch, launched: dict[str, torch.Tensor], encoders: dict[str, Encoder]) -> EmbeddedBatch:
    """Wait for the launched forward passes: the batch's rows with their vectors, and its problems."""
    vectors = {id(r): {} for r in staged.embed}
    for space, features in launched.items():
        for r, vector in zip(staged.needing[space], encoders[space].collect(features)):
            vectors[id(r)][space] = vector
    done = [(r["row"], vectors[id(r)]) for r in staged.embed] + [(r["row"], {}) for r in staged.touched]
    return EmbeddedBatch(done, staged.problems, len(staged.embed))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
