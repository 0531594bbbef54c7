"""The indexer's entry points, which open and lock the catalogue: `index_archive` (`msearch index`) and
`rebuild_indexes` (`msearch index --rebuild-ann`).

An indexing run follows the data's path, each step in a module of its own:

- plan (plan.py): discover tiles, compare each with the catalogue by file size and mtime; only new, changed
  or incomplete tiles are read; what is gone is dropped with --prune;
- read (reading.py, reader_processes.py): read pixels, hash the files, select each encoder's bands as stored;
- encode (encoding.py): per space per batch, the input recipe and one forward pass on the encoder's device;
  a space filled by other weights than the ones given is refused before anything is written;
- write (writing.py): each batch is one catalogue transaction (tiles, vectors, problems);
- rebuild (rebuild.py): a space's search index retrained once its size calls for another kind.

Here the run is set up (the run's row, the plan, the encoders, the spaces, --prune) and finished (search
indexes, the summary) alike for both runners, and the reading, encoding and writing of the pending tiles is
handed to one of them: local.py in this process, or distributed.py on a Ray cluster. The request, summary,
progress and interruption both runners share are in runs.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from sqlalchemy import delete

from msearch.indexer.encoding import check_weights, load_encoder
from msearch.indexer.local import run_batches
from msearch.indexer.plan import find_tiles, plan
from msearch.indexer.readers import Discovery
from msearch.indexer.readers.remote import is_remote
from msearch.indexer.reading import default_workers
from msearch.indexer.rebuild import rebuild_ann, rebuild_spaces
from msearch.indexer.runs import (
    IGNORED_NAMED,
    NothingToIndex,
    Progress,
    ProgressCallback,
    RunInterrupted,
    RunRequest,
    RunSummary,
    now,
)
from msearch.indexer.stac_search import StacSearch
from msearch.indexer.tiles import ReadSettings
from msearch.models import DEFAULT_MODEL, get_card
from msearch.models.device import default_batch_size, describe_device, parse_device, resolve_device
from msearch.schema import catalog
from msearch.store import ann
from msearch.store.catalogue import run_transaction
from msearch.store.index_store import IndexStore, SpaceIndex, id_chunks

if TYPE_CHECKING:  # torch and the encoders load only when something needs embedding
    from msearch.models import Encoder

# What callers (the CLI) take from here: the two entry points and what they raise.
__all__ = ["NothingToIndex", "RunInterrupted", "index_archive", "rebuild_indexes"]

DEFAULT_SPACES = (DEFAULT_MODEL, "rs-m-clip")  # English multispectral + ten-language RGB


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
    found = find_tiles(roots, urls, settings, stac_search, index, catalogue)
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


def _index_locked(store: IndexStore, request: RunRequest, found: Discovery, encoders: dict[str, "Encoder"]):
    """The run, with the catalogue locked for writing: `encoders` holds those the caller gave, and gets the
    ones this run loads. Set up and finished here alike for both runners; the pending tiles go to one."""
    with store.engine.begin() as conn:
        run_id = conn.execute(
            catalog.runs.insert().values(
                started_at=now(),
                status="running",
                paths=request.paths_json(),
                spaces=json.dumps(request.spaces),
            )
        ).inserted_primary_key[0]
    spaces, progress, checkpoint = request.spaces, request.progress, request.checkpoint
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
            if pending:
                run_pending = run_batches
                if request.ray_address:
                    from msearch.indexer.distributed import index_on_ray as run_pending  # Ray, only when asked for

                run_pending(store, summary, pending, encoders, views, request, batch_size)
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
            .values(finished_at=now(), status=status, summary=json.dumps(summary.to_dict()))
        )
        run_transaction(store.engine, lambda conn: conn.execute(finished), "the run's summary")
    for space, view in views.items():
        if ann.needs_retrain(view.ann, view.ntotal):
            summary.notes.append(
                f"{space}: its {view.ann.kind} index was trained on {view.ann.trained_on} vectors "
                f"and now holds {view.ntotal}: run `msearch index --rebuild-ann` to retrain it"
            )
    return summary


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
        return rebuild_spaces(store, spaces, checkpoints, settings)
    finally:
        store.unlock()
