"""What an indexing run is asked for and what it reports, where both runners (local.py, distributed.py) and
the entry point (pipeline.py) find them: the checked request, the summary the CLI prints and the catalogue
keeps, progress, and interruption (Ctrl-C waits for the batch being committed, then the run stops resumable).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from msearch.indexer.readers.remote import redact
from msearch.indexer.stac_search import StacSearch
from msearch.indexer.tiles import ReadSettings
from msearch.models import InputRecipe

if TYPE_CHECKING:
    from msearch.indexer.encoding import EmbeddedBatch

FAISS_CHECKPOINT_SECONDS = 300.0
IGNORED_NAMED = 5  # files that are not rasters, named in a summary


@dataclass
class RunSummary:
    """What a run did, counted as its batches commit; printed by the CLI and kept in the run's row."""

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
        super().__init__(f"interrupted: {counted(summary.committed, 'tile')} committed, run the same command to resume")
        self.summary = summary


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


@contextlib.contextmanager
def interrupt_after():
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


def counted(n: int, noun: str) -> str:
    """'1 tile', '3 tiles'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def now() -> str:
    """The time a run's row records, in UTC."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
