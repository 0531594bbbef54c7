"""SAFE products assembled from real bands: discovered, chipped, read with metadata facts and offsets."""

import numpy as np
import pytest
import rasterio

from msearch.indexer.readers import discover, read_tile
from msearch.indexer.tiles import ReadSettings
from tests.indexer.safe_products import CLOUD_BLOCK_20M, GRANULE, PRODUCT, build_safe, zip_product

SETTINGS = ReadSettings()
L2A_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")


@pytest.fixture(scope="module")
def jp2_driver():
    with rasterio.Env() as env:
        if "JP2OpenJPEG" not in env.drivers():
            pytest.skip("GDAL was built without the JP2OpenJPEG driver: SAFE products cannot be written or read")


@pytest.fixture(scope="module")
def l2a_product(shared_data, jp2_driver, tmp_path_factory):
    return build_safe(shared_data, tmp_path_factory.mktemp("safe-l2a"), "L2A")


def test_l2a_product_granule_is_chipped_and_read_with_its_metadata(l2a_product):
    found = discover([l2a_product.parent], SETTINGS)
    assert found.ignored == []  # manifest.safe, MTD_TL.xml and the other resolutions are the product's own
    assert len(found.sources) == 9 and {s.reader for s in found.sources} == {"safe"}
    scene = f"{PRODUCT['L2A']}.SAFE/GRANULE/{GRANULE['L2A']}"
    assert {s.path for s in found.sources} == {scene}
    chip = next(s for s in found.sources if s.window == (224, 0, 224, 224))
    assert chip.key == f"{scene}#224,0,224,224"
    tile = read_tile(chip, SETTINGS)
    assert tile.pixels.bands == L2A_BANDS and tile.pixels.data.shape == (12, 224, 224)
    assert tile.pixels.offset == 1000  # BOA_ADD_OFFSET -1000
    assert tile.acquired == "2022-07-06T08:56:11Z" and tile.level == "L2A"
    assert tile.mgrs_tile == "33NZA" and tile.processing_baseline == "04.00"
    assert tile.product == PRODUCT["L2A"] and tile.scene == scene


def test_l2a_bands_come_from_their_native_resolution(l2a_product):
    found = discover([l2a_product], SETTINGS)
    bands = {b.band: b.path for b in found.sources[0].option("bands")}
    assert bands["B02"].endswith("R10m/T33NZA_20220706T085611_B02_10m.jp2")
    assert bands["B05"].endswith("R20m/T33NZA_20220706T085611_B05_20m.jp2")
    assert bands["B01"].endswith("R60m/T33NZA_20220706T085611_B01_60m.jp2")
    tile = read_tile(next(s for s in found.sources if s.window == (0, 224, 224, 224)), SETTINGS)
    with rasterio.open(bands["B05"]) as raster:
        stored = raster.read(1, window=((112, 224), (0, 112)))
    expected = np.repeat(np.repeat(stored, 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(tile.pixels.data[L2A_BANDS.index("B05")], expected)


def test_scene_classification_gives_each_chip_its_cloud_fraction(l2a_product):
    found = discover([l2a_product], SETTINGS)
    by_window = {s.window: read_tile(s, SETTINGS) for s in found.sources if s.window[1] == 0}
    col, row, width, height = CLOUD_BLOCK_20M  # 20 m block 0..56 x 0..112 -> 10 m 0..112 x 0..224
    assert by_window[(0, 0, 224, 224)].cloud_cover == pytest.approx(50.0)  # half the chip is class 9
    assert by_window[(0, 0, 224, 224)].extra["cloud_shadow"] == pytest.approx(50.0)  # class 3: apart
    assert by_window[(224, 0, 224, 224)].cloud_cover == 0.0
    assert by_window[(448, 0, 152, 224)].cloud_cover == 0.0


def test_zipped_product_is_read_through_vsizip(l2a_product, tmp_path):
    archive = zip_product(l2a_product, tmp_path / f"{PRODUCT['L2A']}.zip")
    found = discover([tmp_path], SETTINGS)
    assert len(found.sources) == 9 and found.ignored == []
    chip = next(s for s in found.sources if s.window == (224, 224, 224, 224))
    assert chip.files == (archive,)
    assert chip.key == f"{archive.name}/{PRODUCT['L2A']}.SAFE/GRANULE/{GRANULE['L2A']}#224,224,224,224"
    unzipped = next(s for s in discover([l2a_product], SETTINGS).sources if s.window == chip.window)
    tile = read_tile(chip, SETTINGS)
    np.testing.assert_array_equal(tile.pixels.data, read_tile(unzipped, SETTINGS).pixels.data)
    assert tile.pixels.offset == 1000 and tile.mgrs_tile == "33NZA"


def test_l1c_product_offsets_and_cloud_cover_from_metadata(shared_data, jp2_driver, tmp_path):
    product = build_safe(shared_data, tmp_path, "L1C")
    found = discover([product], SETTINGS)
    assert len(found.sources) == 9
    tile = read_tile(found.sources[0], SETTINGS)
    assert tile.level == "L1C" and tile.pixels.offset == 1000  # RADIO_ADD_OFFSET -1000
    assert tile.cloud_cover == pytest.approx(12.345678)  # Cloud_Coverage_Assessment: no SCL in L1C
    assert tile.pixels.bands == L2A_BANDS
