"""A real Sentinel-2 scene on one 10 m grid, for tests that cut chips of their own: Major TOM cell 199U_1099R
(NE Thailand: farmland, river, reservoir, town), its 20 m and 60 m bands repeated onto the 10 m grid as the
readers' nearest-neighbour resampling does."""

from pathlib import Path

import numpy as np

from msearch.schema.bands import BAND_LAYOUTS

MAJORTOM_CELL = "majortom-core-s2l2a/199U/199U_1099R"
BANDS = BAND_LAYOUTS["l2a"]


def majortom_scene(shared_data: Path):
    """(values (12, 1068, 1068) uint16 in BAND_LAYOUTS['l2a'] order, CRS, affine transform)."""
    import rasterio

    folder = next((shared_data / MAJORTOM_CELL).iterdir())
    planes = []
    for band in BANDS:
        with rasterio.open(folder / f"{band}.tif") as dataset:
            plane = dataset.read(1)
            if band == "B02":
                crs, transform = dataset.crs, dataset.transform
        factor = 1068 // plane.shape[0]
        planes.append(np.repeat(np.repeat(plane, factor, 0), factor, 1))
    return np.stack(planes), crs, transform


def write_scene(path: Path, values: np.ndarray, crs, transform, nodata=None) -> Path:
    """A multiband GeoTIFF of the scene (band order BANDS, no band descriptions: index with
    band_order=BAND_LAYOUTS['l2a'])."""
    import rasterio

    profile = dict(driver="GTiff", width=values.shape[2], height=values.shape[1], count=values.shape[0])
    profile.update(dtype=values.dtype.name, crs=crs, transform=transform, nodata=nodata)
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(values)
    return path
