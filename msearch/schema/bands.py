"""Sentinel-2 bands: their canonical names, native resolutions, the common file layouts, and offsets.

Every part of msearch refers to bands by these canonical names ("B02", "B8A"), never by position: a file's
band order is resolved to names once, when it is read, and encoders select the bands they need by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class Band:
    name: str
    resolution_m: int
    centre_nm: int


SENTINEL2_BANDS: tuple[Band, ...] = (
    Band("B01", 60, 443),
    Band("B02", 10, 490),
    Band("B03", 10, 560),
    Band("B04", 10, 665),
    Band("B05", 20, 705),
    Band("B06", 20, 740),
    Band("B07", 20, 783),
    Band("B08", 10, 842),
    Band("B8A", 20, 865),
    Band("B09", 60, 945),
    Band("B10", 60, 1375),
    Band("B11", 20, 1610),
    Band("B12", 20, 2190),
)
BANDS_BY_NAME = {band.name: band for band in SENTINEL2_BANDS}

# Band orders of multiband files that carry no band descriptions, by the names users know them by.
BAND_LAYOUTS: dict[str, tuple[str, ...]] = {
    # L2A stacks (TerraMesh S2L2A, hydro, most 12-band exports): B10 dropped, B8A after B08.
    "l2a": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"),
    # L1C stacks (TerraMesh S2L1C, SSL4EO-S12 L1C): all 13, B8A after B08.
    "l1c": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"),
    # EuroSAT MS: all 13 in numeric order with B8A last.
    "eurosat": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A"),
}

# With no band descriptions and no declared order, a band count maps to a layout only where that is
# unambiguous: 12 bands are the L2A stack. 13 bands are not (EuroSAT puts B8A last, L1C stacks after B08),
# and guessing would silently feed the encoder the wrong bands.
DEFAULT_LAYOUT_BY_COUNT = {12: "l2a"}

RADIOMETRIC_OFFSET = 1000.0
# Processing baseline 04.00 (from 25 January 2022) added the +1000 offset to L1C and L2A products.
OFFSET_BASELINE = (4, 0)
OFFSET_START = date(2022, 1, 25)

# STAC's eo common names (Earth Search names its assets by them: "blue", "nir08", "swir16").
COMMON_NAMES: dict[str, str] = {
    "coastal": "B01",
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "rededge1": "B05",
    "rededge2": "B06",
    "rededge3": "B07",
    "nir": "B08",
    "nir08": "B8A",
    "nir09": "B09",
    "cirrus": "B10",
    "swir16": "B11",
    "swir22": "B12",
}

# What STAC catalogues append to a band's asset key: Earth Search's JP2 copies ("blue-jp2") and the
# resolution of the Copernicus Data Space's resampled copies ("B02_20m").
_ASSET_KEY_SUFFIX = re.compile(r"(?:[-_](?:jp2|\d+m))+$", re.IGNORECASE)


def asset_band(name: str) -> str | None:
    """The band a STAC asset key or band entry names: an eo common name ("blue", "nir08", "swir16"), or a
    band name ("B02", "B2", "b8a"), with an optional "-jp2" or "_20m" suffix; None when it names no band."""
    key = _ASSET_KEY_SUFFIX.sub("", name.strip())
    if key.lower() in COMMON_NAMES:
        return COMMON_NAMES[key.lower()]
    try:
        return canonical_band(key)
    except ValueError:
        return None


_BAND_RE = re.compile(r"^B?0*(\d{1,2})(A?)$", re.IGNORECASE)


def canonical_band(name: str) -> str:
    """'B2', 'b02', 'B8a', '8A' -> 'B02', 'B02', 'B8A', 'B8A'. Raises ValueError for anything else."""
    match = _BAND_RE.match(name.strip())
    if match:
        number, suffix = int(match.group(1)), match.group(2).upper()
        candidate = f"B{number}A" if suffix else f"B{number:02d}"
        if candidate in BANDS_BY_NAME:
            return candidate
    raise ValueError(f"{name!r} is not a Sentinel-2 band name (expected one of {', '.join(BANDS_BY_NAME)})")


def canonical_order(names) -> tuple[str, ...]:
    """Band names in the canonical Sentinel-2 order (B01 ... B08, B8A, B09 ... B12), as the catalogue lists them."""
    order = list(BANDS_BY_NAME)
    return tuple(sorted((canonical_band(name) for name in names), key=order.index))


def parse_band_order(spec: str) -> tuple[str, ...]:
    """A layout name ('l2a', 'l1c', 'eurosat') or a comma-separated list of band names."""
    key = spec.strip().lower()
    if key in BAND_LAYOUTS:
        return BAND_LAYOUTS[key]
    bands = tuple(canonical_band(part) for part in spec.split(",") if part.strip())
    if len(set(bands)) != len(bands):
        raise ValueError(f"band order {spec!r} names a band twice")
    if not bands:
        raise ValueError(f"band order {spec!r} is empty; use a layout ({', '.join(BAND_LAYOUTS)}) or B01,B02,...")
    return bands


def parse_processing_baseline(text: str) -> tuple[int, int] | None:
    """'04.00', '0400', 'N0400' or a product name containing '_N0400_' -> (4, 0); N9999 (harmonised) too."""
    match = re.search(r"(?:^|_)N?(\d{2})\.?(\d{2})(?:_|$)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def carries_offset(level: str | None, baseline: tuple[int, int] | None, acquired: date | None) -> bool | None:
    """Whether a product's values carry the +1000 radiometric offset, or None when that cannot be known.

    The offset came with processing baseline 04.00. N99.99 marks harmonised collections (Major TOM,
    Earth Engine's S2_SR_HARMONIZED), whose values were shifted back to the pre-2022 scale.
    """
    if baseline is not None:
        if baseline == (99, 99):
            return False
        return baseline >= OFFSET_BASELINE
    if acquired is not None and level is not None:
        return acquired >= OFFSET_START
    return None
