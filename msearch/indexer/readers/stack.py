"""Reading code every layout shares: stacking band files onto one grid, cutting scenes into chips, and
turning a window of pixels plus what the metadata says into a `Tile`.

Readers differ only in where bands and facts come from; they all end in `read_stack`, so nodata, cloud,
offset and footprint rules are the same for every layout.

Decisions (documented once, here):
- The grid: the band with the finest native resolution (B02/B03/B04/B08 when present) defines the
  "10 m grid"; every other band is resampled onto it with **nearest neighbour**. Nearest keeps every value
  an exact stored digital number (each 20 m pixel becomes a 2x2 block), never blends nodata fill into
  valid pixels at swath edges, and is what Earth Engine exports (SSL4EO-S12, Major TOM) use. The encoders
  resize the chip (bicubic) anyway, so smoothing here would only be applied twice.
- Scenes: a raster is cut into chips when either side is longer than 2 x chip_size (448 px by default),
  so 224-448 px tiles (TerraMesh, SSL4EO-S12's 264 px, BigEarthNet) stay whole; the encoder's own resize
  handles them.
- Edges: along each axis chips start at 0, stride, 2 x stride, ...; the part left after the last full chip
  becomes its own smaller chip when it is at least half a chip, otherwise the last full chip is widened to
  the edge. At stride = chip_size the chips therefore tile the scene exactly (no gaps, no overlap) and no
  sliver narrower than half a chip is ever indexed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msearch.indexer.naming import NameFacts
from msearch.indexer.tiles import ReadSettings, SkipTile, Tile, TileSource, wgs84_geometry
from msearch.schema.bands import BANDS_BY_NAME, RADIOMETRIC_OFFSET
from msearch.schema.pixels import Pixels


@dataclass(frozen=True)
class BandFile:
    """Where one band's values are: a file (or a GDAL path such as /vsizip/...) and the band index in it."""

    band: str
    path: str
    index: int = 1


@dataclass(frozen=True)
class CloudMask:
    """A per-pixel classification that says which pixels are cloud: the L2A scene classification (SCL) or
    Major TOM's cloud_mask.tif. `cloud_classes` count as cloud; `shadow_classes` are reported apart;
    `nodata_classes` are left out of the fraction's denominator."""

    path: str
    cloud_classes: tuple[int, ...]
    shadow_classes: tuple[int, ...] = ()
    nodata_classes: tuple[int, ...] = ()


# SCL classes: 8 cloud medium probability, 9 cloud high probability, 10 thin cirrus are cloud (the same
# classes ESA's Cloud_Coverage_Assessment / CLOUDY_PIXEL_PERCENTAGE sums); 3 cloud shadow is reported
# separately (shadowed ground is still ground); 0 is no data.
SCL_MASK_CLASSES = dict(cloud_classes=(8, 9, 10), shadow_classes=(3,), nodata_classes=(0,))
# Major TOM's cloud_mask.tif follows CloudSEN12: 0 clear, 1 thick cloud, 2 thin cloud, 3 cloud shadow.
MAJORTOM_MASK_CLASSES = dict(cloud_classes=(1, 2), shadow_classes=(3,))


@dataclass(frozen=True)
class SceneFacts:
    """What a layout's names and metadata say about a scene, before any pixel is read."""

    names: NameFacts = NameFacts()
    acquired: str | None = None  # overrides names.acquired when metadata says better
    cloud_cover: float | None = None  # percent, for the whole scene
    offset: float | None = None  # the offset the stored values carry, when metadata states it
    extra: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class Grid:
    crs: object
    transform: object
    width: int
    height: int
    nodata: float | None = None


def reference_band(bands: list[BandFile] | tuple[BandFile, ...]) -> BandFile:
    """The band whose grid all others are resampled onto: the finest native resolution, first in band order."""
    order = list(BANDS_BY_NAME)
    return min(bands, key=lambda b: (BANDS_BY_NAME[b.band].resolution_m, order.index(b.band)))


def grid_of(path: str) -> Grid:
    import rasterio

    with rasterio.open(path) as raster:
        return Grid(raster.crs, raster.transform, raster.width, raster.height, raster.nodata)


def chip_windows(width: int, height: int, settings: ReadSettings) -> list[tuple[int, int, int, int]] | None:
    """Windows (col_off, row_off, width, height) to cut a raster into, or None when it stays whole."""
    if max(width, height) <= 2 * settings.chip_size:
        return None
    stride = settings.stride or settings.chip_size
    cols = _spans(width, settings.chip_size, stride)
    rows = _spans(height, settings.chip_size, stride)
    return [(col, row, w, h) for row, h in rows for col, w in cols]


def _spans(length: int, size: int, stride: int) -> list[tuple[int, int]]:
    if length <= size:
        return [(0, length)]
    spans = [(start, size) for start in range(0, length - size + 1, stride)]
    next_start = spans[-1][0] + stride
    if next_start < length:
        if length - next_start >= size / 2:
            spans.append((next_start, length - next_start))
        else:
            last_start = spans[-1][0]
            spans[-1] = (last_start, length - last_start)
    return spans


def scene_sources(
    root: Path,
    key: str,
    files: tuple[Path, ...],
    reader: str,
    grid_path: str | None,
    settings: ReadSettings,
    options: tuple[tuple[str, object], ...] = (),
) -> list[TileSource]:
    """One TileSource for a tile, or one per chip when the raster at `grid_path` is a scene. Only the
    header is read; a raster that cannot be opened stays one source so that reading it reports why."""
    from rasterio.errors import RasterioIOError

    windows = None
    if grid_path is not None:
        try:
            grid = grid_of(grid_path)
            windows = chip_windows(grid.width, grid.height, settings)
        except RasterioIOError:
            windows = None
    if windows is None:
        return [TileSource(root=root, key=key, files=files, reader=reader, options=options)]
    return [
        TileSource(
            root=root, key=f"{key}#{c},{r},{w},{h}", files=files, reader=reader, window=(c, r, w, h), options=options
        )
        for c, r, w, h in windows
    ]


def read_stack(
    source: TileSource,
    settings: ReadSettings,
    bands: tuple[BandFile, ...],
    facts: SceneFacts,
    cloud_mask: CloudMask | None = None,
) -> Tile:
    """Read `source.window` (or everything) of every band onto the reference band's grid and make the Tile."""
    from rasterio.errors import RasterioIOError
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    reference = reference_band(bands)
    try:
        grid = grid_of(reference.path)
        col, row, width, height = source.window or (0, 0, grid.width, grid.height)
        window = Window(col, row, width, height)
        transform = window_transform(window, grid.transform)
        data = _read_bands(bands, grid, window)
        mask_fractions = _mask_fractions(cloud_mask, grid, window) if cloud_mask else {}
    except RasterioIOError as exc:
        raise ValueError(f"not a readable raster ({exc.__cause__ or exc})") from None

    nodata_fraction = nodata_fraction_of(data, grid.nodata)
    if nodata_fraction >= 1.0:
        raise SkipTile("every pixel is nodata")
    if nodata_fraction > settings.max_nodata:
        raise SkipTile(
            f"{nodata_fraction:.0%} of the pixels are nodata (more than --max-nodata {settings.max_nodata:.0%})"
        )
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise ValueError("pixel values contain NaN or infinity")

    names = facts.names
    if settings.offset is not None:
        offset = settings.offset
    elif facts.offset is not None:
        offset = facts.offset
    else:
        offset = RADIOMETRIC_OFFSET if names.carries_offset() else 0.0
    bounds, footprint = wgs84_geometry(grid.crs, transform, width, height)
    extra = dict(facts.extra)
    if "cloud_shadow" in mask_fractions:
        extra["cloud_shadow"] = mask_fractions["cloud_shadow"]
    cloud_cover = mask_fractions.get("cloud", facts.cloud_cover)
    return Tile(
        source=source,
        pixels=Pixels(data, tuple(b.band for b in bands), offset),
        crs=grid.crs.to_string() if grid.crs else None,
        width=width,
        height=height,
        pixel_size=float(abs(grid.transform.a)),
        bounds=bounds,
        footprint=footprint,
        level=names.level,
        acquired=facts.acquired or (names.acquired.isoformat() if names.acquired else None),
        product=names.product,
        mgrs_tile=names.mgrs_tile,
        processing_baseline=names.processing_baseline,
        cloud_cover=cloud_cover,
        nodata_fraction=nodata_fraction,
        scene=source.path if source.window else None,
        extra=extra,
    )


def _read_bands(bands, grid: Grid, window) -> np.ndarray:
    """Each file is opened once; bands on the reference grid are read exactly, others resampled."""
    import rasterio

    by_path: dict[str, list[int]] = {}
    for i, band in enumerate(bands):
        by_path.setdefault(band.path, []).append(i)
    planes: list[np.ndarray | None] = [None] * len(bands)
    for path, positions in by_path.items():
        with rasterio.open(path) as raster:
            _check_same_area(raster, grid, path)
            indexes = [bands[i].index for i in positions]
            values = _read_window(raster, indexes, grid, window)
            for plane, i in zip(values, positions):
                planes[i] = plane
    dtypes = {plane.dtype for plane in planes}
    if len(dtypes) > 1:
        raise ValueError(f"bands are stored with different data types ({', '.join(sorted(map(str, dtypes)))})")
    return np.stack(planes)


def _read_window(raster, indexes: list[int], grid: Grid, window) -> np.ndarray:
    """The window of the reference grid, read from a band whose own grid may be coarser: the window is
    scaled to the band's pixels (a fractional window, which GDAL honours) and resampled by nearest."""
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    if (raster.width, raster.height) == (grid.width, grid.height):
        return raster.read(indexes, window=window)
    x_scale, y_scale = raster.width / grid.width, raster.height / grid.height
    own_window = Window(
        window.col_off * x_scale, window.row_off * y_scale, window.width * x_scale, window.height * y_scale
    )
    shape = (len(indexes), int(window.height), int(window.width))
    return raster.read(indexes, window=own_window, out_shape=shape, resampling=Resampling.nearest)


def _check_same_area(raster, grid: Grid, path: str) -> None:
    """Bands of one tile must cover the same ground. Half of the band's own pixel is allowed: Earth Engine
    exports (SSL4EO-S12) snap each band to its own grid, shifting 60 m bands by ~0.4 pixel, and such bands
    are read as covering the tile's extent."""
    from rasterio.transform import array_bounds

    west, south, east, north = array_bounds(grid.height, grid.width, grid.transform)
    x_slack, y_slack = raster.res[0] / 2, raster.res[1] / 2
    actual = raster.bounds
    differences = (
        abs(actual.left - west),
        abs(actual.right - east),
        abs(actual.bottom - south),
        abs(actual.top - north),
    )
    slacks = (x_slack, x_slack, y_slack, y_slack)
    if raster.crs != grid.crs or any(d > s for d, s in zip(differences, slacks)):
        raise ValueError(f"{Path(path).name} does not cover the same area as the tile's other bands")


def _mask_fractions(mask: CloudMask, grid: Grid, window) -> dict[str, float]:
    """Percent of the window's valid pixels that the mask calls cloud (and cloud shadow)."""
    import rasterio

    with rasterio.open(mask.path) as raster:
        _check_same_area(raster, grid, mask.path)
        classes = _read_window(raster, [1], grid, window)[0]
    valid = ~np.isin(classes, mask.nodata_classes) if mask.nodata_classes else np.ones(classes.shape, bool)
    if not valid.any():
        return {}
    fractions = {"cloud": 100.0 * float(np.isin(classes[valid], mask.cloud_classes).mean())}
    if mask.shadow_classes:
        fractions["cloud_shadow"] = 100.0 * float(np.isin(classes[valid], mask.shadow_classes).mean())
    return fractions


def nodata_fraction_of(data: np.ndarray, nodata: float | None) -> float:
    """Fraction of pixels where every band is nodata (0 for Sentinel-2 products when the file declares none)."""
    if nodata is not None and isinstance(nodata, float) and np.isnan(nodata):
        empty = np.isnan(data).all(axis=0)
    else:
        empty = (data == (0 if nodata is None else nodata)).all(axis=0)
    return float(empty.mean())
