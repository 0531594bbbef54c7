"""The local runner: reads (in this process, or in reader processes), encodes and writes the pending tiles
batch by batch in this process. On CUDA the next batch is read and copied to the device on a side stream
while the current batch computes. Its Ray counterpart is distributed.py; pipeline.py chooses between them.
"""

from __future__ import annotations

from msearch.indexer.encoding import finish, launch, stage_batch
from msearch.indexer.reading import PreparedTiles
from msearch.indexer.runs import Progress, RunRequest
from msearch.indexer.writing import CatalogueWriter


def run_batches(store, summary, pending, encoders, views, request: RunRequest, batch_size: int) -> None:
    """Read, encode and commit `pending` batch by batch, in this process and its reader processes."""
    recipes = {space: encoder.card.input for space, encoder in encoders.items()}
    tiles = PreparedTiles(pending, recipes, request.settings, batch_size)
    state = Progress(total=len(pending))
    # Page-locked batches copy to a GPU without a bounce buffer, and asynchronously (Encoder.stage).
    pin_memory = any(encoder.device.type == "cuda" for encoder in encoders.values())
    writer = CatalogueWriter(store, summary, views)
    progress = request.progress
    batches = _read_batches(tiles, batch_size, request.workers, state, progress, pin_memory)
    current = stage_batch(next(batches, None), encoders)
    while current is not None:
        # Queue this batch's forward passes, then read and stage the next batch while the device computes
        # (on CUDA; on the CPU the passes have run by the time launch returns).
        launched = launch(current, encoders)
        following = stage_batch(next(batches, None), encoders)
        writer.commit(finish(current, launched, encoders))
        state.committed += current.size
        if progress:
            progress(state)
        current = following


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
