"""Archive layouts, each a reader behind the `msearch.indexer.tiles.Reader` interface.

Discovery offers every file under a root to the readers in order; each claims what it recognises, and
what no reader claims is reported. More specific layouts come first, the plain multiband GeoTIFF last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from msearch.indexer.readers.geotiff import MultibandGeoTIFFReader
from msearch.indexer.readers.perband import PerBandFolderReader
from msearch.indexer.readers.safe import SafeReader
from msearch.indexer.readers.stac import StacReader
from msearch.indexer.tiles import ReadSettings, Reader, TileSource, is_raster_name, iter_files

# SAFE first: its L1C IMG_DATA folders look like per-band folders. STAC before per-band folders: an item
# describing band files says more than their names. The plain multiband GeoTIFF reader takes what is left.
READERS: tuple[Reader, ...] = (SafeReader(), StacReader(), PerBandFolderReader(), MultibandGeoTIFFReader())
READERS_BY_NAME = {reader.name: reader for reader in READERS}


@dataclass
class Discovery:
    sources: list[TileSource] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)  # files that are not rasters of any known layout
    # The paths searched, resolved as the roots of their tiles are: what was catalogued beneath them and is
    # not among `sources` is gone.
    paths: list[Path] = field(default_factory=list)


def discover(roots: list[Path], settings: ReadSettings) -> Discovery:
    found = Discovery()
    for root in roots:
        root = root.resolve()
        found.paths.append(root)
        base = root if root.is_dir() else root.parent
        files = list(iter_files(root))
        for reader in READERS:
            sources, claimed = reader.discover(base, files, settings)
            found.sources.extend(sources)
            files = [f for f in files if f not in claimed]
        found.ignored.extend(f for f in files if not is_raster_name(f))
    return found


def read_tile(source: TileSource, settings: ReadSettings):
    return READERS_BY_NAME[source.reader].read(source, settings)
