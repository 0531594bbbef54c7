"""A time series of places from a real Major TOM cell, with a planted change, for the timeline and change tests.

The 199U_1099R product (NE Thailand, 2020-02-23) is cut to its upper-left 672 px (3 x 3 chips of 224 px: farmland,
a dark wetland, a reservoir, the river) and written as one product folder per date, every band scaled by that
date's brightness (as haze and sun angle vary). Chip (col 0, row 0), farmland, carries the wetland chip's
(col 1, row 1) pixels from date CHANGE_AT on: the planted change. Chip (0, 2) carries the reservoir chip's
(1, 2) pixels from date LATER_AT on: a later change, which a split after the first one should find instead.
Two odd acquisitions that must not make a change: chip (2, 2) on date 5 is covered by a thick cloud and its
cloud mask says so (100 % cloud), and chip (2, 0) on date 4 carries the reservoir chip's pixels with a clear
mask (an odd acquisition nothing flags).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

PRODUCT = "S2B_MSIL2A_20200223T032739_N9999_R018_T48QUE_20230924T183543"
CELL = "majortom-core-s2l2a/199U/199U_1099R"
DATES = ("20200105", "20200125", "20200214", "20200305", "20200325", "20200414", "20200504", "20200524")
BRIGHTNESS = (1.0, 0.9, 1.1, 0.95, 1.05, 0.92, 1.08, 1.0)
CHIP, CHIPS = 224, 3
CHANGE_AT = 2  # the first date of the planted change: 2020-02-14
PLANTED, SOURCE = (0, 0), (1, 1)
LATER_AT, LATER, LATER_SOURCE = 6, (0, 2), (1, 2)  # from 2020-05-04
CLOUDY = ((2, 2), 5)  # (chip, date index)
ODD = ((2, 0), 4, (1, 2))  # (chip, date index, the chip whose pixels it carries)


def iso(index: int) -> str:
    day = DATES[index]
    return f"{day[:4]}-{day[4:6]}-{day[6:]}"


def chip_window(chip: tuple[int, int]) -> str:
    """The chip's window as the catalogue keys it ('col,row,width,height' on the 10 m grid)."""
    return f"{chip[0] * CHIP},{chip[1] * CHIP},{CHIP},{CHIP}"


def write_series(shared_data: Path, out: Path) -> Path:
    """The series under `out` (one folder per date); returns `out`."""
    source = shared_data / CELL / PRODUCT
    side = CHIP * CHIPS
    for index, (day, brightness) in enumerate(zip(DATES, BRIGHTNESS)):
        folder = out / PRODUCT.replace("20200223T032739", f"{day}T032739")
        folder.mkdir(parents=True)
        for band in sorted(source.glob("*.tif")):
            with rasterio.open(band) as raster:
                factor = round(raster.transform.a / 10)  # 1, 2 or 6: the band's pixel in 10 m pixels
                size = side // factor
                data = raster.read(1, window=Window(0, 0, size, size))
                profile = raster.profile | {
                    "width": size,
                    "height": size,
                    "transform": raster.window_transform(Window(0, 0, size, size)),
                }
            mask = band.name == "cloud_mask.tif"
            if not mask:
                data = np.clip(data.astype(np.float64) * brightness, 0, 65535).astype(data.dtype)
            if index >= CHANGE_AT and not mask:
                _copy_chip(data, SOURCE, PLANTED, factor)
            if index >= LATER_AT and not mask:
                _copy_chip(data, LATER_SOURCE, LATER, factor)
            chip, at = CLOUDY
            if index == at:
                _fill_chip(data, chip, factor, 1 if mask else 8000)  # 1: thick cloud (CloudSEN12)
            chip, at, odd_source = ODD
            if index == at and not mask:
                _copy_chip(data, odd_source, chip, factor)
            profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
            with rasterio.open(folder / band.name, "w", **profile) as written:
                written.write(data, 1)
    return out


def _rows(chip: tuple[int, int], factor: int) -> tuple[slice, slice]:
    col, row = chip
    return (
        slice(round(row * CHIP / factor), round((row + 1) * CHIP / factor)),
        slice(round(col * CHIP / factor), round((col + 1) * CHIP / factor)),
    )


def _copy_chip(data: np.ndarray, source: tuple[int, int], target: tuple[int, int], factor: int) -> None:
    rows, cols = _rows(target, factor)
    source_rows, source_cols = _rows(source, factor)
    height, width = (
        min(rows.stop - rows.start, source_rows.stop - source_rows.start),
        min(cols.stop - cols.start, source_cols.stop - source_cols.start),
    )
    data[rows.start : rows.start + height, cols.start : cols.start + width] = data[
        source_rows.start : source_rows.start + height, source_cols.start : source_cols.start + width
    ]


def _fill_chip(data: np.ndarray, chip: tuple[int, int], factor: int, value: int) -> None:
    rows, cols = _rows(chip, factor)
    data[rows, cols] = value
