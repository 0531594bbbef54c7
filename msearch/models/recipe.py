"""The input recipe as a pure, batched function: named bands in, normalised tensor out.

Steps, in the order the models were trained with (../shared/reference/MODELS.md):
1. select the card's bands by name, as float32;
2. remove the +1000 radiometric offset where the source carries it;
3. scale: 'dn' keeps digital numbers as they are (Llama3-MS-CLIP: no division, no clipping);
   'linear' maps DN to [0, 1] brightness, clip(DN / divide, lo, hi) (the RGB models). Pixels that already
   are brightness (8-bit true colour, `Pixels.full_scale`) are divided by their full scale instead: they
   feed 'linear' recipes only (`tile_scale` is the one rule, for this and any batched version);
4. resize so the shorter side is `resize` (bicubic, antialiased as torchvision does), centre-crop `crop`;
5. normalise per band, (x - mean) / std.

Two ways in, one definition of the steps: `prepare` takes Pixels on the host (numpy, on the tile's grid);
`prepare_stored` takes the bands as stored (uint16 digital numbers, each band at its own resolution:
`stored_bands`) already on the encoder's device and runs every step there as torch ops, starting with the
nearest-neighbour resampling of the 20 m and 60 m bands onto the tile's grid that `Pixels.data` does on the
host (the same pixels: `msearch.schema.pixels.BandGroup`). Both apply `_offset_and_scale` and
`_resize_crop_normalise`, which read the card's InputRecipe and work on numpy arrays and torch tensors alike,
so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from msearch.models.card import InputRecipe
from msearch.schema.pixels import CannotFeed, NativeBands, Pixels

_INTERPOLATION = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


def tile_scale(recipe: InputRecipe, pixels: Pixels) -> tuple[float | None, tuple[float | None, float | None]]:
    """Step 3's (divide, (lo, hi)) for one tile; (None, (None, None)) keeps the values as they are.
    Raises CannotFeed for brightness pixels and a recipe that takes digital numbers."""
    scale = recipe.scale
    divide = _divisor(recipe, pixels.full_scale)
    if divide is None:
        return None, (None, None)
    return divide, tuple(scale.get("clip", (None, None)))


def _divisor(recipe: InputRecipe, full_scale: float | None) -> float | None:
    """Step 3's divisor for a tile of this full scale (None: digital numbers); None keeps the values."""
    scale = recipe.scale
    if full_scale is not None:
        if scale["kind"] != "linear":
            raise CannotFeed(
                f"its values are {full_scale:g}-scale true-colour brightness, not the Sentinel-2 digital "
                "numbers this encoder takes"
            )
        return float(full_scale)
    if scale["kind"] == "linear":
        return float(scale.get("divide", 1.0))
    return None


def scaled_bands(recipe: InputRecipe, pixels: Pixels) -> np.ndarray:
    """Steps 1-3 for one tile on the host: (len(recipe.bands), H, W) float32 on the tile's grid."""
    values = stored_bands(recipe, pixels).on_grid().astype(np.float32)
    divide, _ = tile_scale(recipe, pixels)
    return _offset_and_scale(recipe, values, np.float32(pixels.offset), divide)


def stored_bands(recipe: InputRecipe, pixels: Pixels) -> NativeBands:
    """Step 1 without the conversion or the resampling: the card's bands as stored (their dtype kept, each at
    its own resolution), checked for values that no recipe can use. What a reader hands to `prepare_stored`."""
    values = pixels.select_native(recipe.bands)
    # Checked before scaling: clipping would turn an infinity into an ordinary value.
    if values.dtype.kind == "f" and not all(np.isfinite(plane).all() for plane in values.planes):
        raise ValueError("pixel values contain NaN or infinity")
    tile_scale(recipe, pixels)  # raises CannotFeed before anything is handed on
    return values


def _offset_and_scale(recipe: InputRecipe, values, offset, divide):
    """Steps 2-3, in place, on float32 values of the caller's own, a numpy array or a torch tensor (on any
    device); `offset` and `divide` (`tile_scale`'s divisor) are scalars, or one value per tile broadcast over
    (n, 1, 1, 1)."""
    if recipe.remove_offset:
        values -= offset
    scale = recipe.scale
    if scale["kind"] == "linear":
        values /= divide
        lo, hi = scale.get("clip", (None, None))
        if lo is not None or hi is not None:
            values = values.clip(lo, hi)
    return values


def _resize_crop_normalise(recipe: InputRecipe, batch: torch.Tensor) -> torch.Tensor:
    """Steps 4-5 on a float32 batch (n, bands, H, W) of one size, on its own device (normalised in place:
    the batch is the caller's own)."""
    interpolation = _INTERPOLATION[recipe.interpolation]
    height, width = batch.shape[-2:]
    size = resized_size(recipe, height, width)
    resized = TF.resize(batch, list(size), interpolation=interpolation, antialias=True)
    top, left = crop_origin(recipe, height, width)
    cropped = resized[..., top : top + recipe.crop, left : left + recipe.crop]
    mean = torch.tensor(recipe.mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    std = torch.tensor(recipe.std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    return cropped.sub_(mean).div_(std)


def resized_size(recipe: InputRecipe, height: int, width: int) -> tuple[int, int]:
    """Step 4's resize of a (height, width) tile: the shorter side becomes `recipe.resize`, the longer one is
    scaled alike and truncated to whole pixels (torchvision's rule for a one-number size)."""
    if height <= width:
        return recipe.resize, int(recipe.resize * width / height)
    return int(recipe.resize * height / width), recipe.resize


def crop_origin(recipe: InputRecipe, height: int, width: int) -> tuple[int, int]:
    """Step 4's centre crop: (top, left) of the `recipe.crop` square in the resized tile (torchvision's
    center_crop rounding). Heat maps use it to find the ground under each patch the encoder saw."""
    resized_height, resized_width = resized_size(recipe, height, width)
    if min(resized_height, resized_width) < recipe.crop:
        raise ValueError(f"the recipe resizes to {recipe.resize} px, smaller than its {recipe.crop} px crop")
    return int(round((resized_height - recipe.crop) / 2.0)), int(round((resized_width - recipe.crop) / 2.0))


def input_window(recipe: InputRecipe, height: int, width: int) -> tuple[float, float, float, float]:
    """Where the encoder's input lies on a (height, width) tile, in the tile's pixels: (left, top, x_step,
    y_step), the input's pixel (row r, column c) covering tile columns left + c * x_step to left + (c + 1) *
    x_step and rows top + r * y_step to top + (r + 1) * y_step (the resize maps the tile's edges onto the
    resized image's edges)."""
    resized_height, resized_width = resized_size(recipe, height, width)
    top, left = crop_origin(recipe, height, width)
    x_step, y_step = width / resized_width, height / resized_height
    return left * x_step, top * y_step, x_step, y_step


def _by_key(keys: Sequence) -> list[list[int]]:
    """Positions of the items of each key, in the order keys first appear."""
    groups: dict = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def prepare(recipe: InputRecipe, tiles: Sequence[Pixels]) -> torch.Tensor:
    """Tiles of any sizes -> (n, bands, crop, crop) float32, normalised. Tiles of one size are resized
    together; the result keeps the input order."""
    out = torch.empty((len(tiles), len(recipe.bands), recipe.crop, recipe.crop), dtype=torch.float32)
    scaled = [scaled_bands(recipe, tile) for tile in tiles]
    for positions in _by_key([values.shape[-2:] for values in scaled]):
        batch = torch.from_numpy(np.stack([scaled[i] for i in positions]))
        out[positions] = _resize_crop_normalise(recipe, batch)
    return out


@torch.inference_mode()
def prepare_stored(
    recipe: InputRecipe,
    stored: Sequence[NativeBands],
    offsets: Sequence[float],
    full_scales: Sequence[float | None] | None = None,
) -> torch.Tensor:
    """The whole recipe on the planes' device: `stored` holds each tile's bands as `stored_bands` gives them
    (planes as tensors, e.g. uint16 digital numbers at native resolution, of any sizes), `offsets` the offset
    each tile carries and `full_scales` each tile's `Pixels.full_scale` (None for digital numbers; all None
    when not given). Same result as `prepare` on the same tiles."""
    if not stored:
        return torch.empty((0, len(recipe.bands), recipe.crop, recipe.crop))
    device = stored[0].planes[0].device
    out = None
    for positions in _by_key([tile.size for tile in stored]):
        layouts = _by_key([stored[i].layout for i in positions])
        if len(layouts) == 1:  # the usual batch: chips of scenes, or tiles of one product type
            batch = _onto_grid([stored[i] for i in positions])
        else:
            size = stored[positions[0]].size
            batch = torch.empty((len(positions), len(recipe.bands), *size), dtype=torch.float32, device=device)
            for same in layouts:
                batch[same] = _onto_grid([stored[positions[i]] for i in same])
        offset = torch.tensor([offsets[i] for i in positions], dtype=torch.float32, device=device)
        divisors = [_divisor(recipe, full_scales[i] if full_scales else None) for i in positions]
        divide = torch.tensor([1.0 if d is None else d for d in divisors], dtype=torch.float32, device=device)
        scaled = _offset_and_scale(recipe, batch, offset.view(-1, 1, 1, 1), divide.view(-1, 1, 1, 1))
        prepared = _resize_crop_normalise(recipe, scaled)
        if len(positions) == len(stored):
            return prepared
        if out is None:
            out = torch.empty((len(stored), *prepared.shape[1:]), dtype=torch.float32, device=device)
        out[positions] = prepared
    return out


def _onto_grid(tiles: Sequence[NativeBands]) -> torch.Tensor:
    """Tiles of one layout -> (n, bands, height, width) float32 on their grid, on the planes' device: each
    group of bands converted at its own size, then resampled by the rows and columns its BandGroup names."""
    first = tiles[0]
    device = first.planes[0].device
    out = torch.empty((len(tiles), first.count, *first.size), dtype=torch.float32, device=device)
    for g, group in enumerate(first.groups):
        planes = torch.empty((len(tiles), *first.planes[g].shape), dtype=torch.float32, device=device)
        for i, tile in enumerate(tiles):
            planes[i].copy_(tile.planes[g])  # converts the stored dtype; tiles of one batch may differ in it
        if not group.on_grid:  # columns first: the rows are then copied whole
            planes = planes.index_select(3, torch.tensor(group.cols, device=device))
            planes = planes.index_select(2, torch.tensor(group.rows, device=device))
        out[:, list(group.positions)] = planes
    return out
