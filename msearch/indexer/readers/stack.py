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
- Readers do not resample: a tile's coarser bands stay at their own resolution, with the rows and columns
  that nearest neighbour takes for each grid pixel (GDAL's rule, `_nearest`), and the resampling runs where
  the pixels are used (`msearch.schema.pixels`): on the encoder's device when indexing.
- Scenes: a raster is cut into chips when either side is longer than 2 x chip_size (448 px by default),
  so 224-448 px tiles (TerraMesh, SSL4EO-S12's 264 px, BigEarthNet) stay whole; the encoder's own resize
  handles them.
- Edges: along each axis chips start at 0, stride, 2 x stride, ...; the part left after the last full chip
  becomes its own smaller chip when it is at least half a chip, otherwise the last full chip is widened to
  the edge. At stride = chip_size the chips therefore tile the scene exactly (no gaps, no overlap) and no
  sliver narrower than half a chip is ever indexed.
"""

from __future__ import annotations

import contextvars
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from msearch.indexer.naming import NameFacts
from msearch.indexer.tiles import ReadSettings, SkipTile, Tile, TileSource, stat_signature, wgs84_geometry
from msearch.schema.bands import BANDS_BY_NAME, RADIOMETRIC_OFFSET
from msearch.schema.catalog import normal_time
from msearch.schema.pixels import BandGroup, NativeBands, Pixels

UNREADABLE = "not a readable raster"  # how a read that GDAL could not do begins its reason


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


# The grid size (width, height) of whole tiles already catalogued, by the stat signature of their files:
# discovery then opens no unchanged raster to decide whether it is a scene to cut (msearch.indexer.pipeline
# sets it for a run; at about 1 ms a header, that is most of an unchanged re-check).
KNOWN_GRID_SIZES: contextvars.ContextVar[dict[str, tuple[int, int]]] = contextvars.ContextVar("known_grid_sizes")


def _known_grid_size(files: tuple[Path, ...]) -> tuple[int, int] | None:
    known = KNOWN_GRID_SIZES.get(None)
    if not known:
        return None
    try:
        return known.get(stat_signature(files))
    except OSError:
        return None


def _grid_size(path: str) -> tuple[int, int] | None:
    from rasterio.errors import RasterioIOError

    try:
        grid = grid_of(path)
    except RasterioIOError:
        return None
    return grid.width, grid.height


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
    grid_size: tuple[int, int] | None = None,
) -> list[TileSource]:
    """One TileSource for a tile, or one per chip when the raster at `grid_path` is a scene. Only the
    header is read, and not even that when metadata gives the grid's (width, height) as `grid_size` or the
    tile is catalogued unchanged (`KNOWN_GRID_SIZES`); a raster that cannot be opened stays one source so
    that reading it reports why."""
    size = grid_size
    if size is None and grid_path is not None:
        size = _known_grid_size(files) or _grid_size(grid_path)
    windows = chip_windows(*size, settings) if size else None
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
    """Read `source.window` (or everything) of every band onto the reference band's grid and make the Tile.
    One window read on its own: a scene's chips are read together, each block decoded once, by `read_chips`."""
    from rasterio.errors import RasterioIOError
    from rasterio.windows import Window

    reference = reference_band(bands)
    try:
        grid = grid_of(reference.path)
        col, row, width, height = source.window or (0, 0, grid.width, grid.height)
        window = Window(col, row, width, height)
        native = _read_bands(bands, grid, window)
        mask_fractions = _mask_fractions(cloud_mask, _read_classes(cloud_mask, grid, window)) if cloud_mask else {}
    except RasterioIOError as exc:
        raise ValueError(f"{UNREADABLE} ({exc.__cause__ or exc})") from None
    return _make_tile(source, settings, bands, facts, grid, native, mask_fractions)


def read_chips(
    sources: list[TileSource],
    settings: ReadSettings,
    bands: tuple[BandFile, ...],
    facts: SceneFacts,
    cloud_mask: CloudMask | None = None,
) -> Iterator[tuple[TileSource, Tile | Exception]]:
    """The chips of one scene (sources that differ only in their window), each as `read_stack` reads it,
    pixel for pixel, but with every block of every band file decoded once: the scene is read row of chips
    by row of chips, each file a whole block row at a time (`BlockRows`), and the chips are sliced from
    memory. Yields (source, Tile) or (source, the exception that makes it skipped or failed), by rows."""
    from rasterio.errors import RasterioIOError

    _bound_gdal_cache()
    with ExitStack() as opened:
        try:
            grid = grid_of(reference_band(bands).path)
            files = _open_band_files(bands, grid, opened)
            mask_rows = _open_file(cloud_mask.path, [1], grid, opened) if cloud_mask else None
        except (RasterioIOError, ValueError) as exc:
            error = _readable_error(exc)
            for source in sources:
                yield source, error
            return
        chip_rows: dict[tuple[int, int], list[TileSource]] = {}
        for source in sources:
            col, row, width, height = source.window or (0, 0, grid.width, grid.height)
            chip_rows.setdefault((row, height), []).append(source)
        for (row, height), chips in sorted(chip_rows.items()):
            try:
                strips = [(rows.native(row, height), rows, positions) for rows, positions in files]
                classes = mask_rows.on_grid(row, height)[0] if mask_rows else None
            except (RasterioIOError, ValueError) as exc:
                error = _readable_error(exc)
                for source in chips:
                    yield source, error
                continue
            for source in chips:
                col, _, width, _ = source.window or (0, 0, grid.width, grid.height)
                try:
                    fractions = _mask_fractions(cloud_mask, classes[:, col : col + width]) if cloud_mask else {}
                    # No name holds the strips' views past this row: they keep the file's block rows alive.
                    native = _native_bands(
                        [
                            (*rows.chip_columns(strip, col, width), strip_rows, positions)
                            for (strip, strip_rows), rows, positions in strips
                        ],
                        (height, width),
                    )
                    yield source, _make_tile(source, settings, bands, facts, grid, native, fractions)
                except (SkipTile, ValueError) as exc:
                    yield source, exc
            del strips, classes


def read_scene_with(
    sources: list[TileSource], settings: ReadSettings, parts: Callable[[TileSource, ReadSettings], tuple]
) -> Iterator[tuple[TileSource, Tile | Exception]]:
    """`read_chips` for a reader whose `parts(source, settings)` gives (bands, facts, cloud mask) of a
    source: the same for every chip of a scene, so found once. When they cannot be found, every chip fails."""
    try:
        bands, facts, cloud_mask = parts(sources[0], settings)
    except Exception as exc:  # noqa: BLE001 - recorded against each chip, as a failed read of one tile is
        for source in sources:
            yield source, exc
        return
    yield from read_chips(sources, settings, bands, facts, cloud_mask)


# GDAL keeps decoded blocks in one cache per process, by default up to 5% of the machine's memory (6 GB on a
# 128 GB machine). Read by block rows, no block of a scene is asked for twice, so a large cache only holds
# memory: a reader of scenes keeps it at this many MB (a whole block row of a 12-band 10980 px COG is 135 MB).
SCENE_GDAL_CACHE_MB = 256


def _bound_gdal_cache() -> None:
    """Lower GDAL's block cache to SCENE_GDAL_CACHE_MB for the rest of the process (GDAL has one cache per
    process, and rasterio.Env does not restore it), unless it is already smaller."""
    from rasterio.env import get_gdal_config, set_gdal_config

    current = int(get_gdal_config("GDAL_CACHEMAX"))
    megabytes = current if current < 100_000 else current / 2**20  # GDAL: small values are megabytes
    if megabytes > SCENE_GDAL_CACHE_MB:
        set_gdal_config("GDAL_CACHEMAX", SCENE_GDAL_CACHE_MB)


def _readable_error(exc: Exception) -> Exception:
    from rasterio.errors import RasterioIOError

    if isinstance(exc, RasterioIOError):
        return ValueError(f"{UNREADABLE} ({exc.__cause__ or exc})")
    return exc


def _make_tile(
    source: TileSource,
    settings: ReadSettings,
    bands: tuple[BandFile, ...],
    facts: SceneFacts,
    grid: Grid,
    native: NativeBands,
    mask_fractions: dict[str, float],
) -> Tile:
    """The Tile of a window's pixels: nodata and value checks, offset, geometry and facts."""
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    col, row, width, height = source.window or (0, 0, grid.width, grid.height)
    transform = window_transform(Window(col, row, width, height), grid.transform)
    nodata_fraction = nodata_fraction_of(native, grid.nodata)
    if nodata_fraction >= 1.0:
        raise SkipTile("every pixel is nodata")
    if nodata_fraction > settings.max_nodata:
        raise SkipTile(
            f"{nodata_fraction:.0%} of the pixels are nodata (more than --max-nodata {settings.max_nodata:.0%})"
        )
    if native.dtype.kind == "f" and not all(np.isfinite(plane).all() for plane in native.planes):
        raise ValueError("pixel values contain NaN or infinity")

    names = facts.names
    # 8 bits cannot hold digital numbers (reflectance x 10000): such files are true-colour brightness.
    full_scale = float(np.iinfo(np.uint8).max) if native.dtype == np.uint8 else None
    if full_scale is not None:
        offset = 0.0
    elif settings.offset is not None:
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
        pixels=Pixels.at_native_resolution(native, tuple(b.band for b in bands), offset, full_scale),
        crs=grid.crs.to_string() if grid.crs else None,
        width=width,
        height=height,
        pixel_size=float(abs(grid.transform.a)),
        bounds=bounds,
        footprint=footprint,
        level=names.level,
        acquired=normal_time(facts.acquired or names.acquired),
        product=names.product,
        mgrs_tile=names.mgrs_tile,
        processing_baseline=names.processing_baseline,
        cloud_cover=cloud_cover,
        nodata_fraction=nodata_fraction,
        scene=source.path if source.window else None,
        extra=extra,
        transform=tuple(float(v) for v in transform[:6]),
        nodata=None if grid.nodata is None else float(grid.nodata),
    )


def _by_path(bands) -> dict[str, list[int]]:
    """Positions in `bands` of the bands of each file, so that each file is opened (and read) once."""
    by_path: dict[str, list[int]] = {}
    for i, band in enumerate(bands):
        by_path.setdefault(band.path, []).append(i)
    return by_path


def _native_bands(parts, size: tuple[int, int]) -> NativeBands:
    """A tile's bands from what each file gave: (planes, cols, rows, positions) with the rows and columns of
    the grid's nearest pixels in the planes (None: on the grid). Files of one resolution form one group."""
    dtypes = {planes.dtype for planes, *_ in parts}
    if len(dtypes) > 1:
        raise ValueError(f"bands are stored with different data types ({', '.join(sorted(map(str, dtypes)))})")
    grouped: dict[tuple, list] = {}
    for planes, cols, rows, positions in parts:
        key = (None, None) if rows is None else (tuple(rows.tolist()), tuple(cols.tolist()))
        grouped.setdefault((planes.shape[1:], *key), []).append((planes, positions))
    groups, stacked = [], []
    for (_, rows, cols), members in grouped.items():
        # A copy even of one file's planes: a chip must not keep its whole strip alive.
        stacked.append(np.concatenate([planes for planes, _ in members]))
        groups.append(BandGroup(tuple(i for _, positions in members for i in positions), rows, cols))
    return NativeBands(tuple(stacked), tuple(groups), size)


def _read_bands(bands, grid: Grid, window) -> NativeBands:
    """The window of every band, each file opened once: bands on the reference grid read exactly, coarser
    ones at their own resolution (the pixels that cover the window)."""
    import rasterio

    parts = []
    for path, positions in _by_path(bands).items():
        with rasterio.open(path) as raster:
            _check_same_area(raster, grid, path)
            indexes = [bands[i].index for i in positions]
            parts.append((*_read_native_window(raster, indexes, grid, window), positions))
    return _native_bands(parts, (int(window.height), int(window.width)))


def _read_native_window(raster, indexes: list[int], grid: Grid, window):
    """(planes, cols, rows): the band's own pixels that nearest neighbour takes for the window of the grid, and
    which of them each grid column and row takes (None, None: read on the grid)."""
    from rasterio.windows import Window

    coarser = raster.width <= grid.width and raster.height <= grid.height
    if (raster.width, raster.height) == (grid.width, grid.height) or not coarser:
        return _read_window(raster, indexes, grid, window), None, None
    col, row, width, height = (int(v) for v in (window.col_off, window.row_off, window.width, window.height))
    rows = _nearest(grid.height, raster.height)[row : row + height]
    cols = _nearest(grid.width, raster.width)[col : col + width]
    own = Window(int(cols[0]), int(rows[0]), int(cols[-1] - cols[0]) + 1, int(rows[-1] - rows[0]) + 1)
    return raster.read(indexes, window=own), cols - cols[0], rows - rows[0]


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


def _read_classes(mask: CloudMask, grid: Grid, window) -> np.ndarray:
    import rasterio

    with rasterio.open(mask.path) as raster:
        _check_same_area(raster, grid, mask.path)
        return _read_window(raster, [1], grid, window)[0]


def _mask_fractions(mask: CloudMask, classes: np.ndarray) -> dict[str, float]:
    """Percent of the window's valid pixels that the mask calls cloud (and cloud shadow)."""
    valid = ~np.isin(classes, mask.nodata_classes) if mask.nodata_classes else np.ones(classes.shape, bool)
    if not valid.any():
        return {}
    fractions = {"cloud": 100.0 * float(np.isin(classes[valid], mask.cloud_classes).mean())}
    if mask.shadow_classes:
        fractions["cloud_shadow"] = 100.0 * float(np.isin(classes[valid], mask.shadow_classes).mean())
    return fractions


# A file whose block rows are larger than this (an untiled JPEG 2000, a GeoTIFF written as one strip) is
# read chip row by chip row instead: its blocks are then decoded more than once, but memory stays bounded.
MAX_BLOCK_ROW_BYTES = 256 << 20


def _open_band_files(bands, grid: Grid, opened: ExitStack) -> list[tuple[BlockRows, list[int]]]:
    return [
        (_open_file(path, [bands[i].index for i in positions], grid, opened), positions)
        for path, positions in _by_path(bands).items()
    ]


def _open_file(path: str, indexes: list[int], grid: Grid, opened: ExitStack) -> BlockRows:
    import rasterio

    raster = opened.enter_context(rasterio.open(path))
    _check_same_area(raster, grid, path)
    return BlockRows(raster, indexes, grid)


class BlockRows:
    """Rows of the reference grid read from one file, a whole block row of the file at a time and kept
    until the chips have moved past them: reading the scene's chip rows top to bottom decodes each block
    once, and memory holds at most a chip row plus two block rows of the file (its blocks are the unit a
    JPEG 2000 or tiled GeoTIFF decodes; a 10 m band of a 10980 px scene with 1024 px tiles: 45 MB).

    A coarser band is resampled onto the grid by nearest neighbour exactly as GDAL does for a window read
    (`_read_window`): grid pixel i takes the band's pixel floor((i + 0.5) x band size / grid size)."""

    def __init__(self, raster, indexes: list[int], grid: Grid):
        self.raster, self.indexes, self.grid = raster, indexes, grid
        self.same_grid = (raster.width, raster.height) == (grid.width, grid.height)
        # A band finer than the grid would be decimated by GDAL, perhaps from an overview: read it as a window.
        self.finer = raster.width > grid.width or raster.height > grid.height
        row_bytes = raster.width * len(indexes) * np.dtype(raster.dtypes[indexes[0] - 1]).itemsize
        block_height = raster.block_shapes[indexes[0] - 1][0]
        self.block_height = block_height if block_height * row_bytes <= MAX_BLOCK_ROW_BYTES else 1
        self.first = 0
        self.rows = np.empty((len(indexes), 0, raster.width), raster.dtypes[indexes[0] - 1])
        if not self.same_grid:
            self.columns = _nearest(grid.width, raster.width)

    def on_grid(self, row: int, height: int) -> np.ndarray:
        """(bands, height, grid width): rows row .. row + height of the grid."""
        strip, rows = self.native(row, height)
        return strip if rows is None else strip[:, rows][:, :, self.columns]

    def native(self, row: int, height: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(planes, rows): the file's own rows that rows row .. row + height of the grid take, all columns,
        and which of them each grid row takes (None: the planes are those rows of the grid)."""
        if self.finer:
            from rasterio.windows import Window

            return _read_window(self.raster, self.indexes, self.grid, Window(0, row, self.grid.width, height)), None
        if self.same_grid:
            return self._own_rows(row, row + height), None
        own = _nearest(self.grid.height, self.raster.height)[row : row + height]
        return self._own_rows(int(own[0]), int(own[-1]) + 1), own - own[0]

    def chip_columns(self, strip: np.ndarray, col: int, width: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(planes, cols): the columns of a `native` strip that grid columns col .. col + width take, and
        which of them each grid column takes (None: on the grid)."""
        if self.finer or self.same_grid:
            return strip[:, :, col : col + width], None
        cols = self.columns[col : col + width]
        return strip[:, :, cols[0] : cols[-1] + 1], cols - cols[0]

    def _own_rows(self, first: int, stop: int) -> np.ndarray:
        """The file's own rows first .. stop, reading only block rows not already held."""
        from rasterio.windows import Window

        start = first // self.block_height * self.block_height
        end = min(-(-stop // self.block_height) * self.block_height, self.raster.height)
        held_end = self.first + self.rows.shape[1]
        if self.first <= start < held_end:
            kept, read_from = self.rows[:, start - self.first :], held_end
        else:
            kept, read_from = self.rows[:, :0], start
        if read_from < end:
            window = Window(0, read_from, self.raster.width, end - read_from)
            kept = np.concatenate([kept, self.raster.read(self.indexes, window=window)], axis=1)
        self.first, self.rows = start, kept
        return self.rows[:, first - start : stop - start]


def _nearest(grid_size: int, own_size: int) -> np.ndarray:
    """For each grid pixel, the band pixel nearest neighbour resampling takes (GDAL's rule for RasterIO)."""
    return np.minimum(((np.arange(grid_size) + 0.5) * (own_size / grid_size)).astype(np.int64), own_size - 1)


def nodata_fraction_of(native: NativeBands, nodata: float | None) -> float:
    """Fraction of the grid's pixels where every band is nodata (NativeBands.nodata_mask)."""
    return float(native.nodata_mask(nodata).mean())
