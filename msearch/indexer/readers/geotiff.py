"""Single multiband GeoTIFFs (12-band L2A, 13-band L1C, EuroSAT), in any band order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from msearch.indexer.naming import facts_from_name
from msearch.indexer.tiles import ReadSettings, SkipTile, Tile, TileSource, is_raster_name, relative_key, wgs84_geometry
from msearch.schema.bands import BAND_LAYOUTS, DEFAULT_LAYOUT_BY_COUNT, RADIOMETRIC_OFFSET, canonical_band
from msearch.schema.pixels import Pixels


class MultibandGeoTIFFReader:
    name = "geotiff"

    def discover(self, root: Path, files: list[Path], settings: ReadSettings) -> tuple[list[TileSource], set[Path]]:
        sources = [
            TileSource(root=root, key=relative_key(root, path), files=(path,), reader=self.name)
            for path in files
            if is_raster_name(path)
        ]
        return sources, {s.files[0] for s in sources}

    def read(self, source: TileSource, settings: ReadSettings) -> Tile:
        import rasterio
        from rasterio.errors import RasterioIOError

        path = source.files[0]
        try:
            with rasterio.open(path) as raster:
                bands = band_names(raster.descriptions, raster.count, settings.band_order)
                data = raster.read()
                nodata = raster.nodata
                crs, transform = raster.crs, raster.transform
                width, height = raster.width, raster.height
                pixel_size = float(abs(transform.a))
        except RasterioIOError as exc:
            # a failed read says only "Read failed. See previous exception for details.": the GDAL error
            # it chains (e.g. "IReadBlock failed ... TIFFReadEncodedStrip() failed") is the reason
            raise ValueError(f"not a readable raster ({exc.__cause__ or exc})") from None
        facts = facts_from_name(source.path)
        nodata_fraction = nodata_fraction_of(data, nodata)
        if nodata_fraction >= 1.0:
            raise SkipTile("every pixel is nodata")
        if nodata_fraction > settings.max_nodata:
            raise SkipTile(f"{nodata_fraction:.0%} of the pixels are nodata (more than --max-nodata {settings.max_nodata:.0%})")
        if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
            raise ValueError("pixel values contain NaN or infinity")
        if settings.offset is not None:
            offset = settings.offset
        else:
            offset = RADIOMETRIC_OFFSET if facts.carries_offset() else 0.0
        bounds, footprint = wgs84_geometry(crs, transform, width, height)
        return Tile(
            source=source,
            pixels=Pixels(data, bands, offset),
            crs=crs.to_string() if crs else None,
            width=width,
            height=height,
            pixel_size=pixel_size,
            bounds=bounds,
            footprint=footprint,
            level=facts.level,
            acquired=facts.acquired.isoformat() if facts.acquired else None,
            product=facts.product,
            mgrs_tile=facts.mgrs_tile,
            processing_baseline=facts.processing_baseline,
            nodata_fraction=nodata_fraction,
        )


def band_names(descriptions: tuple[str | None, ...], count: int, declared: tuple[str, ...] | None) -> tuple[str, ...]:
    """Band names from the file's band descriptions when they all name bands, else the declared order,
    else the one layout a band count implies without ambiguity."""
    try:
        if all(descriptions):
            return tuple(canonical_band(d) for d in descriptions)
    except ValueError:
        pass  # descriptions that are not band names (e.g. 'stackstac-...') say nothing about the order
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


def nodata_fraction_of(data: np.ndarray, nodata: float | None) -> float:
    """Fraction of pixels where every band is nodata (0 for Sentinel-2 products when the file declares none)."""
    fill = 0 if nodata is None or (isinstance(nodata, float) and np.isnan(nodata)) else nodata
    if nodata is not None and isinstance(nodata, float) and np.isnan(nodata):
        empty = np.isnan(data).all(axis=0)
    else:
        empty = (data == fill).all(axis=0)
    return float(empty.mean())
