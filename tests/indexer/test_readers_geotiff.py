"""The multiband GeoTIFF reader: offsets, and chips of large multiband scenes with nodata."""

import numpy as np
import pytest
import rasterio

from msearch.indexer.readers import discover, read_tile
from msearch.indexer.tiles import ReadSettings, SkipTile
from msearch.schema.bands import BAND_LAYOUTS

MSCLIP_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
# TerraMesh's L1C tile of this place carries the +1000 offset (its cirrus band B10 sits at ~1005 and its
# water pixels' B12 at ~1012); nothing in the file says so, so it is forced as a user would.
PLACE = "282D_485L_3_3"


def test_terramesh_l1c_and_l2a_agree_after_offset_removal(shared_data):
    folder = shared_data / "terramesh-examples"
    l2a_settings = ReadSettings()
    l1c_settings = ReadSettings(band_order=BAND_LAYOUTS["l1c"], offset=1000)
    l2a = read_tile(discover([folder / "S2L2A" / f"{PLACE}.tif"], l2a_settings).sources[0], l2a_settings)
    l1c = read_tile(discover([folder / "S2L1C" / f"{PLACE}.tif"], l1c_settings).sources[0], l1c_settings)
    assert l2a.pixels.offset == 0 and l1c.pixels.offset == 1000
    boa, toa = l2a.pixels.select(MSCLIP_BANDS), l1c.pixels.select(MSCLIP_BANDS)
    # In the near and short-wave infrared the atmosphere changes little: top and bottom of atmosphere agree.
    for band in ("B8A", "B11", "B12"):
        i = MSCLIP_BANDS.index(band)
        assert np.median(np.abs(boa[i] - toa[i])) < 150
        assert np.median(np.abs(boa[i] - l1c.pixels.data[l1c.pixels.bands.index(band)])) > 800  # offset kept
    assert all(np.corrcoef(b.ravel(), t.ravel())[0, 1] > 0.95 for b, t in zip(boa, toa))


@pytest.fixture
def scene_with_nodata(shared_data, tmp_path):
    """A 12-band 1068 px scene (Major TOM's bands stacked) with an empty corner chip and a mostly empty one."""
    folder = shared_data / "majortom-core-s2l2a" / "199U" / "199U_1099R"
    product = next(folder.iterdir())
    planes = []
    for band in BAND_LAYOUTS["l2a"]:
        with rasterio.open(product / f"{band}.tif") as raster:
            planes.append(raster.read(1, out_shape=(1068, 1068)))
            profile = dict(crs=raster.crs, transform=raster.transform @ raster.transform.scale(raster.width / 1068))
    data = np.stack(planes)
    data[:, 0:224, 0:224] = 0  # chip 0,0: all nodata
    data[:, 0:224, 224 : 224 + 160] = 0  # chip 224,0: 160/224 = 71% nodata
    path = tmp_path / "S2B_MSIL2A_20200223T032739_N9999_R018_T48QUE_stack.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=1068, height=1068, count=12, dtype="uint16", tiled=True, **profile
    ) as out:
        out.write(data)
        for index, band in enumerate(BAND_LAYOUTS["l2a"], start=1):
            out.set_band_description(index, band)
    return path, data


def test_multiband_scene_is_chipped_and_nodata_chips_are_skipped(scene_with_nodata):
    path, data = scene_with_nodata
    settings = ReadSettings()
    sources = {s.window: s for s in discover([path], settings).sources}
    assert len(sources) == 25 and all(s.reader == "geotiff" for s in sources.values())
    with pytest.raises(SkipTile, match="every pixel is nodata"):
        read_tile(sources[(0, 0, 224, 224)], settings)
    with pytest.raises(SkipTile, match="71% of the pixels are nodata"):
        read_tile(sources[(224, 0, 224, 224)], settings)
    tolerant = ReadSettings(max_nodata=0.8)
    assert read_tile(sources[(224, 0, 224, 224)], tolerant).nodata_fraction == pytest.approx(160 / 224)
    edge = read_tile(sources[(896, 896, 172, 172)], settings)
    np.testing.assert_array_equal(edge.pixels.data, data[:, 896:, 896:])
    assert edge.scene == path.name and edge.width == edge.height == 172
    assert edge.mgrs_tile == "48QUE" and edge.acquired == "2020-02-23T03:27:39Z"


def test_tiles_up_to_twice_the_chip_size_stay_whole(shared_data):
    found = discover([shared_data / "hydro"], ReadSettings())
    assert all(source.window is None for source in found.sources)  # 256 px patches
