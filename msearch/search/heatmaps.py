"""Where in a result the query matches: per-patch heat maps, their GeoTIFFs and pictures, and outlines.

A heat map holds one value per patch the encoder saw (14 x 14 for Llama3-MS-CLIP's ViT-B/16, 7 x 7 for
RS-M-CLIP's ViT-B/32): the patch's score for the query vector by SegEarth-OV's training-free method
(msearch.models.dense: cos(patch, v) - 0.3 cos(cls, v)). The query vector is a text's embedding in the space
its language routes to, or an example's global embedding (`query --like`). The tile's pixels are read again
from the archive (the searcher's pixel reader) and the vision tower runs once per tile; the per-patch
embeddings do not depend on the query (`TilePatches`), so a server keeps them (`PatchCache`).

Georeferencing: patch (row, col) covers the tile pixels the recipe's resize and centre crop took for it
(msearch.models.dense.patch_grid); composed with the tile's grid transform (its window on the scene), that
puts each value on the ground. A 224 px chip's patches are 16 x 16 of its pixels and cover exactly its
footprint; a smaller chip is resized to 224 (its patches are smaller on the ground); a non-square chip is
centre-cropped, so its heat map covers the middle square the encoder saw, not the whole chip.
A patch is nodata (NaN) when at least half of the tile pixels under it are nodata (the indexer's rule:
every band at the file's nodata value, or 0).

Outlines (`locate`): the patches at or above a threshold, merged into polygons (rasterio.features.shapes,
4-connected), in WGS84, each with the mean and the highest score of its patches. The default threshold is
chosen per tile by Otsu's method (Otsu 1979) on the tile's valid patch values: the split of the sorted values
that maximises the between-class variance, halfway between the two values it falls between. It always
outlines something; whether that something is the queried thing is what the scores' level says (compare
`mean_score` across tiles, or give --threshold).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from msearch.schema.pixels import CannotFeed, PlacedPixels
from msearch.search.quicklook import true_colour
from msearch.search.searcher import QueryError, Searcher, language_of

NODATA_SHARE = 0.5  # a patch with at least this share of nodata pixels under it is nodata
HEAT_ALPHA = (0.15, 0.7)  # overlay opacity at a tile's lowest and highest score
# Colours from a tile's lowest to its highest score (dark blue, teal, yellow, orange, red).
RAMP = np.array([[20, 30, 110], [30, 140, 150], [250, 220, 40], [245, 130, 30], [210, 25, 30]], dtype=np.float64)


@dataclass(frozen=True)
class HeatTarget:
    """What a heat map scores patches against: a unit vector in one space, and what it came from."""

    space: str
    vector: np.ndarray
    label: str  # the text, or 'like:EXAMPLE'


@dataclass
class HeatMap:
    """One tile's heat: `values` (side, side) float32, NaN on nodata patches; `cells` the affine (GDAL order)
    from a patch's (col, row) to the tile's pixel (x, y); `transform` the same onto the ground in `crs`;
    `size` the tile's (height, width) in pixels; `quicklook` its true-colour picture when asked for."""

    tile_id: int
    space: str
    values: np.ndarray
    cells: tuple[float, ...]
    transform: tuple[float, ...] | None
    crs: str | None
    size: tuple[int, int]
    quicklook: np.ndarray | None = None

    def patch_of_pixel(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows (height,), cols (width,)): the patch row of each tile pixel row and the patch column of each
        tile pixel column (by the pixel's centre), -1 outside the part the encoder saw."""
        return _patch_of_pixel(self.cells, self.values.shape[0], self.size)


@dataclass
class TilePatches:
    """One tile's per-patch embeddings (a DenseEmbeddings of one) and where its patches lie: what a heat map
    for any query is made from in microseconds (`heat`). `nodata`: (side, side), the patches that are nodata."""

    tile_id: int
    space: str
    dense: object  # msearch.models.dense.DenseEmbeddings
    nodata: np.ndarray
    cells: tuple[float, ...]
    transform: tuple[float, ...] | None
    crs: str | None
    size: tuple[int, int]
    quicklook: np.ndarray | None = None

    def heat(self, target: HeatTarget) -> HeatMap:
        values = np.where(self.nodata, np.float32(np.nan), self.dense.heat(target.vector)[0])
        return HeatMap(
            self.tile_id, self.space, values, self.cells, self.transform, self.crs, self.size, self.quicklook
        )


def _patch_of_pixel(cells: tuple[float, ...], side: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    a, _, c, _, e, f = cells
    height, width = size
    rows = np.floor((np.arange(height) + 0.5 - f) / e).astype(np.int64)
    cols = np.floor((np.arange(width) + 0.5 - c) / a).astype(np.int64)
    rows[(rows < 0) | (rows >= side)] = -1
    cols[(cols < 0) | (cols >= side)] = -1
    return rows, cols


def heat_target(
    searcher: Searcher, text: str | None = None, like: str | None = None, lang: str = "auto", space: str | None = None
) -> HeatTarget:
    """The vector a heat map scores against: a text's, in the space its language routes to (`space` when
    given; Searcher.route), or an example's (a tile id, catalogued path or raster file; Searcher.example_vector)."""
    if (text is None) == (like is None):
        raise QueryError("give a query text or an example (like), one of them")
    if like is not None:
        name, vector, _ = searcher.example_vector(like, space)
        return HeatTarget(name, _unit(vector), f"like:{like}")
    if not text.strip():
        raise QueryError("the query is empty: give some words to look for in the tile")
    name = searcher.route(language_of(text, lang), space)
    vector, _ = searcher.embed_text(name, text.strip())
    return HeatTarget(name, _unit(vector), text.strip())


def heat_maps(
    searcher: Searcher,
    tile_ids: Sequence[int],
    target: HeatTarget,
    quicklooks: bool = False,
    skipped: list[tuple[int, str]] | None = None,
) -> list[HeatMap]:
    """Heat maps of catalogued tiles for one target (see `tile_patches` for what is computed and raised)."""
    return [tile.heat(target) for tile in tile_patches(searcher, tile_ids, target.space, quicklooks, skipped)]


def tile_patches(
    searcher: Searcher,
    tile_ids: Sequence[int],
    space: str,
    quicklooks: bool = False,
    skipped: list[tuple[int, str]] | None = None,
) -> list[TilePatches]:
    """Per-patch embeddings of catalogued tiles in a space: the tiles read again, one batch through the
    space's vision tower. Raises QueryError for an unknown tile, a vision tower that cannot be loaded (no
    weights offline) or one the method does not cover, and a tile that cannot be read again or fed to the
    encoder; given a `skipped` list, such tiles are left out instead and (tile id, why) appended to it."""
    import torch

    from msearch.models import ModelNotAvailableError
    from msearch.models.dense import DenseEmbeddings, DenseUnsupported, dense_embeddings, patch_grid, patch_size

    rows = searcher.store.tiles_by_id([int(t) for t in tile_ids])
    missing = [int(t) for t in tile_ids if int(t) not in rows]
    if missing:
        raise QueryError(f"no tile with id {missing[0]} in this index")
    try:
        encoder = searcher.encoder(space)
    except ModelNotAvailableError as exc:
        raise QueryError(
            f"heat maps need the image encoder of space {space!r}, which cannot be loaded: {exc} "
            f"(give its weights with --checkpoint {space}=PATH)"
        ) from exc
    ready, inputs = [], []
    for tile_id in tile_ids:
        try:
            tile = _placed(searcher, rows[int(tile_id)])
            inputs.append(encoder.prepare([tile.pixels]))
        except (QueryError, CannotFeed) as exc:
            why = f"tile {tile_id} cannot be mapped in space {space!r}: {exc}"
            if skipped is None:
                raise QueryError(why) from exc
            skipped.append((int(tile_id), why))
            continue
        ready.append((int(tile_id), tile))
    if not ready:
        return []
    try:
        dense = dense_embeddings(encoder, torch.cat(inputs))
    except DenseUnsupported as exc:
        raise QueryError(f"space {space!r}: {exc}") from exc
    patch = patch_size(encoder.model.visual)
    found = []
    for i, (tile_id, tile) in enumerate(ready):
        height, width = tile.pixels.shape[1:]
        side, cells = patch_grid(encoder.card.input, patch, height, width)
        own = DenseEmbeddings(dense.patches[i : i + 1].copy(), dense.cls[i : i + 1].copy())
        nodata = _nodata_patches(cells, side, (height, width), tile.nodata_mask())
        quicklook = true_colour(tile.pixels) if quicklooks else None
        found.append(
            TilePatches(
                tile_id, space, own, nodata, cells, _on_ground(tile, cells), tile.crs, (height, width), quicklook
            )
        )
    return found


def _placed(searcher: Searcher, row: dict) -> PlacedPixels:
    reader = searcher.pixels
    if reader is None:
        raise QueryError("this searcher was made without a pixel reader, so it cannot read tiles for heat maps")
    try:
        return reader.placed(row)
    except (OSError, ValueError) as exc:  # moved, deleted or broken since it was indexed
        raise QueryError(f"{row['key']} cannot be read again: {exc}") from exc


def _on_ground(tile: PlacedPixels, cells: tuple[float, ...]) -> tuple[float, ...] | None:
    from affine import Affine

    if tile.transform is None:
        return None
    return tuple((Affine(*tile.transform) @ Affine(*cells))[:6])


def _nodata_patches(cells: tuple[float, ...], side: int, size: tuple[int, int], mask: np.ndarray) -> np.ndarray:
    """(side, side) bool: patches with at least NODATA_SHARE of the tile pixels under them nodata."""
    rows, cols = _patch_of_pixel(cells, side, size)
    inside = (rows[:, None] >= 0) & (cols[None, :] >= 0)
    cell = (rows[:, None] * side + cols[None, :])[inside]
    counts = np.bincount(cell, minlength=side * side)
    empty = np.bincount(cell, weights=mask[inside].astype(np.float64), minlength=side * side)
    return ((counts > 0) & (empty >= NODATA_SHARE * counts)).reshape(side, side)


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    return vector / np.linalg.norm(vector)


# -- files and pictures -------------------------------------------------------------------------------------


def geotiff_bytes(heat_map: HeatMap) -> bytes:
    """A float32 GeoTIFF of the heat map: one pixel per patch, the tile's CRS, the patch grid's transform,
    NaN as nodata."""
    from affine import Affine
    from rasterio.io import MemoryFile

    side = heat_map.values.shape[0]
    profile = dict(driver="GTiff", width=side, height=side, count=1, dtype="float32", nodata=float("nan"))
    if heat_map.crs is not None and heat_map.transform is not None:
        profile.update(crs=heat_map.crs, transform=Affine(*heat_map.transform))
    with MemoryFile() as memory:
        with memory.open(**profile) as dataset:
            dataset.write(heat_map.values.astype(np.float32), 1)
            dataset.update_tags(space=heat_map.space, tile_id=str(heat_map.tile_id), method="SegEarth-OV")
        return memory.read()


def heat_rgba(heat_map: HeatMap) -> np.ndarray:
    """(height, width, 4) uint8 on the tile's pixel grid: each pixel coloured by the patch under it (RAMP
    from the tile's lowest to its highest score), transparent where the encoder saw nothing and on nodata
    patches. Laid over the quicklook (same grid) or over the map at the tile's footprint."""
    values = heat_map.values
    valid = np.isfinite(values)
    low, high = (float(values[valid].min()), float(values[valid].max())) if valid.any() else (0.0, 0.0)
    scaled = np.clip((values - low) / (high - low), 0, 1) if high > low else np.full(values.shape, 0.5)
    position = np.nan_to_num(scaled, nan=0.0) * (len(RAMP) - 1)
    below = np.minimum(np.floor(position).astype(int), len(RAMP) - 2)
    weight = (position - below)[..., None]
    colours = RAMP[below] * (1 - weight) + RAMP[below + 1] * weight
    alpha = np.where(valid, HEAT_ALPHA[0] + (HEAT_ALPHA[1] - HEAT_ALPHA[0]) * np.nan_to_num(scaled), 0.0)
    patches = np.concatenate([colours, 255.0 * alpha[..., None]], axis=-1)
    rows, cols = heat_map.patch_of_pixel()
    out = patches[np.maximum(rows, 0)][:, np.maximum(cols, 0)]
    out[(rows[:, None] < 0) | (cols[None, :] < 0)] = 0.0
    return np.rint(out).astype(np.uint8)


def blend(rgb: np.ndarray, rgba: np.ndarray) -> np.ndarray:
    """An (height, width, 3) uint8 picture with an (height, width, 4) overlay of the same size laid over it."""
    alpha = rgba[..., 3:4].astype(np.float64) / 255.0
    mixed = rgb.astype(np.float64) * (1 - alpha) + rgba[..., :3].astype(np.float64) * alpha
    return np.rint(mixed).astype(np.uint8)


def rgba_png_bytes(rgba: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


# -- outlines -------------------------------------------------------------------------------------------------


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of the finite values: over every split of the sorted values into a lower and an upper
    class, the one with the largest between-class variance w0 w1 (m0 - m1)^2; the threshold lies halfway
    between the two values at the split (exact, no histogram bins: a tile has at most 196 patches)."""
    ordered = np.sort(values[np.isfinite(values)].astype(np.float64))
    if len(ordered) < 2 or ordered[0] == ordered[-1]:
        raise QueryError("the tile's heat map is flat (or has fewer than two valid patches): give --threshold")
    n = len(ordered)
    below = np.cumsum(ordered)[:-1]
    counts = np.arange(1, n)
    lower_mean = below / counts
    upper_mean = (ordered.sum() - below) / (n - counts)
    between = counts * (n - counts) * (lower_mean - upper_mean) ** 2
    between[ordered[1:] == ordered[:-1]] = -1.0  # a split must fall between two different values
    split = int(np.argmax(between))
    return float((ordered[split] + ordered[split + 1]) / 2)


def outline(heat_map: HeatMap, threshold: float | None = None) -> dict:
    """A GeoJSON FeatureCollection (WGS84) of the patches scoring at least `threshold` (default: Otsu's, per
    tile), merged into polygons, each with its patches' mean and highest score and their count."""
    from affine import Affine
    from rasterio.features import geometry_mask, shapes
    from rasterio.warp import transform_geom

    if heat_map.transform is None or heat_map.crs is None:
        raise QueryError(f"tile {heat_map.tile_id} has no georeference: its outlines cannot be put on a map")
    method = "given"
    if threshold is None:
        threshold, method = otsu_threshold(heat_map.values), "otsu"
    values = heat_map.values
    above = np.isfinite(values) & (values >= threshold)
    transform = Affine(*heat_map.transform)
    features = []
    for geometry, _ in shapes(above.astype(np.uint8), mask=above, connectivity=4, transform=transform):
        inside = ~geometry_mask([geometry], out_shape=values.shape, transform=transform)
        scores = values[inside & above]
        features.append(
            {
                "type": "Feature",
                "geometry": transform_geom(heat_map.crs, "EPSG:4326", geometry),
                "properties": {
                    "tile_id": heat_map.tile_id,
                    "mean_score": round(float(scores.mean()), 6),
                    "max_score": round(float(scores.max()), 6),
                    "patches": int(scores.size),
                },
            }
        )
    features.sort(key=lambda feature: -feature["properties"]["mean_score"])
    return {
        "type": "FeatureCollection",
        "features": features,
        "properties": {
            "tile_id": heat_map.tile_id,
            "space": heat_map.space,
            "threshold": round(float(threshold), 6),
            "threshold_method": method,
            "patches": int(np.isfinite(values).sum()),
        },
    }


# -- a cache for a long-lived server -----------------------------------------------------------------------------


class PatchCache:
    """Recent tiles' per-patch embeddings by (tile id, file signature, space): a heat map for a new query on a
    tile seen before costs no forward pass (the page asks for the maps of the same results as the query
    changes); a re-indexed, changed file is computed afresh. About 0.4 MB a tile for ViT-B/16."""

    def __init__(self, searcher: Searcher, size: int):
        self.searcher = searcher
        self.size = size
        self._tiles: OrderedDict[tuple, TilePatches] = OrderedDict()
        self._lock = threading.Lock()

    def heat(self, row: dict, target: HeatTarget) -> HeatMap:
        key = (row["id"], row.get("stat_signature"), target.space)
        with self._lock:
            found = self._tiles.get(key)
            if found is not None:
                self._tiles.move_to_end(key)
        if found is None:
            [found] = tile_patches(self.searcher, [row["id"]], target.space)
            with self._lock:
                self._tiles[key] = found
                while len(self._tiles) > self.size:
                    self._tiles.popitem(last=False)
        return found.heat(target)
