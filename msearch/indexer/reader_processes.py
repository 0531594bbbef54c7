"""Reader processes for an indexing run: torch's DataLoader over `reading.PreparedTiles`. A module of its own
so that torch is imported only when there is something to read (an unchanged re-check imports none)."""

from __future__ import annotations

from typing import Iterator

import torch

from msearch.indexer.reading import PreparedTiles


class ReaderShares(torch.utils.data.IterableDataset):
    """Each reader process takes every n-th unit (a whole scene, or a group of whole tiles) and yields whole
    batches."""

    def __init__(self, tiles: PreparedTiles):
        self.tiles = tiles

    def __iter__(self) -> Iterator[list[dict]]:
        worker = torch.utils.data.get_worker_info()
        if worker is None:
            return self.tiles.batches()
        return self.tiles.batches(worker.id, worker.num_workers)


def _with_tensors(batch: list[dict]) -> list[dict]:
    """The loader's batch: stored bands (their planes) as tensors, which leave a reader process through shared
    memory and which the loader pins on CUDA (`NativeBands.pin_memory`). (Items stay numpy arrays: Ray
    pickles them, and torch cannot unpickle a uint16 tensor.)"""
    for result in batch:
        if "inputs" in result:
            result["inputs"] = {space: bands.map(torch.from_numpy) for space, bands in result["inputs"].items()}
    return batch


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # the encoder in the main process gets the cores


def reader_loader(tiles: PreparedTiles, workers: int, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """`pin_memory`: page-locked batches copy to a GPU without a bounce buffer, and asynchronously
    (Encoder.stage)."""
    return torch.utils.data.DataLoader(
        ReaderShares(tiles),
        batch_size=None,  # the dataset yields whole batches
        num_workers=workers,
        collate_fn=_with_tensors,
        worker_init_fn=_worker_init,
        prefetch_factor=2,
        pin_memory=pin_memory,
    )
