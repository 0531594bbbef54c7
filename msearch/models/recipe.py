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

Two ways in, one definition of the steps: `prepare` takes Pixels on the host (numpy); `prepare_stored` takes
the bands as stored (uint16 digital numbers, `stored_bands`) already on the encoder's device and runs every
step there as torch ops. Both apply `_offset_and_scale` and `_resize_crop_normalise`, which read the card's
InputRecipe and work on numpy arrays and torch tensors alike, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from msearch.models.card import InputRecipe
from msearch.schema.pixels import CannotFeed, Pixels

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
    """Steps 1-3 for one tile: (len(recipe.bands), H, W) float32."""
    values = stored_bands(recipe, pixels).astype(np.float32)
    divide, _ = tile_scale(recipe, pixels)
    return _offset_and_scale(recipe, values, np.float32(pixels.offset), divide)


def stored_bands(recipe: InputRecipe, pixels: Pixels) -> np.ndarray:
    """Step 1 without the conversion: the card's bands as stored (their dtype kept), checked for values that
    no recipe can use. What a reader hands to `prepare_stored`."""
    values = pixels.select_stored(recipe.bands)
    # Checked before scaling: clipping would turn an infinity into an ordinary value.
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ValueError("pixel values contain NaN or infinity")
    tile_scale(recipe, pixels)  # raises CannotFeed before anything is handed on
    return values


def _offset_and_scale(recipe: InputRecipe, values, offset, divide):
    """Steps 2-3 on float32 values, a numpy array or a torch tensor (on any device); `offset` and `divide`
    (`tile_scale`'s divisor) are scalars, or one value per tile broadcast over (n, 1, 1, 1)."""
    if recipe.remove_offset:
        values = values - offset
    scale = recipe.scale
    if scale["kind"] == "linear":
        values = values / divide
        lo, hi = scale.get("clip", (None, None))
        if lo is not None or hi is not None:
            values = values.clip(lo, hi)
    return values


def _resize_crop_normalise(recipe: InputRecipe, batch: torch.Tensor) -> torch.Tensor:
    """Steps 4-5 on a float32 batch (n, bands, H, W) of one size, on its own device."""
    interpolation = _INTERPOLATION[recipe.interpolation]
    resized = TF.resize(batch, [recipe.resize], interpolation=interpolation, antialias=True)
    cropped = TF.center_crop(resized, [recipe.crop, recipe.crop])
    mean = torch.tensor(recipe.mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    std = torch.tensor(recipe.std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    return (cropped - mean) / std


def _by_shape(shapes: Sequence[tuple[int, ...]]) -> list[list[int]]:
    """Positions of tiles of one size, to be resized together (the result keeps the input order)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(shape[-2:]), []).append(i)
    return list(groups.values())


def prepare(recipe: InputRecipe, tiles: Sequence[Pixels]) -> torch.Tensor:
    """Tiles of any sizes -> (n, bands, crop, crop) float32, normalised. Tiles of one size are resized
    together; the result keeps the input order."""
    out = torch.empty((len(tiles), len(recipe.bands), recipe.crop, recipe.crop), dtype=torch.float32)
    scaled = [scaled_bands(recipe, tile) for tile in tiles]
    for positions in _by_shape([values.shape for values in scaled]):
        batch = torch.from_numpy(np.stack([scaled[i] for i in positions]))
        out[positions] = _resize_crop_normalise(recipe, batch)
    return out


@torch.inference_mode()
def prepare_stored(
    recipe: InputRecipe,
    stored: Sequence[torch.Tensor],
    offsets: Sequence[float],
    full_scales: Sequence[float | None] | None = None,
) -> torch.Tensor:
    """The whole recipe on the tensors' device: `stored` holds each tile's bands as `stored_bands` gives them
    (any sizes, e.g. uint16 digital numbers), `offsets` the offset each tile carries and `full_scales` each
    tile's `Pixels.full_scale` (None for digital numbers; all None when not given). Same result as `prepare`
    on the same tiles."""
    device = stored[0].device if stored else torch.device("cpu")
    out = torch.empty((len(stored), len(recipe.bands), recipe.crop, recipe.crop), dtype=torch.float32, device=device)
    for positions in _by_shape([values.shape for values in stored]):
        batch = torch.stack([stored[i].to(torch.float32) for i in positions])  # tiles of one batch may differ in dtype
        offset = torch.tensor([offsets[i] for i in positions], dtype=torch.float32, device=device)
        divisors = [_divisor(recipe, full_scales[i] if full_scales else None) for i in positions]
        divide = torch.tensor([1.0 if d is None else d for d in divisors], dtype=torch.float32, device=device)
        scaled = _offset_and_scale(recipe, batch, offset.view(-1, 1, 1, 1), divide.view(-1, 1, 1, 1))
        out[positions] = _resize_crop_normalise(recipe, scaled)
    return out
