"""Archive layouts, each a reader behind the `msearch.indexer.tiles.Reader` interface.

Discovery offers every file under a root to the readers in order; each claims what it recognises, and
what no reader claims is reported. More specific layouts come first, the plain multiband GeoTIFF last.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from msearch.indexer.readers.geotiff import MultibandGeoTIFFReader
from msearch.indexer.readers.perband import PerBandFolderReader
from msearch.indexer.readers.remote import is_remote, redact
from msearch.indexer.readers.safe import SafeReader
from msearch.indexer.readers.stac import StacReader
from msearch.indexer.tiles import Reader, ReadSettings, SkipTile, TileSource, is_raster_name, iter_files, quiet_rasterio
from msearch.schema.pixels import PlacedPixels

# SAFE first: its L1C IMG_DATA folders look like per-band folders. STAC before per-band folders: an item
# describing band files says more than their names. The plain multiband GeoTIFF reader takes what is left.
STAC_READER = StacReader()
READERS: tuple[Reader, ...] = (SafeReader(), STAC_READER, PerBandFolderReader(), MultibandGeoTIFFReader())
READERS_BY_NAME = {reader.name: reader for reader in READERS}
# A chip size no raster exceeds: discovery then gives every scene whole (ArchivePixels.of_tile reads a window of it).
WHOLE_SCENE = 2**30


@dataclass
class Discovery:
    sources: list[TileSource] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)  # files that are not rasters of any known layout
    # The paths searched, resolved as the roots of their tiles are: what was catalogued beneath them and is
    # not among `sources` is gone.
    paths: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # folders that could not be listed, and why


# What "found no rasters" lists as the layouts looked for.
LAYOUTS_READ = (
    "SAFE products (unzipped or .zip), STAC items and catalogues, per-band folders (B02.tif ...), "
    "multiband GeoTIFFs (.tif, .tiff, .jp2, .vrt)"
)


def discover(roots: list[Path], settings: ReadSettings) -> Discovery:
    found = Discovery()
    for root in roots:
        root = root.resolve()
        found.paths.append(root)
        base = root if root.is_dir() else root.parent
        files = list(iter_files(root, found.unreadable))
        for reader in READERS:
            with quiet_rasterio():
                sources, claimed = reader.discover(base, files, settings)
            found.sources.extend(sources)
            files = [f for f in files if f not in claimed]
        found.ignored.extend(f for f in files if not is_raster_name(f))
    return found


def discover_urls(urls: list[str], settings: ReadSettings, root: str | None = None) -> list[TileSource]:
    """The tiles of STAC documents (items, item collections, catalogues) at http(s) URLs, keyed under their
    own folder URL or `root`."""
    sources = []
    for url in urls:
        try:
            sources.extend(STAC_READER.discover_url(url, settings, root))
        except Exception as exc:  # pystac wraps urllib's errors (HTTPError, URLError) in a bare Exception
            cause = exc.__cause__ or exc
            code = getattr(cause, "code", None)
            why = f"HTTP {code} ({cause.reason})" if code else str(getattr(cause, "reason", None) or cause)
            raise ValueError(f"cannot read the STAC document {redact(url)}: {why}") from None
    return sources


def read_tile(source: TileSource, settings: ReadSettings):
    with quiet_rasterio():
        return READERS_BY_NAME[source.reader].read(source, settings)


def read_scene(sources: list[TileSource], settings: ReadSettings):
    """(source, Tile or the exception that stops it) for chips of one scene (`TileSource.scene`), every
    block decoded once; a lone tile or chip is read as `read_tile` reads it."""
    if len(sources) == 1:
        try:
            yield sources[0], read_tile(sources[0], settings)
        except Exception as exc:  # noqa: BLE001 - the caller records it against the tile
            yield sources[0], exc
        return
    with quiet_rasterio():
        yield from READERS_BY_NAME[sources[0].reader].read_scene(sources, settings)


class ArchivePixels:
    """The pixels of a catalogued tile or of a raster file, read as indexing reads them. A searcher needs
    them to embed an example file (`query --like FILE`) or to draw a quicklook; the CLI hands one to
    msearch.search.Searcher, which stands beside the indexer and so does not import the readers itself."""

    def __init__(self, settings: ReadSettings | None = None):
        self.settings = settings or ReadSettings()

    def of_file(self, path: str | Path, band_order: tuple[str, ...] | None = None):
        """A raster file's pixels (its first tile); `band_order` (e.g. the catalogue's for this file) applies
        unless the settings give one."""
        settings = self.settings
        if band_order is not None and settings.band_order is None:
            settings = replace(settings, band_order=band_order)
        found = discover([Path(path)], settings)
        if not found.sources:
            raise ValueError(f"{path} is not a raster msearch can read")
        try:
            return read_tile(found.sources[0], settings).pixels
        except SkipTile as exc:  # a class map, an all-nodata tile: nothing to search with
            raise ValueError(str(exc)) from None

    def of_tile(self, row) -> object:
        """Re-read a catalogued tile (a catalogue row) with the band order and offset it was indexed with."""
        return self._read_catalogued(row).pixels

    def placed(self, row) -> PlacedPixels:
        """A catalogued tile's pixels, re-read as `of_tile` does, with its CRS, grid transform and nodata value."""
        tile = self._read_catalogued(row)
        return PlacedPixels(tile.pixels, tile.crs, tile.transform, tile.nodata)

    def _read_catalogued(self, row):
        settings = ReadSettings(
            band_order=tuple(row["file_band_order"].split(",")) if row["file_band_order"] else None,
            offset=row["offset"],
        )
        window = tuple(int(v) for v in row["window"].split(",")) if row["window"] else None
        if window is not None:
            # A chip is its catalogued window of the whole scene, whatever --chip-size cut it: the scene is
            # found whole (a chip size no raster exceeds) and the window read from it.
            settings = replace(settings, chip_size=WHOLE_SCENE)
        if is_remote(row["root"]):
            # root/path is the item's URL (a STAC API's item, or an item file of a remote catalogue); an item of
            # a remote item collection is keyed below the collection's file.
            candidates = [row["path"], row["path"].rsplit("/", 1)[0]]
            sources = []
            for path in dict.fromkeys(candidates):
                try:
                    sources = discover_urls([f"{row['root']}/{path}"], settings, row["root"])
                except ValueError:
                    continue
                break
            sources = [s for s in sources if s.key.split("#", 1)[0] == row["path"]]
        else:
            sources = discover([Path(row["root"]) / row["path"]], settings).sources
        source = next((s for s in sources if s.window is None), None)
        if source is None:
            raise FileNotFoundError(f"{row['path']} is no longer readable under {row['root']}")
        if window is not None:
            source = replace(source, key=f"{source.key}#{row['window']}", window=window)
        return read_tile(source, settings)
