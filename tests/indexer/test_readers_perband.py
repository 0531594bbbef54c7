"""Per-band folders on the real sample archives: BigEarthNet, SSL4EO-S12 and Major TOM."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from shapely.geometry import shape
from shapely.ops import unary_union

from msearch.indexer.readers import discover, read_tile
from msearch.indexer.tiles import ReadSettings
from msearch.schema.bands import BAND_LAYOUTS

SETTINGS = ReadSettings()
MAJORTOM_CELL = "majortom-core-s2l2a/199U/199U_1099R"


def test_bigearthnet_patches_stack_twelve_bands_on_the_10m_grid(shared_data):
    found = discover([shared_data / "bigearthnet-s2"], SETTINGS)
    assert len(found.sources) == 7 and {s.reader for s in found.sources} == {"per-band"}
    assert [p.name for p in found.ignored] == ["labels.csv"]  # the labels_metadata.json sidecars are claimed
    for source in found.sources:
        tile = read_tile(source, SETTINGS)
        assert set(tile.pixels.bands) == set(BAND_LAYOUTS["l2a"])
        assert tile.pixels.data.shape == (12, 120, 120) and tile.width == tile.height == 120
        assert tile.pixels.offset == 0 and tile.level == "L2A"
        metadata_files = [f for f in source.files if f.name.endswith("_labels_metadata.json")]
        if metadata_files:  # v1 patches: the date comes from the sidecar (one folder name has a 5-digit time)
            metadata = json.loads(metadata_files[0].read_text())
            assert tile.acquired == metadata["acquisition_date"].replace(" ", "T") + "Z"
            assert tile.extra["labels"] == metadata["labels"]
        else:  # the v2 patch: from its folder name
            assert tile.acquired == "2017-06-13T10:10:31Z" and tile.processing_baseline == "99.99"


def test_bigearthnet_date_from_sidecar_when_the_name_has_none(shared_data):
    found = discover([shared_data / "bigearthnet-s2" / "S2B_MSIL2A_20170924T93020_69_24"], SETTINGS)
    tile = read_tile(found.sources[0], SETTINGS)
    assert tile.acquired == "2017-09-24T09:30:20Z" and tile.mgrs_tile == "35VPK"


def test_20m_and_60m_bands_are_resampled_by_nearest_keeping_exact_values(shared_data):
    patch = shared_data / "bigearthnet-s2" / "S2A_MSIL2A_20170613T101031_87_48"
    tile = read_tile(discover([patch], SETTINGS).sources[0], SETTINGS)
    for band, factor in (("B05", 2), ("B01", 6)):
        with rasterio.open(patch / f"S2A_MSIL2A_20170613T101031_87_48_{band}.tif") as raster:
            stored = raster.read(1)
        expected = np.repeat(np.repeat(stored, factor, axis=0), factor, axis=1)
        np.testing.assert_array_equal(tile.pixels.data[tile.pixels.bands.index(band)], expected)


def test_ssl4eo_folders_get_date_cloud_cover_and_product_facts(shared_data):
    found = discover([shared_data / "ssl4eo-s12"], SETTINGS)
    assert len(found.sources) == 4 and [p.name for p in found.ignored] == ["files.csv"]
    for source in found.sources:
        tile = read_tile(source, SETTINGS)
        metadata = json.loads(next(f for f in source.files if f.name == "metadata.json").read_text())
        l1c = source.key.startswith("s2c/")
        assert tile.pixels.data.shape == ((13 if l1c else 12), 264, 264)
        assert set(tile.pixels.bands) == set(BAND_LAYOUTS["l1c" if l1c else "l2a"])
        assert tile.level == ("L1C" if l1c else "L2A")
        assert tile.cloud_cover == pytest.approx(metadata["CLOUDY_PIXEL_PERCENTAGE"])
        assert tile.acquired.startswith(Path(source.key).name[:4] + "-")
        assert tile.mgrs_tile == "43RCP" and tile.processing_baseline == metadata["PROCESSING_BASELINE"]
        assert tile.product == metadata["PRODUCT_ID"]
        assert tile.pixels.offset == 0  # 2020 products, baselines 02.x
    august = read_tile(next(s for s in found.sources if "20200813" in s.key), SETTINGS)
    assert august.acquired == "2020-08-13T05:46:39Z" and august.cloud_cover == pytest.approx(1.948562)


def test_majortom_cell_is_cut_into_chips_that_tile_it(shared_data):
    cell = shared_data / MAJORTOM_CELL
    found = discover([cell], SETTINGS)
    assert {p.name for p in found.ignored} == set()  # thumbnail.png and cloud_mask.tif are the tile's own
    assert len(found.sources) == 25  # 1068 = 4 x 224 + 172: the 172 px edge is its own chip
    covered = np.zeros((1068, 1068), int)
    for source in found.sources:
        col, row, width, height = source.window
        assert source.key.endswith(f"#{col},{row},{width},{height}")
        covered[row : row + height, col : col + width] += 1
    assert (covered == 1).all()

    tiles = [read_tile(source, SETTINGS) for source in found.sources]
    chips = [shape(tile.footprint) for tile in tiles]
    with rasterio.open(next(cell.rglob("B02.tif"))) as raster:
        from msearch.indexer.tiles import wgs84_geometry

        _, cell_footprint = wgs84_geometry(raster.crs, raster.transform, raster.width, raster.height)
    cell_area = shape(cell_footprint).area
    assert unary_union(chips).area == pytest.approx(cell_area, rel=1e-6)
    assert sum(chip.area for chip in chips) == pytest.approx(cell_area, rel=1e-6)
    for first, second in itertools.combinations(chips, 2):
        assert first.intersection(second).area < cell_area * 1e-9
    for tile in tiles:
        assert tile.scene == found.sources[0].path and tile.pixels.data.shape[1:] == (tile.height, tile.width)
        assert tile.acquired == "2020-02-23T03:27:39Z" and tile.mgrs_tile == "48QUE"
        assert tile.pixels.offset == 0  # N9999: harmonised
        assert tile.cloud_cover == 0.0  # from cloud_mask.tif, per chip


def test_majortom_n0400_product_carries_the_offset(shared_data):
    found = discover([shared_data / "majortom-core-s2l2a" / "0U"], SETTINGS)
    darkest = min(read_tile(source, SETTINGS).pixels.select(("B02",)).min() for source in found.sources)
    assert read_tile(found.sources[0], SETTINGS).pixels.offset == 1000
    assert darkest == 662  # the stored darkest B02 is 1662


def test_stride_smaller_than_chip_overlaps_and_still_reaches_the_edges(shared_data):
    settings = ReadSettings(stride=112)
    found = discover([shared_data / MAJORTOM_CELL], settings)
    windows = [s.window for s in found.sources]
    assert max(c + w for c, _, w, _ in windows) == 1068 and max(r + h for _, r, _, h in windows) == 1068
    assert all(w >= 112 for _, _, w, _ in windows)
