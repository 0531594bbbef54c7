"""Pixels as they travel from a reader to an encoder's input recipe.

A Sentinel-2 tile's bands come at three resolutions (10, 20 and 60 m). Readers keep each band at its own
resolution (`NativeBands`) and say how it maps onto the tile's grid, the grid of its finest band: a 20 m band
is a quarter of the bytes of its copy resampled to 10 m, a 60 m band a 36th. The resampling onto the grid
(nearest neighbour, `BandGroup`) runs where the pixels are used: on the encoder's device for indexing
(msearch.models.recipe.prepare_stored), on the host for everything else (`Pixels.data`). Both take the same
pixels, so the two cannot differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

import numpy as np

from msearch.schema.bands import canonical_band


@dataclass(frozen=True)
class BandGroup:
    """Bands that share one native grid. `positions`: where its planes go among the bands; `rows` and `cols`:
    for each row and column of the tile's grid, the row and column of the planes that nearest neighbour
    resampling takes (None: the planes are on the tile's grid). Hashable: tiles whose groups are equal are
    resampled together."""

    positions: tuple[int, ...]
    rows: tuple[int, ...] | None = None
    cols: tuple[int, ...] | None = None

    @property
    def on_grid(self) -> bool:
        return self.rows is None

    def resample(self, planes: np.ndarray) -> np.ndarray:
        """Arrays (..., h, w) of this group's grid onto the tile's grid (..., height, width), on the host."""
        if self.on_grid:
            return planes
        return planes[..., np.asarray(self.rows), :][..., np.asarray(self.cols)]


@dataclass(frozen=True)
class NativeBands:
    """Bands as stored, each group of one resolution at its own size: `planes[i]` is (len(groups[i].positions),
    h, w) for groups[i]. `size` is (height, width) of the tile's grid. The planes are numpy arrays on the host
    and torch tensors on their way to a device (`map`)."""

    planes: tuple[Any, ...]
    groups: tuple[BandGroup, ...]
    size: tuple[int, int]

    @property
    def count(self) -> int:
        return sum(len(group.positions) for group in self.groups)

    @property
    def layout(self) -> tuple:
        """What tiles must share to be resampled onto their grid in one batch."""
        return self.size, self.groups, tuple(tuple(plane.shape) for plane in self.planes)

    @property
    def dtype(self):
        return self.planes[0].dtype

    def map(self, function: Callable) -> NativeBands:
        """The same bands with `function` applied to each plane (to tensors, pinned, to a device)."""
        return NativeBands(tuple(function(plane) for plane in self.planes), self.groups, self.size)

    def pin_memory(self) -> NativeBands:
        """torch's DataLoader pins a batch's objects by this method."""
        return self.map(lambda plane: plane.pin_memory())

    def on_grid(self) -> np.ndarray:
        """(bands, height, width) on the tile's grid, on the host, with the stored dtype."""
        out = np.empty((self.count, *self.size), dtype=self.dtype)
        for plane, group in zip(self.planes, self.groups):
            out[list(group.positions)] = group.resample(plane)
        return out

    def nodata_mask(self, nodata: float | None) -> np.ndarray:
        """(height, width) bool on the tile's grid: True where every band holds the nodata value (`nodata`, or
        0, Sentinel-2's no-data value, when the file declares none; NaN matches NaN), found at each band's
        own resolution. The one rule for nodata pixels: the indexer's nodata fraction and heat maps use it."""
        empty = np.ones(self.size, dtype=bool)
        for planes, group in zip(self.planes, self.groups):
            if nodata is not None and isinstance(nodata, float) and np.isnan(nodata):
                own = np.isnan(planes).all(axis=0)
            else:
                own = (planes == (0 if nodata is None else nodata)).all(axis=0)
            empty &= group.resample(own)
        return empty

    def select(self, positions: list[int]) -> NativeBands:
        """The bands at `positions` (indexes into this one's bands), in that order."""
        planes, groups = [], []
        for plane, group in zip(self.planes, self.groups):
            own = {position: i for i, position in enumerate(group.positions)}
            wanted = [(new, own[old]) for new, old in enumerate(positions) if old in own]
            if wanted:
                planes.append(plane[[i for _, i in wanted]])
                groups.append(BandGroup(tuple(new for new, _ in wanted), group.rows, group.cols))
        return NativeBands(tuple(planes), tuple(groups), self.size)


class Pixels:
    """One tile's raster values in Sentinel-2 digital numbers (reflectance x 10000) exactly as stored, or
    brightness (see `full_scale`); `bands` names each band; `offset` is what the stored values carry on top of
    the offset-free scale (1000 for products with processing baseline >= 04.00, else 0).

    `Pixels(data, bands)` takes (bands, height, width) on one grid; `Pixels.at_native_resolution` takes bands
    at their own resolutions, as readers hand them over."""

    def __init__(self, data: np.ndarray, bands, offset: float = 0.0, full_scale: float | None = None):
        if data.ndim != 3:
            raise ValueError(f"pixels must be (bands, height, width), got shape {data.shape}")
        native = NativeBands((data,), (BandGroup(tuple(range(data.shape[0]))),), data.shape[1:])
        self._init(native, bands, offset, full_scale)
        self.__dict__["data"] = data  # the cached `data`: already on the grid, nothing to resample

    @classmethod
    def at_native_resolution(
        cls, native: NativeBands, bands, offset: float = 0.0, full_scale: float | None = None
    ) -> Pixels:
        pixels = cls.__new__(cls)
        pixels._init(native, bands, offset, full_scale)
        return pixels

    def _init(self, native: NativeBands, bands, offset: float, full_scale: float | None) -> None:
        if len(bands) != native.count:
            raise ValueError(f"{native.count} planes but {len(bands)} band names {tuple(bands)}")
        self.native = native
        self.bands = tuple(canonical_band(b) for b in bands)
        self.offset = offset
        # None: Sentinel-2 digital numbers. Otherwise the values are display brightness, full at this value
        # (255 for 8-bit true-colour products such as TerraMesh S2RGB): not reflectance, so the input recipe
        # scales them by it (msearch.models.recipe.tile_scale).
        self.full_scale = full_scale

    @cached_property
    def data(self) -> np.ndarray:
        """(bands, height, width) on the tile's grid, as stored: the bands resampled on the host, once."""
        return self.native.on_grid()

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.bands), *self.native.size)

    @property
    def dtype(self):
        return self.native.dtype

    def select(self, names: tuple[str, ...]) -> np.ndarray:
        """The named bands, in the order asked for, on the offset-free scale, as float32 on the grid."""
        selected = self.select_stored(names).astype(np.float32)
        if self.offset:
            selected -= np.float32(self.offset)
        return selected

    def select_stored(self, names: tuple[str, ...]) -> np.ndarray:
        """The named bands, in the order asked for, as stored (dtype and offset kept), on the grid: only they
        are resampled (a quicklook's three bands, not all twelve)."""
        return self.native.select(self._positions(names)).on_grid()

    def select_native(self, names: tuple[str, ...]) -> NativeBands:
        """The named bands, in the order asked for, as stored and at their own resolutions: what travels to an
        encoder's device, where the recipe converts and resamples them (a uint16 20 m band is an eighth of the
        bytes of a float32 copy on the 10 m grid)."""
        return self.native.select(self._positions(names))

    def _positions(self, names: tuple[str, ...]) -> list[int]:
        index = {name: i for i, name in enumerate(self.bands)}
        missing = [name for name in names if name not in index]
        if missing:
            raise MissingBandsError(missing, self.bands)
        return [index[name] for name in names]


@dataclass(frozen=True)
class PlacedPixels:
    """A tile's pixels and where they lie: `crs` (a CRS string, e.g. 'EPSG:32633'), `transform` (the affine
    transform of the tile's grid, GDAL's order (a, b, c, d, e, f): x = a * col + b * row + c, y = d * col +
    e * row + f; for a chip, its window on the scene) and the grid's declared `nodata` value (None: none
    declared, 0 then marks Sentinel-2 no-data). What heat maps need to put per-patch values on the ground."""

    pixels: Pixels
    crs: str | None
    transform: tuple[float, float, float, float, float, float] | None
    nodata: float | None = None

    def nodata_mask(self) -> np.ndarray:
        return self.pixels.native.nodata_mask(self.nodata)


class CannotFeed(ValueError):
    """Pixels that an encoder's input recipe cannot take (missing bands, values on another scale): the tile
    can still feed other encoders."""


class MissingBandsError(CannotFeed):
    def __init__(self, missing: list[str], present: tuple[str, ...]):
        super().__init__(f"missing bands {', '.join(missing)} (the tile has {', '.join(present)})")
        self.missing = missing
