"""Pixels as they travel from a reader to an encoder's input recipe."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from msearch.schema.bands import canonical_band


@dataclass(frozen=True)
class Pixels:
    """One tile's raster values: `data` is (bands, height, width) in Sentinel-2 digital numbers
    (reflectance x 10000) exactly as stored, or brightness (see `full_scale`); `bands` names each plane; `offset` is what the stored values
    carry on top of the offset-free scale (1000 for products with processing baseline >= 04.00, else 0)."""

    data: np.ndarray
    bands: tuple[str, ...]
    offset: float = 0.0
    # None: Sentinel-2 digital numbers. Otherwise the values are display brightness, full at this value
    # (255 for 8-bit true-colour products such as TerraMesh S2RGB): not reflectance, so the input recipe
    # scales them by it (msearch.models.recipe.tile_scale).
    full_scale: float | None = None

    def __post_init__(self):
        if self.data.ndim != 3:
            raise ValueError(f"pixels must be (bands, height, width), got shape {self.data.shape}")
        if len(self.bands) != self.data.shape[0]:
            raise ValueError(f"{self.data.shape[0]} planes but {len(self.bands)} band names {self.bands}")
        object.__setattr__(self, "bands", tuple(canonical_band(b) for b in self.bands))

    def select(self, names: tuple[str, ...]) -> np.ndarray:
        """The named bands, in the order asked for, on the offset-free scale, as float32."""
        selected = self.select_stored(names).astype(np.float32)
        if self.offset:
            selected -= np.float32(self.offset)
        return selected

    def select_stored(self, names: tuple[str, ...]) -> np.ndarray:
        """The named bands, in the order asked for, as stored (dtype and offset kept): what travels to an
        encoder's device, where the recipe converts it (a uint16 tile is half the bytes of a float32 one)."""
        index = {name: i for i, name in enumerate(self.bands)}
        missing = [name for name in names if name not in index]
        if missing:
            raise MissingBandsError(missing, self.bands)
        return self.data[[index[name] for name in names]]


class CannotFeed(ValueError):
    """Pixels that an encoder's input recipe cannot take (missing bands, values on another scale): the tile
    can still feed other encoders."""


class MissingBandsError(CannotFeed):
    def __init__(self, missing: list[str], present: tuple[str, ...]):
        super().__init__(f"missing bands {', '.join(missing)} (the tile has {', '.join(present)})")
        self.missing = missing
