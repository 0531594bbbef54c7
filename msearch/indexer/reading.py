"""Reading and preparing batches: `PreparedTiles` reads the pending tiles (a scene's chips together, each
block decoded once), hashes their files and selects each encoder's bands as stored (uint16 digital numbers: a
quarter of float32's bytes to move), so that whoever encodes (the local run's main process, a Ray encoder
actor) only runs the encoders. Plain Python without torch: reader processes (reader_processes.py) and Ray read
tasks (distributed.py) run it as it is.
"""

from __future__ import annotations

import os
from typing import Iterator

from msearch.indexer.plan import PendingTile, scene_units
from msearch.indexer.readers import read_scene
from msearch.indexer.tiles import ReadSettings, SkipTile, Tile
from msearch.indexer.writing import content_digest, tile_row
from msearch.models import InputRecipe
from msearch.schema.pixels import CannotFeed


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


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return f"permission denied ({exc.filename or exc})"
    if isinstance(exc, FileNotFoundError):
        return f"file vanished during the run ({exc.filename or exc})"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, ValueError) else f"{type(exc).__name__}: {text}"


def default_workers() -> int:
    """Reader processes when --workers is not given: none on two cores or fewer, where a reader can only take
    a core from the encoder, whose threads then all wait for it at every barrier (measured with
    bench/index_throughput.py on 2 cores: 0.92 of the bare encoder's rate reading in the main process,
    0.87 with one reader process); otherwise the cores the encoder's two-thread minimum leaves, up to 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 2))
