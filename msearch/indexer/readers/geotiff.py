"""Single multiband GeoTIFFs (12-band L2A, 13-band L1C, EuroSAT), in any band order; large ones are cut
into chips like every other scene."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from msearch.indexer.naming import facts_from_name
from msearch.indexer.readers.stack import BandFile, SceneFacts, read_scene_with, read_stack, scene_sources
from msearch.indexer.tiles import ReadSettings, SkipTile, Tile, TileSource, is_raster_name, relative_key
from msearch.schema.bands import BAND_LAYOUTS, COMMON_NAMES, DEFAULT_LAYOUT_BY_COUNT, canonical_band

# Colour interpretations GDAL records for true-colour files (TerraMesh S2RGB, RGB quicklooks).
TRUE_COLOUR = {"red": "B04", "green": "B03", "blue": "B02"}


class MultibandGeoTIFFReader:
    name = "geotiff"

    def discover(self, root: Path, files: list[Path], settings: ReadSettings) -> tuple[list[TileSource], set[Path]]:
        rasters = [path for path in files if is_raster_name(path)]
        sources = [
            source
            for path in rasters
            for source in scene_sources(root, relative_key(root, path), (path,), self.name, str(path), settings)
        ]
        return sources, set(rasters)

    def read(self, source: TileSource, settings: ReadSettings) -> Tile:
        return read_stack(source, settings, *self.parts(source, settings))

    def read_scene(self, sources: list[TileSource], settings: ReadSettings) -> Iterator[tuple[TileSource, object]]:
        return read_scene_with(sources, settings, self.parts)

    def parts(self, source: TileSource, settings: ReadSettings) -> tuple:
        """(bands, facts, no cloud mask) of a file, the same for each of its chips."""
        import rasterio
        from rasterio.errors import RasterioIOError

        path = source.files[0]
        try:
            with rasterio.open(path) as raster:
                colours = tuple(c.name for c in raster.colorinterp)
                names = band_names(raster.descriptions, raster.count, settings.band_order, colours)
        except RasterioIOError as exc:
            raise ValueError(f"not a readable raster ({exc.__cause__ or exc})") from None
        bands = tuple(BandFile(name, str(path), index) for index, name in enumerate(names, start=1))
        return bands, SceneFacts(names=facts_from_name(source.path)), None


def band_names(
    descriptions: tuple[str | None, ...],
    count: int,
    declared: tuple[str, ...] | None,
    colours: tuple[str, ...] = (),
) -> tuple[str, ...]:
    """Band names from the file's band descriptions when they all name bands (or colours), else from its
    red/green/blue colour interpretations (a true-colour file), else the declared order, else the one layout
    a band count implies without ambiguity. Fewer than three bands, unless declared, are not imagery (class
    maps, masks)."""
    try:
        if all(descriptions):
            return tuple(COMMON_NAMES.get(d.strip().lower()) or canonical_band(d) for d in descriptions)
    except ValueError:
        pass  # descriptions that are not band names (e.g. 'stackstac-...') say nothing about the order
    if colours and all(c in TRUE_COLOUR for c in colours) and len(set(colours)) == count:
        return tuple(TRUE_COLOUR[c] for c in colours)
    if count < 3 and (declared is None or len(declared) != count):
        raise SkipTile(f"not imagery: {count} band{'s' if count > 1 else ''} (a class map or mask?)")
    if declared is not None:
        if len(declared) != count:
            raise ValueError(f"the file has {count} bands but --band-order names {len(declared)}")
        return declared
    if count in DEFAULT_LAYOUT_BY_COUNT:
        return BAND_LAYOUTS[DEFAULT_LAYOUT_BY_COUNT[count]]
    if count == 13:
        raise ValueError(
            "13 bands without band descriptions: the order is ambiguous (EuroSAT puts B8A last, L1C stacks put "
            "it after B08); pass --band-order eurosat or --band-order l1c"
        )
    raise ValueError(f"{count} bands without band descriptions; pass --band-order B01,B02,... naming each band")
