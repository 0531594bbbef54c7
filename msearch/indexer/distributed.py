"""Indexing on a Ray cluster: `msearch index PATHS --ray local|auto|HOST:PORT`.

The Ray runner, the counterpart of the local one (local.py); pipeline.py chooses between them. This process,
the driver, plans exactly as a local run does (`plan.plan`, the weights check, --prune: pipeline.py) and
keeps everything that needs ids: the catalogue assigns tile ids as it merges, the FAISS views follow it, and
the search indexes are trained once at the end (pipeline.py). The cluster does the heavy work, as one Ray
Data stream:

    work units (whole file groups: a scene's chips share its files)
      -> read and prepare: one Ray task per unit, on CPUs (`reading.PreparedTiles`)
      -> encode: an actor pool, one model per space per actor, a GPU each when the cluster has GPUs
         (`encoding.embed_batch`), each unit written as a Parquet shard into <index>/staging/

A shard holds its unit's catalogue rows, vectors and problems, keyed by (root, key) and the files' stat
signature, never by tile id; it is written under a temporary name and renamed when complete. As each
shard's name comes back, the driver merges it in one transaction (`writing.CatalogueWriter`, as a local
batch) and deletes it.

Resuming: a driver killed at any moment leaves committed shards in the catalogue, perhaps complete shards
not merged yet, perhaps half-written temporary files. Running the same command again plans again (committed
tiles are unchanged now), merges the complete shards that still fit the plan (same files, weights and read
settings) without recomputing them, deletes temporary files, and sends only what is left to the cluster.
A shard that cannot be read is deleted and its tiles are redone. Ray retries a failed read task and
restarts a dead encoder actor.

Every node must see the archive paths, the index directory and the model weights at the same paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import pickle
import pty
import re
import sys
import termios
import threading
import time
import tty
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from msearch.indexer.encoding import EmbeddedBatch, embed_batch
from msearch.indexer.plan import PendingTile, feedable_spaces
from msearch.indexer.reading import PreparedTiles
from msearch.indexer.runs import Progress, RunRequest, RunSummary
from msearch.indexer.tiles import ReadSettings
from msearch.indexer.writing import CatalogueWriter
from msearch.models import Encoder, load_encoder
from msearch.store.index_store import IndexStore, SpaceIndex, SpaceMismatchError, vector_bytes, vector_from_bytes

STAGING_DIR = "staging"
SHARD_SUFFIX = ".parquet"
PARTIAL_SUFFIX = ".partial"  # a shard being written: never merged, deleted by the next run
SHARD_METADATA_KEY = b"msearch"
SHARD_FORMAT = 1
VECTOR_COLUMN = "vector:"  # + space
# Object store of a cluster started by `--ray local`: Ray's default (30% of RAM) would pin that much memory.
LOCAL_OBJECT_STORE_BYTES = 1 << 30

log = logging.getLogger(__name__)


# -- the cluster ----------------------------------------------------------------------------------------


def connect(address: str) -> bool:
    """Join (auto, HOST:PORT, ray://...) or start (local) a cluster; True when this call started one that the
    caller must shut down. A process already connected (a library caller's own ray.init) keeps its cluster."""
    import ray

    if ray.is_initialized():
        return False
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address == "local":
        # A cluster of this run alone, on this machine; its token-based auth only guards a shared cluster.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", object_store_memory=LOCAL_OBJECT_STORE_BYTES, **options)
    else:
        ray.init(address=address, **options)
    return True


def encoder_pool(actors: int | None) -> tuple[int, dict]:
    """How many encoder actors, and what each reserves: one GPU where the cluster has GPUs (the default is
    one actor per GPU), else one CPU (the default is half the cluster's CPUs, the other half reading)."""
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if gpus:
        size = actors or gpus
        if size > gpus:
            raise ValueError(f"--ray-actors {size}: the cluster has {gpus} GPUs, one per encoder actor")
        return size, {"num_gpus": 1}
    size = actors or max(1, cpus // 2)
    if size >= cpus:
        raise ValueError(
            f"--ray-actors {size} leaves no CPU for reading: the cluster has {cpus} CPUs and no GPU, "
            f"and each encoder actor takes a CPU; give at most {max(1, cpus - 1)}"
        )
    return size, {"num_cpus": 1}


def _quiet_ray_data() -> None:
    """Ray Data's own progress bars and execution logs would tear through msearch's progress bar."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    context.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # e.g. "progress bars disabled": we did that


# Ray's C++ log line: "[2026-12-07 05:23:29,547 E 19462 19462] core_worker.cc:2465: ..."
RAY_CORE_LOG_LINE = re.compile(rb"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [DIWEF] \d+ \d+\] ")
# What may be the beginning of such a line, at the end of what was read so far
RAY_LINE_BEGINNING = re.compile(rb"\[[0-9: ,DIWEF-]*\Z")
RAY_PREFIX_BYTES = 64  # the longest such beginning: "[date time,ms E pid tid] "
HELD_LINE_BYTES = 1 << 16  # a Ray line not ended by then passes after all


@contextlib.contextmanager
def ray_errors_held_back():
    """Ray's C++ core logs its errors to the driver's stderr as well as to its log file (python-core-driver-*.log
    in the session's log folder), among them one on every run that is Ray Data's own and harmless: "Actor ...
    has constructor arguments in the object store and max_restarts > 0" (ray-project/ray#57733). While the
    block runs, stderr passes through a filter that keeps such lines off the terminal (they stay in Ray's log
    folder) and lets everything else through as it comes (the progress bar); if the block raises, the lines
    held back are shown after all. A terminal stays a terminal (a pseudo-terminal of its size), so that the
    progress bar keeps drawing."""
    sys.stderr.flush()
    terminal = os.dup(2)
    if os.isatty(terminal):
        reader, writer = pty.openpty()
        tty.setraw(writer)  # the bytes as written: the terminal itself turns "\n" into "\r\n"
        with contextlib.suppress(OSError):
            fcntl.ioctl(writer, termios.TIOCSWINSZ, fcntl.ioctl(terminal, termios.TIOCGWINSZ, b"\0" * 8))
    else:
        reader, writer = os.pipe()
    os.dup2(writer, 2)
    os.close(writer)
    held: list[bytes] = []
    forwarder = threading.Thread(target=_pass_all_but_ray_lines, args=(reader, terminal, held), daemon=True)
    forwarder.start()
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)  # the filter's last writer closed: it reads to the end, and stops
        forwarder.join(timeout=10)  # a process that took the pipe along would keep it from ending
        os.close(reader)
        if failed:
            _write_all(terminal, b"".join(held))
        os.close(terminal)


def _pass_all_but_ray_lines(reader: int, terminal: int, held: list[bytes]) -> None:
    """Copy `reader` to `terminal` but for Ray's log lines, which go to `held`. A Ray line may begin anywhere
    (a progress bar leaves the cursor at the end of its line); what may be its beginning waits for more."""
    pending = b""
    while True:
        try:
            chunk = os.read(reader, 1 << 16)
        except OSError:  # a pseudo-terminal whose other end is closed
            chunk = b""
        if not chunk:
            break
        pending += chunk
        while True:
            match = RAY_CORE_LOG_LINE.search(pending)
            end = pending.find(b"\n", match.end()) if match else -1
            if end < 0:
                break
            _write_all(terminal, pending[: match.start()])
            held.append(pending[match.start() : end + 1])
            pending = pending[end + 1 :]
        if match is not None and len(pending) - match.start() < HELD_LINE_BYTES:
            keep = match.start()  # the rest of Ray's line is still to come
        else:
            maybe = RAY_LINE_BEGINNING.search(pending, max(0, len(pending) - RAY_PREFIX_BYTES))
            keep = maybe.start() if maybe else len(pending)
        _write_all(terminal, pending[:keep])
        pending = pending[keep:]
    _write_all(terminal, pending)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


# -- the work ---------------------------------------------------------------------------------------------


def work_units(pending: Sequence[PendingTile], size: int) -> list[list[PendingTile]]:
    """The pending tiles in units of at most `size` tiles, one read task each: whole file groups (the files a
    tile is read from; the chips of one scene share them, so one task reads a scene) packed together while
    they fit, a group larger than a unit cut into consecutive units of its own."""
    groups: dict[tuple, list[PendingTile]] = {}
    for item in pending:
        # Remote tiles have no local files (a searched item) or only the item's document: their item's
        # identity keeps the chips of one remote scene in one task, where GDAL caches its fetched blocks.
        groups.setdefault((item.source.files, item.source.remote_identity), []).append(item)
    units: list[list[PendingTile]] = []
    current: list[PendingTile] = []
    for group in groups.values():
        if current and len(current) + len(group) > size:
            units.append(current)
            current = []
        if len(group) >= size:
            units += [group[start : start + size] for start in range(0, len(group), size)]
        else:
            current += group
    if current:
        units.append(current)
    return units


def read_task_memory(recipes: dict, unit_tiles: int) -> int:
    """Bytes a read task holds at its peak: its unit's inputs, each space's, twice (the arrays and their
    pickled copy). An input is the card's bands as stored at their own resolutions (uint16: at most 2 bytes a
    band and 10 m pixel); counted as 4 bytes a band pixel of the crop, it covers tiles up to 1.4 times the
    crop's side (a scene's chips are the crop's size). Declared to Ray, so that a node runs no more reads than its memory holds;
    and a read operator that asks for other resources than the encoder's is not fused into the encoder actors
    by Ray Data, which would read on the GPU nodes' few CPUs while their GPUs wait."""
    per_tile = sum(4 * len(recipe.bands) * recipe.crop * recipe.crop for recipe in recipes.values())
    return 2 * unit_tiles * per_tile


def read_unit(row: dict, recipes: dict, settings: ReadSettings) -> dict:
    """Ray task: read and prepare a unit's tiles (a tile's failure is its result, never the task's)."""
    started = time.perf_counter()
    tiles = pickle.loads(row["tiles"])
    # the whole unit as one batch; the unit's chips of a scene are read together, each block decoded once
    prepared = PreparedTiles(tiles, recipes, settings, batch_size=max(1, len(tiles)))
    results = [result for batch in prepared for result in batch]
    return {
        "shard": row["shard"],
        "results": pickle.dumps(results, protocol=5),
        "read_seconds": time.perf_counter() - started,
    }


@dataclasses.dataclass(frozen=True)
class ShardFacts:
    """What makes a shard's vectors valid for a run: each space's encoder identity and the read settings."""

    identities: dict[str, list[str]]  # space -> [card, weights sha256]
    settings: str  # ReadSettings as JSON

    @classmethod
    def of(cls, encoders: dict[str, Encoder], settings: ReadSettings) -> ShardFacts:
        return cls(
            {space: [e.identity.card, e.identity.weights_sha256] for space, e in encoders.items()},
            json.dumps(dataclasses.asdict(settings), sort_keys=True),
        )

    def to_json(self) -> str:
        return json.dumps({"format": SHARD_FORMAT, "identities": self.identities, "settings": self.settings})


def actor_device() -> str:
    """Where an encoder actor runs its model: the GPU Ray gave it (Ray sets CUDA_VISIBLE_DEVICES, so it is
    `cuda` to torch), else the CPU. A GPU that Ray declares but torch cannot use (a logical GPU on a CPU
    node, a broken driver) is said in the actor's log, not hidden."""
    import ray
    import torch

    if not ray.get_gpu_ids():
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    log.warning("Ray gave this actor GPU %s, but torch sees no CUDA device: encoding on the CPU", ray.get_gpu_ids())
    return "cpu"


class ShardEncoder:
    """Ray actor: loads each space's model once, encodes units in forward passes of `batch_size` tiles and
    writes each unit as a shard."""

    def __init__(self, precisions: dict[str, str], checkpoint: str | None, facts: str, staging: str, batch_size: int):
        self.facts = json.loads(facts)
        self.staging, self.batch_size = Path(staging), batch_size
        device = actor_device()
        # Each space in the driver's encoder's precision (whichever device the actor has): the space manifests
        # record the driver's. bf16 is checked against fp32 at load, on the actor's device.
        self.encoders = {
            space: load_encoder(space, checkpoint, device, precision) for space, precision in precisions.items()
        }
        for space, encoder in self.encoders.items():
            expected = self.facts["identities"][space]
            if [encoder.identity.card, encoder.identity.weights_sha256] != expected:
                raise SpaceMismatchError(
                    f"space {space!r}: the weights on node {os.uname().nodename} are {encoder.identity}, the "
                    f"driver's are {expected[0]}@sha256:{expected[1][:12]}: every node needs the same weights"
                )

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {"shard": [], "read_seconds": [], "encode_seconds": []}
        for name, results, read_seconds in zip(batch["shard"], batch["results"], batch["read_seconds"]):
            started = time.perf_counter()
            results = pickle.loads(results)
            signatures = {(str(r["item"].source.root), r["item"].source.key): r["item"].stat_signature for r in results}
            embedded = [
                embed_batch(results[start : start + self.batch_size], self.encoders)
                for start in range(0, len(results), self.batch_size)
            ]
            path = write_shard(self.staging / name, embedded, signatures, self.facts)
            out["shard"].append(str(path))
            out["read_seconds"].append(float(read_seconds))
            out["encode_seconds"].append(time.perf_counter() - started)
        return {column: np.asarray(values) for column, values in out.items()}


def write_shard(path: Path, batches: list[EmbeddedBatch], signatures: dict[tuple[str, str], str], facts: dict) -> Path:
    """One row per tile: (root, key, stat signature), what became of it (embedded, kept: only touched, or a
    problem's kind and reason), the catalogue row as JSON, a vector column per space. Written under a
    temporary name, synced, then renamed: a shard under its final name is complete."""
    columns: dict[str, list] = {name: [] for name in ("root", "key", "stat_signature", "outcome", "reason", "row")}
    vectors: dict[str, list] = {space: [] for space in facts["identities"]}

    def add(root: str, key: str, signature: str, outcome: str, reason=None, row=None, by_space=None) -> None:
        for name, value in zip(columns, (root, key, signature, outcome, reason, row)):
            columns[name].append(value)
        for space, values in vectors.items():
            vector = (by_space or {}).get(space)
            values.append(None if vector is None else vector_bytes(vector))

    for batch in batches:
        for position, (row, by_space) in enumerate(batch.done):
            outcome = "embedded" if position < batch.embedded else "kept"
            add(row["root"], row["key"], row["stat_signature"], outcome, row=json.dumps(row), by_space=by_space)
        for source, kind, reason in batch.problems:
            add(str(source.root), source.key, signatures[(str(source.root), source.key)], kind, reason=reason)
    arrays = {name: pa.array(values, pa.string()) for name, values in columns.items()}
    arrays.update({VECTOR_COLUMN + space: pa.array(values, pa.binary()) for space, values in vectors.items()})
    table = pa.table(arrays).replace_schema_metadata({SHARD_METADATA_KEY: json.dumps(facts)})
    final = path.with_name(path.name + SHARD_SUFFIX)
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    pq.write_table(table, partial)
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, final)
    return final


# -- the merge, on the driver -------------------------------------------------------------------------------


class ShardMerger:
    """Merges shards into the catalogue, one transaction each, taking from each only what the plan still
    waits for: a tile whose files changed since, or that is committed already, or whose vectors were made
    with other weights or read settings, is left for the cluster to (re)do."""

    def __init__(
        self, store: IndexStore, summary: RunSummary, pending, encoders, views: dict[str, SpaceIndex], settings
    ):
        self.waiting = {(str(p.source.root), p.source.key): p for p in pending}
        self.facts = ShardFacts.of(encoders, settings)
        self.recipes = {space: encoder.card.input for space, encoder in encoders.items()}
        self.writer = CatalogueWriter(store, summary, views)

    def merge(self, path: Path) -> tuple[int, str | None]:
        """Merge a shard and delete it: (tiles of the plan it settled, why it was unusable or None)."""
        try:
            table = pq.read_table(path)
            facts = json.loads(table.schema.metadata[SHARD_METADATA_KEY])
        except Exception as exc:  # truncated, not Parquet, not ours: its tiles are redone
            path.unlink(missing_ok=True)
            return 0, f"{type(exc).__name__}: {exc}"
        if facts.get("format") != SHARD_FORMAT or facts.get("settings") != self.facts.settings:
            path.unlink(missing_ok=True)
            return 0, "written with other read settings"
        usable = {
            space for space, identity in facts["identities"].items() if self.facts.identities.get(space) == identity
        }
        done, problems, embedded, settled, unfed = [], [], 0, [], {}
        for record in table.to_pylist():
            item = self.waiting.get((record["root"], record["key"]))
            if item is None or item.stat_signature != record["stat_signature"]:
                continue  # committed already, or its files changed since: the plan says what to do with it
            outcome = record["outcome"]
            if outcome in ("skipped", "error"):
                problems.append((item.source, outcome, record["reason"]))
            elif outcome == "kept":
                row = json.loads(record["row"])
                if item.complete_digest is None or item.complete_digest != row["digest"]:
                    continue
                done.append((row, {}))
            else:
                row = json.loads(record["row"])
                # The spaces its bands can feed: an RGB file has no vector in a multispectral space.
                fed = feedable_spaces(item.spaces, self.recipes, row["bands"])
                blobs = {space: record.get(VECTOR_COLUMN + space) for space in fed}
                if any(space not in usable or blob is None for space, blob in blobs.items()):
                    continue  # not every space this tile needs, or other weights: it is redone
                for space in set(item.spaces) - set(fed):
                    unfed[space] = unfed.get(space, 0) + 1
                done.insert(embedded, (row, {s: vector_from_bytes(b) for s, b in blobs.items()}))
                embedded += 1
            settled.append((record["root"], record["key"]))
        batch = EmbeddedBatch(done, problems, embedded, unfed)
        if done or problems:
            self.writer.commit(batch)
        for key in settled:
            self.waiting.pop(key, None)
        path.unlink(missing_ok=True)
        return len(settled), None


def index_on_ray(
    store: IndexStore,
    summary: RunSummary,
    pending: list[PendingTile],
    encoders: dict[str, Encoder],
    views: dict[str, SpaceIndex],
    request: RunRequest,
    batch_size: int,
) -> None:
    """Read, prepare and encode `pending` on the Ray cluster at `request.ray_address`, merging the shards here
    as they come back (the Ray counterpart of local.run_batches)."""
    settings, progress, checkpoint = request.settings, request.progress, request.checkpoint
    staging = store.directory / STAGING_DIR
    staging.mkdir(exist_ok=True)
    merger = ShardMerger(store, summary, pending, encoders, views, settings)
    stages = summary.stage_seconds
    stages.update(read=0.0, encode=0.0, merge=0.0)

    def merge(path: Path) -> int:
        started = time.perf_counter()
        settled, why_not = merger.merge(path)
        if why_not:
            summary.notes.append(f"ignored the unreadable shard {path.name} ({why_not}); its tiles were redone")
        stages["merge"] += time.perf_counter() - started
        if progress:
            settled_so_far = len(pending) - len(merger.waiting)
            progress(Progress(total=len(pending), read=settled_so_far, committed=settled_so_far))
        return settled

    # What an interrupted run left: half-written shards are dropped, complete ones merged, not recomputed.
    for partial in staging.glob("*" + PARTIAL_SUFFIX):
        partial.unlink(missing_ok=True)
    leftovers = sorted(staging.glob("*" + SHARD_SUFFIX))
    resumed = sum(merge(path) for path in leftovers)
    if resumed:
        summary.notes.append(
            f"merged {resumed} tiles from {len(leftovers)} shards an interrupted run left in {staging}"
        )
    if not merger.waiting:
        return

    import ray

    started_here = connect(request.ray_address)
    try:
        with ray_errors_held_back():
            _quiet_ray_data()
            size, reserve = encoder_pool(request.ray_actors)
            facts = merger.facts.to_json()
            recipes = {space: encoder.card.input for space, encoder in encoders.items()}
            read_kwargs = {"recipes": recipes, "settings": settings}
            # A shard lost in between (deleted, unreadable) leaves its tiles waiting: one more pass redoes them.
            for attempt in range(2):
                units = work_units(list(merger.waiting.values()), batch_size)
                items = [
                    {"shard": f"shard-{summary.run_id}-{attempt}-{number:06d}", "tiles": pickle.dumps(unit, protocol=5)}
                    for number, unit in enumerate(units)
                ]
                stream = (
                    ray.data.from_items(items, override_num_blocks=len(items))
                    .map(read_unit, fn_kwargs=read_kwargs, num_cpus=1, memory=read_task_memory(recipes, batch_size))
                    .map_batches(
                        ShardEncoder,
                        fn_constructor_kwargs={
                            "precisions": {space: encoder.precision for space, encoder in encoders.items()},
                            "checkpoint": str(checkpoint) if checkpoint else None,
                            "facts": facts,
                            "staging": str(staging),
                            "batch_size": batch_size,
                        },
                        batch_size=1,  # units: the actor cuts each into forward passes of batch_size tiles
                        compute=ray.data.ActorPoolStrategy(size=size),
                        **reserve,
                    )
                )
                for row in stream.iter_rows():
                    stages["read"] += float(row["read_seconds"])
                    stages["encode"] += float(row["encode_seconds"])
                    merge(Path(row["shard"]))
                if not merger.waiting:
                    break
            if merger.waiting:
                some = ", ".join(key for _, key in list(merger.waiting)[:3])
                raise RuntimeError(f"{len(merger.waiting)} tiles (e.g. {some}) came back in no readable shard")
    finally:
        if started_here:
            ray.shutdown()
