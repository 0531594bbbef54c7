"""The uniform contract between archive layouts and the rest of the indexer.

A reader turns a folder into `TileSource`s (cheap: no pixels read), and a `TileSource` into a `Tile`
(pixels by band name + everything the catalogue records). Every layout — multiband GeoTIFFs, per-band
folders, SAFE products, STAC items, chips of whole scenes — is a reader behind this one interface.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Protocol

from msearch.schema.pixels import Pixels

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt")


@dataclass(frozen=True)
class ReadSettings:
    """What the user told `msearch index` about their data."""

    band_order: tuple[str, ...] | None = None  # for multiband files without band descriptions
    offset: float | None = None  # force the radiometric offset the values carry (None: from metadata)
    chip_size: int = 224  # scenes larger than a chip are cut into chips of this many 10 m pixels
    stride: int | None = None  # chip stride; None means chip_size (chips tile the scene)
    max_nodata: float = 0.5  # chips with a larger nodata fraction are skipped


@dataclass(frozen=True)
class TileSource:
    """One tile to index. `key` is unique within `root` and stable across runs: the path relative to the
    root, plus `#col,row,width,height` for a chip of a larger scene."""

    root: Path
    key: str
    files: tuple[Path, ...]  # every file the tile is read from: a change to any of them re-embeds it
    reader: str
    window: tuple[int, int, int, int] | None = None  # col_off, row_off, width, height on the 10 m grid
    options: tuple[tuple[str, object], ...] = ()  # reader-specific facts found at discovery
    # Tiles read from remote assets (URLs, not among `files`): what stands for their content, e.g. the STAC
    # item's id and `updated`. Remote files have no size and mtime to stat and are never downloaded to hash.
    remote_identity: str | None = None

    @property
    def scene(self) -> tuple:
        """Sources with the same scene are chips of one raster (or one tile, whose scene is unique)."""
        return (self.reader, str(self.root), self.path, self.files)

    @property
    def path(self) -> str:
        """The file or folder, relative to the root, as users refer to it."""
        return self.key.split("#", 1)[0]

    def option(self, name: str, default=None):
        return dict(self.options).get(name, default)

    def stat_signature(self) -> str:
        return stat_signature(self.files, self.remote_identity)


def stat_signature(files: tuple[Path, ...], remote_identity: str | None = None) -> str:
    """Changes whenever any file's size or modification time does (no file contents read), or the remote
    identity (`TileSource.remote_identity`). Files are named by their resolved paths, so the signature is the
    same whatever root or symbolic link led to them."""
    parts = [remote_identity] if remote_identity else []
    for path in files:
        stat = os.stat(path)
        parts.append(f"{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}")
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


@dataclass
class Tile:
    """A read tile: pixels by band name and what the catalogue records about it."""

    source: TileSource
    pixels: Pixels
    crs: str | None = None
    width: int | None = None
    height: int | None = None
    pixel_size: float | None = None  # in CRS units (metres for UTM)
    bounds: tuple[float, float, float, float] | None = None  # WGS84 min lon, min lat, max lon, max lat
    footprint: dict | None = None  # WGS84 GeoJSON Polygon
    level: str | None = None  # "L1C" or "L2A"
    acquired: str | None = None  # ISO 8601 UTC (msearch.schema.catalog.normal_time), or a date
    product: str | None = None
    mgrs_tile: str | None = None
    processing_baseline: str | None = None
    cloud_cover: float | None = None  # percent of the tile (or of its scene when only that is known)
    nodata_fraction: float | None = None
    scene: str | None = None  # for chips: the scene (relative path) they were cut from
    extra: dict = field(default_factory=dict)
    # The affine transform of the tile's grid (its window on the scene, for a chip), GDAL's order (a, b, c, d,
    # e, f), and the grid's declared nodata value: where heat maps put per-patch values (schema.PlacedPixels).
    transform: tuple[float, float, float, float, float, float] | None = None
    nodata: float | None = None


class SkipTile(Exception):
    """A tile that is read correctly but should not be indexed (e.g. all nodata); recorded as skipped."""


class Reader(Protocol):
    name: str

    def discover(self, root: Path, files: list[Path], settings: ReadSettings) -> tuple[list[TileSource], set[Path]]:
        """Tiles this reader recognises among `files` (sorted, all under `root`, none claimed yet), and the
        files it claims: claimed files are not offered to later readers."""

    def read(self, source: TileSource, settings: ReadSettings) -> Tile:
        """Pixels and metadata; raises an exception with a clear message when the tile is unusable."""

    def read_scene(self, sources: list[TileSource], settings: ReadSettings) -> Iterator[tuple[TileSource, object]]:
        """The chips of one scene (same files, different windows), each exactly as `read` gives it but with
        every block of the scene decoded once: (source, Tile) or (source, the exception `read` would raise)."""


@contextlib.contextmanager
def quiet_rasterio():
    """Without rasterio's warnings (NotGeoreferencedWarning, a UserWarning): a file without a geotransform,
    often a truncated one, is reported as a problem of its tile, not as a warning on the terminal. Matched
    by module, so that a re-check that opens no raster does not import rasterio for its warning class."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"rasterio(\.|$)")
        yield


def relative_key(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix() if path != root else path.name


def is_raster_name(path: Path) -> bool:
    return path.suffix.lower() in RASTER_SUFFIXES


def wgs84_geometry(crs, transform, width: int, height: int) -> tuple[tuple[float, float, float, float], dict]:
    """Bounds (rasterio's transform_bounds, densified) and footprint polygon in WGS84 of a raster grid."""
    from rasterio.transform import array_bounds
    from rasterio.warp import transform_bounds, transform_geom

    south, west, north, east = _bounds_tuple(array_bounds(height, width, transform))
    if crs is None:
        raise ValueError("the raster has no coordinate reference system")
    bounds = transform_bounds(crs, "EPSG:4326", west, south, east, north, densify_pts=21)
    ring = [(west, south), (east, south), (east, north), (west, north), (west, south)]
    footprint = transform_geom(crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})
    footprint = {"type": "Polygon", "coordinates": [[list(map(float, pt)) for pt in footprint["coordinates"][0]]]}
    return tuple(float(v) for v in bounds), footprint


def _bounds_tuple(bounds) -> tuple[float, float, float, float]:
    # rasterio's array_bounds returns (west, south, east, north)
    west, south, east, north = bounds
    return south, west, north, east


def iter_files(root: Path, unreadable: list[tuple[Path, str]] | None = None) -> Iterable[Path]:
    """Every file under root (or root itself), sorted. Symbolic links to folders are followed, each resolved
    folder at most once (a link back up the tree would loop); the files a link leads to are tiles of the
    folder they are found in, and a file reached twice is indexed once (see `tile_identity`). Folders that
    cannot be listed are appended to `unreadable` as (folder, why)."""
    if root.is_file():
        yield root
        return
    seen: set[str] = set()

    def note(error: OSError) -> None:
        if unreadable is not None:
            unreadable.append((Path(error.filename), error.strerror or str(error)))

    for folder, dirs, names in os.walk(root, onerror=note, followlinks=True):
        resolved = os.path.realpath(folder)
        if resolved in seen:
            dirs[:] = []
            continue
        seen.add(resolved)
        dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(folder, d)) not in seen)
        for name in sorted(names):
            yield Path(folder) / name


def tile_locations(root: str, key: str) -> tuple[str, ...]:
    """Where the tile `key` under `root` lies, its chip suffix kept: root/key; or, when the key begins with
    the root's own name, perhaps beside the root: a folder given as PATH that is itself a tile (a SAFE
    product, a per-band folder) is keyed by its own name (`relative_key`)."""
    location = os.path.join(root, key)
    if key.split("/", 1)[0].split("#", 1)[0] == os.path.basename(root):
        return location, os.path.join(os.path.dirname(root), key)
    return (location,)


class IdentityResolver:
    """`tile_identity` with the resolved folders remembered for one planning pass (tiles share folders)."""

    def __init__(self):
        self._folders: dict[str, str] = {}

    def _resolved(self, location: str) -> str:
        folder, name = os.path.split(location)
        if folder not in self._folders:
            self._folders[folder] = os.path.realpath(folder)
        path = os.path.join(self._folders[folder], name)
        return os.path.realpath(path) if os.path.islink(path) else path

    def tile_identity(self, root: str, key: str) -> str:
        """What a tile is, whatever root or symbolic link led to it: the resolved file or folder it is read
        from, plus its chip window (`#col,row,width,height`)."""
        locations = tile_locations(root, key)
        location = next((loc for loc in locations if os.path.lexists(loc.split("#", 1)[0])), locations[0])
        path, hash_, chip = location.partition("#")
        return self._resolved(path) + hash_ + chip
