"""Scenes decoded once: a scene's chips read together (each block decoded once) equal the same windows read one
by one; the scene reader's memory stays bounded; the catalogue keeps one normal form whatever the layout."""

import shutil
import tracemalloc

import numpy as np
import pytest
import rasterio
from sqlalchemy import text

from msearch.indexer import pipeline
from msearch.indexer.plan import PendingTile, scene_units
from msearch.indexer.readers import ArchivePixels, discover, read_scene, read_tile
from msearch.indexer.tiles import ReadSettings
from msearch.schema.bands import BAND_LAYOUTS
from msearch.schema.catalog import normal_time
from msearch.store.index_store import IndexStore
from msearch.store.vector_codec import VECTOR_ATOL
from tests.indexer.helpers import (
    EUROSAT,
    as_catalogue_of_schema_3,
    copy_eurosat,
    gdal_on_grid,
    tiles_by_key,
    vectors_by_key,
)
from tests.indexer.safe_products import build_safe, build_scene_safe, per_band_copy

MAJORTOM_CELL = "majortom-core-s2l2a/199U/199U_1099R"
SCENE_PX, SCENE_BLOCK = 702, 128  # every row of chips crosses a block boundary


@pytest.fixture(scope="module")
def jp2_scene(shared_data, tmp_path_factory):
    with rasterio.Env() as env:
        if "JP2OpenJPEG" not in env.drivers():
            pytest.skip("GDAL was built without the JP2OpenJPEG driver: SAFE products cannot be written or read")
    return build_scene_safe(shared_data, tmp_path_factory.mktemp("jp2-scene"), SCENE_PX, SCENE_BLOCK)


def assert_same_tiles(sources, settings):
    """Every chip read with its scene equals the same window read on its own, pixel for pixel and fact for fact,
    and both equal the window as GDAL resamples it onto the 10 m grid."""
    together = dict(read_scene(sources, settings))
    assert list(together) == sorted(sources, key=lambda s: (s.window[1], s.window[3], s.window[0]))
    for source in sources:
        alone, chip = read_tile(source, settings), together[source]
        assert not isinstance(chip, Exception), chip
        assert chip.pixels.bands == alone.pixels.bands and chip.pixels.offset == alone.pixels.offset
        assert chip.pixels.native.layout == alone.pixels.native.layout
        assert chip.pixels.data.dtype == alone.pixels.data.dtype
        np.testing.assert_array_equal(chip.pixels.data, alone.pixels.data)
        np.testing.assert_array_equal(chip.pixels.data, gdal_on_grid(source, settings))
        assert (chip.cloud_cover, chip.extra, chip.nodata_fraction) == (
            alone.cloud_cover,
            alone.extra,
            alone.nodata_fraction,
        )
        assert (chip.bounds, chip.footprint, chip.acquired) == (alone.bounds, alone.footprint, alone.acquired)


def test_jp2_scene_chips_equal_the_windows_read_one_by_one(jp2_scene):
    settings = ReadSettings()
    sources = discover([jp2_scene], settings).sources
    assert len(sources) == 9 and {s.reader for s in sources} == {"safe"}
    with rasterio.open(sources[0].option("bands")[1].path) as b02:
        # GDAL reads JPEG 2000 tiles narrower than 1024 px as blocks of whole rows of tiles
        assert b02.block_shapes[0][0] == SCENE_BLOCK and b02.driver == "JP2OpenJPEG"
    assert_same_tiles(sources, settings)


def test_per_band_scene_chips_equal_the_windows_read_one_by_one(shared_data):
    """Major TOM's tiled GeoTIFFs: 20 m and 60 m bands resampled onto the 10 m grid, with its cloud mask;
    overlapping chips (stride 200), so that rows are kept from one row of chips to the next."""
    settings = ReadSettings(stride=200)
    sources = discover([shared_data / MAJORTOM_CELL], settings).sources
    assert len(sources) == 25 and {s.reader for s in sources} == {"per-band"}
    assert_same_tiles(sources, settings)


def test_an_unreadable_band_fails_every_chip_with_the_reason(jp2_scene, tmp_path):
    scene = shutil.copytree(jp2_scene, tmp_path / jp2_scene.name)
    b03 = next(scene.rglob("*_B03_10m.jp2"))
    b03.write_bytes(b03.read_bytes()[:300])
    sources = discover([scene], ReadSettings()).sources
    outcomes = list(read_scene(sources, ReadSettings()))
    assert len(outcomes) == len(sources) == 9
    for _, outcome in outcomes:
        assert isinstance(outcome, ValueError) and "not a readable raster" in str(outcome)


def test_the_scene_reader_holds_a_few_block_rows_not_the_scene(shared_data, tmp_path):
    """A 3000 px four-band scene in 256 px tiles is 72 MB decoded; read chip by chip as the pipeline does,
    the reader's arrays must stay within about a chip row and two block rows of each band (18 MB here)."""
    size, block = 3000, 256
    folder = tmp_path / "S2B_MSIL2A_20200223T032739_N9999_R018_T48QUE_20230924T183543"
    folder.mkdir()
    with rasterio.open(next((shared_data / MAJORTOM_CELL).rglob("B02.tif"))) as cell:
        base, profile = cell.read(1), dict(cell.profile)
    profile.update(width=size, height=size, tiled=True, blockxsize=block, blockysize=block, compress="deflate", count=1)
    for band in ("B02", "B03", "B04", "B08"):
        data = np.pad(base, [(0, size - base.shape[0]), (0, size - base.shape[1])], "symmetric")
        with rasterio.open(folder / f"{band}.tif", "w", **profile) as out:
            out.write(data, 1)
    whole_scene = 4 * size * size * 2
    sources = discover([folder], ReadSettings()).sources
    assert len(sources) == 13 * 13

    tracemalloc.start()
    try:
        read = 0
        for _, tile in read_scene(sources, ReadSettings()):
            assert not isinstance(tile, Exception), tile
            read += 1
            del tile
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read == len(sources)
    assert peak < whole_scene / 3, f"peak {peak / 2**20:.0f} MiB of a {whole_scene / 2**20:.0f} MiB scene"


# -- pipeline: scenes as units of work ---------------------------------------------------------------------


def test_scene_units_keep_each_scene_whole_and_group_tiles(jp2_scene, shared_data, tmp_path):
    eurosat = copy_eurosat(shared_data, tmp_path / "eurosat", per_class=3)
    sources = discover([jp2_scene, tmp_path / "eurosat", shared_data / MAJORTOM_CELL], EUROSAT).sources
    pending = [PendingTile(source, "", ("tiny-ms-clip",)) for source in sources]
    units = scene_units(pending, 4)
    assert [len(unit) for unit in units] == [9, 25, 4, 2]
    assert [len({item.source.scene for item in unit}) for unit in units] == [1, 1, 4, 2]
    assert sorted(i.source.key for u in units for i in u) == sorted(s.key for s in sources)
    assert len(eurosat) == 6


def test_reader_processes_index_scenes_as_the_main_process_does(jp2_scene, shared_data, tmp_path, tiny_msclip):
    copy_eurosat(shared_data, tmp_path / "data" / "eurosat")
    shutil.copytree(jp2_scene, tmp_path / "data" / jp2_scene.name)
    vectors = {}
    for workers in (0, 2):
        index = tmp_path / f"index-{workers}"
        summary = pipeline.index_archive(
            [tmp_path / "data"],
            index=index,
            encoders={"tiny-ms-clip": tiny_msclip},
            settings=EUROSAT,
            batch_size=5,
            workers=workers,
        )
        assert (summary.indexed, summary.failed, summary.skipped) == (9 + 4, [], [])
        vectors[workers] = vectors_by_key(index, "tiny-ms-clip")
    assert sorted(vectors[0]) == sorted(vectors[2])
    for key, vector in vectors[0].items():
        np.testing.assert_allclose(vectors[2][key], vector, atol=VECTOR_ATOL)


# -- catalogue normal form -------------------------------------------------------------------------------


def test_safe_and_per_band_copies_of_one_product_are_catalogued_alike(shared_data, tmp_path, tiny_msclip):
    """The same L2A product as a SAFE and as a per-band folder (Major TOM style, named by the product):
    the same bands string (canonical order: B8A after B08) and the same acquisition time."""
    safe = build_safe(shared_data, tmp_path / "safe", "L2A")
    per_band = per_band_copy(safe, tmp_path / "per-band")
    assert len(list(per_band.glob("*.tif"))) == 12
    rows = {}
    for name, folder in (("safe", safe.parent), ("per-band", per_band.parent)):
        pipeline.index_archive(
            [folder], index=tmp_path / f"index-{name}", encoders={"tiny-ms-clip": tiny_msclip}, workers=0
        )
        rows[name] = [row for key, row in sorted(tiles_by_key(tmp_path / f"index-{name}").items())]
    assert {row["reader"] for row in rows["safe"]} == {"safe"}
    assert {row["reader"] for row in rows["per-band"]} == {"per-band"}
    assert len(rows["safe"]) == len(rows["per-band"]) == 9
    for safe_row, band_row in zip(rows["safe"], rows["per-band"]):
        assert safe_row["window"] == band_row["window"]
        assert safe_row["bands"] == band_row["bands"] == ",".join(BAND_LAYOUTS["l2a"])
        assert safe_row["acquired"] == band_row["acquired"] == "2022-07-06T08:56:11Z"
        assert safe_row["file_band_order"] is None and band_row["file_band_order"] is None


def test_normal_time_forms():
    assert normal_time("2022-07-06T08:56:11.024Z") == "2022-07-06T08:56:11Z"
    assert normal_time("2017-06-13 10:10:31") == "2017-06-13T10:10:31Z"
    assert normal_time("2022-07-06T10:56:11.999+02:00") == "2022-07-06T08:56:11Z"
    assert normal_time("2020-02-23") == "2020-02-23" and normal_time(None) is None


def test_an_older_catalogue_is_rewritten_to_the_normal_form_and_never_misread(shared_data, tmp_path, tiny_msclip):
    """EuroSAT tiles (13 bands, B8A last, no band names in the file) catalogued before the normal form: their
    `bands` held the file order. Opening the catalogue moves that order to file_band_order, so re-reading a
    tile still gives each band its true name."""
    copy_eurosat(shared_data, tmp_path / "eurosat", classes=("River",), per_class=1)
    index = tmp_path / "index"
    pipeline.index_archive(
        [tmp_path / "eurosat"], index=index, encoders={"tiny-ms-clip": tiny_msclip}, settings=EUROSAT, workers=0
    )
    store = IndexStore(index)
    ids, vectors = store.all_vectors("tiny-ms-clip")
    with store.engine.begin() as conn:  # as an older msearch wrote it: no schema version, float32 vectors
        conn.execute(text("DROP TABLE catalogue_meta"))
        as_catalogue_of_schema_3(conn)
        for tile_id, vector in zip(ids.tolist(), vectors):
            conn.execute(
                text("UPDATE vectors SET vector = :vector WHERE tile_id = :tile_id"),
                {"vector": vector.astype("<f4").tobytes(), "tile_id": tile_id},
            )
        conn.execute(text("ALTER TABLE tiles DROP COLUMN file_band_order"))
        conn.execute(
            text("UPDATE tiles SET bands = :bands, acquired = '2017-06-13 10:10:31.5'"),
            {"bands": ",".join(BAND_LAYOUTS["eurosat"])},
        )
    store.engine.dispose()
    (row,) = tiles_by_key(index).values()
    assert row["bands"] == ",".join(BAND_LAYOUTS["l1c"]) and row["acquired"] == "2017-06-13T10:10:31Z"
    assert row["file_band_order"] == ",".join(BAND_LAYOUTS["eurosat"])
    pixels = ArchivePixels().of_tile(row)
    with rasterio.open(tmp_path / "eurosat" / row["path"]) as raster:
        stored = raster.read()
    assert pixels.bands == BAND_LAYOUTS["eurosat"]
    np.testing.assert_array_equal(pixels.data, stored)
