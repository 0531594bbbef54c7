"""A time series of one place built from a real Major TOM cell, for the tests of places, timelines and change.

`build_majortom_series` writes the north-west corner of the cell (`199U_1099R`, NE Thailand, L2A per-band
GeoTIFFs) as one per-band product folder per date, each named as Sentinel-2 names products (so the date is the
product's) and georeferenced exactly as the cell (so every date lies on one grid). Each date's values are the
cell's scaled by its brightness (real archives vary by season and sun angle). Indexed with `SERIES_SETTINGS`,
every date is cut into the same 3 x 3 chips: 9 places, each with one acquisition per date.

A planted change: with `changed_from=i`, the chip `CHANGED_CHIP` of dates i, i+1, ... carries another landscape
of the same cell (`NEW_LANDSCAPE`, the 96 px block around its reservoir shore) instead of its own.
`landscape_example` writes that landscape as a GeoTIFF of its own, an example to search with.

Further edits (`edits`, ChipEdit): a chip of some dates drawn as another block of the cell, or covered by a
thick cloud that the cloud mask flags (the timeline and change tests: odd acquisitions, a later change).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from msearch.indexer.tiles import ReadSettings

MAJORTOM_CELL = "majortom-core-s2l2a/199U/199U_1099R"
CHIP_PX = 96  # 10 m pixels: a multiple of 6, so that chips fall on whole 20 m and 60 m pixels too
SERIES_PX = 3 * CHIP_PX  # the series' area: the cell's north-west 2.88 km
SERIES_SETTINGS = ReadSettings(chip_size=CHIP_PX)
SERIES_DATES = ("2020-02-23", "2020-04-04", "2020-06-13", "2020-08-22", "2020-10-11", "2020-12-20")
SERIES_BRIGHTNESS = (1.0, 0.9, 1.1, 0.95, 1.05, 0.92)  # within +-10% of the cell's own values
CHANGED_CHIP = (CHIP_PX, CHIP_PX, CHIP_PX, CHIP_PX)  # col, row, width, height: the centre chip
NEW_LANDSCAPE = (228, 444)  # col, row (10 m) in the cell of the block the changed chip takes on
CLOUD_DN = 8000  # a thick cloud: bright in every band (reflectance x 10000)
THICK_CLOUD = 1  # Major TOM's cloud_mask.tif class (CloudSEN12)


@dataclass(frozen=True)
class ChipEdit:
    """The chip at `window` (col, row, width, height) on the dates of `dates` (indices): the cell's block at
    `landscape` (col, row) instead of its own, or a thick cloud, flagged in the cloud mask, when None."""

    window: tuple[int, int, int, int]
    dates: tuple[int, ...]
    landscape: tuple[int, int] | None = None


@dataclass(frozen=True)
class Series:
    folder: Path  # holds one product folder per date
    products: tuple[Path, ...]  # in date order
    dates: tuple[str, ...]
    changed_from: int | None  # index into dates of the first changed date; None: no change

    @property
    def chip_windows(self) -> list[str]:
        """The catalogue's `window` of each chip (one place each), row by row."""
        return [
            f"{c},{r},{CHIP_PX},{CHIP_PX}" for r in range(0, SERIES_PX, CHIP_PX) for c in range(0, SERIES_PX, CHIP_PX)
        ]

    @property
    def changed_window(self) -> str:
        return ",".join(map(str, CHANGED_CHIP))


def _cell(shared_data: Path) -> Path:
    return next(p for p in (shared_data / MAJORTOM_CELL).iterdir() if p.is_dir())


def product_name(date: str) -> str:
    compact = date.replace("-", "")
    return f"S2B_MSIL2A_{compact}T032739_N9999_R018_T48QUE_{compact}T183543"


def build_majortom_series(
    shared_data: Path,
    folder: Path,
    dates: tuple[str, ...] = SERIES_DATES,
    brightness: tuple[float, ...] = SERIES_BRIGHTNESS,
    changed_from: int | None = None,
    edits: tuple[ChipEdit, ...] = (),
) -> Series:
    """Write the series under `folder` (see the module's docstring) and describe it."""
    cell = _cell(shared_data)
    products = []
    for i, (date, factor) in enumerate(zip(dates, brightness, strict=True)):
        product = folder / product_name(date)
        product.mkdir(parents=True)
        for band_file in sorted(cell.glob("*.tif")):
            with rasterio.open(band_file) as source:
                scale = round(source.transform.a / 10)  # 1, 2 or 6: 10 m pixels per pixel of this band
                size = SERIES_PX // scale
                data = source.read(1, window=Window(0, 0, size, size))
                if changed_from is not None and i >= changed_from:
                    c, r, w, h = (v // scale for v in CHANGED_CHIP)
                    new_c, new_r = (v // scale for v in NEW_LANDSCAPE)
                    data[r : r + h, c : c + w] = source.read(1, window=Window(new_c, new_r, w, h))
                for edit in (e for e in edits if i in e.dates):
                    c, r, w, h = (v // scale for v in edit.window)
                    if edit.landscape is not None:
                        new_c, new_r = (v // scale for v in edit.landscape)
                        data[r : r + h, c : c + w] = source.read(1, window=Window(new_c, new_r, w, h))
                    else:
                        data[r : r + h, c : c + w] = THICK_CLOUD if band_file.stem == "cloud_mask" else CLOUD_DN
                if band_file.stem != "cloud_mask":
                    data = np.clip(np.rint(data * factor), 1, np.iinfo(data.dtype).max).astype(data.dtype)
                profile = dict(source.profile, width=size, height=size, tiled=False)
                profile.pop("blockxsize", None), profile.pop("blockysize", None)
                with rasterio.open(product / band_file.name, "w", **profile) as out:
                    out.write(data, 1)
        products.append(product)
    return Series(folder, tuple(products), tuple(dates), changed_from)


def landscape_example(shared_data: Path, folder: Path) -> Path:
    """The changed chip's new landscape as a per-band product folder of its own (one whole 96 px tile, on the
    cell's grid at its own place), dated before the series: an example to search for it with."""
    cell = _cell(shared_data)
    product = folder / product_name("2019-12-01")
    product.mkdir(parents=True)
    for band_file in sorted(cell.glob("*.tif")):
        with rasterio.open(band_file) as source:
            scale = round(source.transform.a / 10)
            col, row = (v // scale for v in NEW_LANDSCAPE)
            window = Window(col, row, CHIP_PX // scale, CHIP_PX // scale)
            profile = dict(
                source.profile,
                width=window.width,
                height=window.height,
                transform=rasterio.windows.transform(window, source.transform),
                tiled=False,
            )
            profile.pop("blockxsize", None), profile.pop("blockysize", None)
            with rasterio.open(product / band_file.name, "w", **profile) as out:
                out.write(source.read(1, window=window), 1)
    return product
