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
    if pixels.full_scale is not None:
        if scale["kind"] != "linear":
            raise CannotFeed(
                f"its values are {pixels.full_scale:g}-scale true-colour brightness, not the Sentinel-2 digital "
                "numbers this encoder takes"
            )
        return float(pixels.full_scale), tuple(scale.get("clip", (None, None)))
    if scale["kind"] == "linear":
        return float(scale.get("divide", 1.0)), tuple(scale.get("clip", (None, None)))
    return None, (None, None)


def scaled_bands(recipe: InputRecipe, pixels: Pixels) -> np.ndarray:
    """Steps 1-3 for one tile: (len(recipe.bands), H, W) float32."""
    if recipe.remove_offset:
        values = pixels.select(recipe.bands)
    else:
        values = Pixels(pixels.data, pixels.bands, 0.0).select(recipe.bands)
    # Checked before scaling: clipping would turn an infinity into an ordinary value.
    if not np.isfinite(values).all():
        raise ValueError("pixel values contain NaN or infinity")
    divide, (lo, hi) = tile_scale(recipe, pixels)
    if divide is not None:
        values = values / np.float32(divide)
    if lo is not None or hi is not None:
        values = np.clip(values, lo, hi)
    return values


def _resize_and_crop(recipe: InputRecipe, batch: torch.Tensor) -> torch.Tensor:
    interpolation = _INTERPOLATION[recipe.interpolation]
    resized = TF.resize(batch, [recipe.resize], interpolation=interpolation, antialias=True)
    return TF.center_crop(resized, [recipe.crop, recipe.crop])


def prepare(recipe: InputRecipe, tiles: Sequence[Pixels]) -> torch.Tensor:
    """Tiles of any sizes -> (n, bands, crop, crop) float32, normalised. Tiles of one size are resized
    together; the result keeps the input order."""
    if not tiles:
        return torch.empty((0, len(recipe.bands), recipe.crop, recipe.crop), dtype=torch.float32)
    mean = torch.tensor(recipe.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(recipe.std, dtype=torch.float32).view(1, -1, 1, 1)
    scaled = [scaled_bands(recipe, tile) for tile in tiles]
    out = torch.empty((len(tiles), len(recipe.bands), recipe.crop, recipe.crop), dtype=torch.float32)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, values in enumerate(scaled):
        by_shape.setdefault(values.shape[1:], []).append(i)
    for positions in by_shape.values():
        batch = torch.from_numpy(np.stack([scaled[i] for i in positions]))
        out[positions] = (_resize_and_crop(recipe, batch) - mean) / std
    return out
