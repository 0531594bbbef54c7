"""Places: acquisitions of the same ground on the same grid share one place, whatever layout or level they come
in; the catalogue records it, `info` counts it, and a catalogue written before places is migrated without
re-embedding, to the places a fresh index gives."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_bounds
from sqlalchemy import select
from typer.testing import CliRunner

from msearch.cli import app
from msearch.indexer import pipeline
from msearch.indexer.tiles import ReadSettings
from msearch.schema import catalog
from msearch.schema.bands import BAND_LAYOUTS
from msearch.store.index_store import IndexStore
from msearch.store.migrations import MIGRATIONS, _add_places
from msearch.store.places import PlaceAssigner
from tests.indexer.helpers import as_catalogue_before_places
from tests.indexer.safe_products import build_safe, per_band_copy
from tests.places_series import SERIES_DATES, SERIES_SETTINGS, build_majortom_series, landscape_example

runner = CliRunner()
BEFORE_PLACES = next(version for version, step in MIGRATIONS.items() if step is _add_places)  # the places step
EOLEARN_DATES = ("2017-05-01", "2017-06-10", "2017-07-15", "2017-08-09", "2017-09-18")  # given by this test


def places_of(index, catalogue=None) -> dict[int, list[dict]]:
    """{place id: its tile rows in date order}, through the store's accessors."""
    store = IndexStore(index, catalogue=catalogue)
    with store.engine.connect() as conn:
        place_ids = conn.execute(select(catalog.tiles.c.place_id).distinct()).scalars().all()
    found = {place_id: store.place_acquisitions(place_id) for place_id in place_ids}
    store.engine.dispose()
    return found


def tiles_by_key(index_dir, catalogue=None) -> dict[str, dict]:
    store = IndexStore(index_dir, catalogue=catalogue)
    with store.engine.connect() as conn:
        rows = {row["key"]: dict(row) for row in conn.execute(select(catalog.tiles)).mappings()}
    store.engine.dispose()
    return rows


def index(paths, index_dir, encoder, settings=ReadSettings(), catalogue=None):
    return pipeline.index_archive(
        paths, index=index_dir, encoders={"tiny-ms-clip": encoder}, settings=settings, workers=0, catalogue=catalogue
    )


def write_eolearn_dates(shared_data, folder) -> list:
    """The eo-learn test patch (5 dates of a 1 km area in Slovenia, float reflectance) as one 13-band L1C
    GeoTIFF per date, on the patch's grid (its bbox in EPSG:32633)."""
    patch = shared_data / "eolearn-testpatch"
    scenes = np.load(patch / "REFERENCE_SCENES.npy")  # (time, y, x, band)
    ring = json.loads((patch / "TestEOPatch" / "bbox.geojson").read_text())["coordinates"][0]
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    _, height, width, bands = scenes.shape
    transform = from_bounds(min(xs), min(ys), max(xs), max(ys), width, height)
    folder.mkdir(parents=True)
    paths = []
    for date, scene in zip(EOLEARN_DATES, scenes, strict=True):
        path = folder / f"L1C_T33TVM_{date.replace('-', '')}T100031.tif"
        data = np.rint(scene.transpose(2, 0, 1) * 10_000).astype(np.uint16)
        profile = dict(driver="GTiff", width=width, height=height, count=bands, dtype="uint16", crs="EPSG:32633")
        with rasterio.open(path, "w", transform=transform, **profile) as out:
            out.write(data)
        paths.append(path)
    return paths


# -- real archives ------------------------------------------------------------------------------------------


def test_ssl4eo_two_l2a_and_two_l1c_dates_are_four_acquisitions_of_one_place(shared_data, tmp_path, tiny_msclip):
    summary = index([shared_data / "ssl4eo-s12"], tmp_path / "index", tiny_msclip)
    assert summary.indexed == 4
    places = places_of(tmp_path / "index")
    assert len(places) == 1
    (acquisitions,) = places.values()
    assert (
        [(row["acquired"][:10], row["level"]) for row in acquisitions]
        == [
            ("2020-06-04", "L1C"),  # the same date at both levels: two acquisitions (ordered by tile id)
            ("2020-06-04", "L2A"),
            ("2020-08-13", "L2A"),
            ("2020-08-23", "L1C"),
        ]
        or [(row["acquired"][:10], row["level"]) for row in acquisitions]
        == [
            ("2020-06-04", "L2A"),
            ("2020-06-04", "L1C"),
            ("2020-08-13", "L2A"),
            ("2020-08-23", "L1C"),
        ]
    )
    assert [row["acquired"] for row in acquisitions] == sorted(row["acquired"] for row in acquisitions)

    result = runner.invoke(app, ["info", "--index", str(tmp_path / "index"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["tiles"], report["places"], report["acquisitions"]) == (4, 1, 4)
    result = runner.invoke(app, ["info", "--index", str(tmp_path / "index")])
    assert "4 tiles (1 places, 4 acquisitions)" in " ".join(result.output.split())


def test_eolearn_patch_five_dates_are_one_place(shared_data, tmp_path, tiny_msclip):
    write_eolearn_dates(shared_data, tmp_path / "eolearn")
    index([tmp_path / "eolearn"], tmp_path / "index", tiny_msclip, ReadSettings(band_order=BAND_LAYOUTS["l1c"]))
    places = places_of(tmp_path / "index")
    assert len(places) == 1
    (acquisitions,) = places.values()
    assert [row["acquired"][:10] for row in acquisitions] == list(EOLEARN_DATES)
    assert {(row["crs"], row["width"], row["height"]) for row in acquisitions} == {("EPSG:32633", 100, 101)}


def test_chips_of_every_date_of_a_major_tom_cell_share_their_places(shared_data, tmp_path, tiny_msclip):
    series = build_majortom_series(shared_data, tmp_path / "series")
    landscape_example(shared_data, tmp_path / "example")  # another window of the same grid: another place
    index([tmp_path / "series", tmp_path / "example"], tmp_path / "index", tiny_msclip, SERIES_SETTINGS)
    places = places_of(tmp_path / "index")
    assert len(places) == 9 + 1
    by_window = {}
    for acquisitions in places.values():
        windows = {row["window"] for row in acquisitions}
        assert len(windows) == 1  # one chip window of the grid per place (the example is whole: None)
        by_window[windows.pop()] = acquisitions
    assert set(by_window) == {*series.chip_windows, None}
    for window in series.chip_windows:
        assert [row["acquired"][:10] for row in by_window[window]] == list(SERIES_DATES)
    assert len(by_window[None]) == 1


def test_safe_l1c_l2a_and_per_band_copies_of_one_ground_are_one_place(shared_data, tmp_path, tiny_msclip):
    """An L2A SAFE, the L1C SAFE of the same date and the L2A as a per-band folder: each chip window is one
    place with three acquisitions (two levels, two layouts)."""
    with rasterio.Env() as env:
        if "JP2OpenJPEG" not in env.drivers():
            pytest.skip("GDAL was built without the JP2OpenJPEG driver: SAFE products cannot be written or read")
    l2a = build_safe(shared_data, tmp_path / "archive" / "safe-l2a", "L2A")
    build_safe(shared_data, tmp_path / "archive" / "safe-l1c", "L1C")
    per_band_copy(l2a, tmp_path / "archive" / "per-band")
    index([tmp_path / "archive"], tmp_path / "index", tiny_msclip)
    places = places_of(tmp_path / "index")
    assert len(places) == 9
    for acquisitions in places.values():
        assert len({row["window"] for row in acquisitions}) == 1
        assert sorted((row["reader"], row["level"]) for row in acquisitions) == [
            ("per-band", "L2A"),
            ("safe", "L1C"),
            ("safe", "L2A"),
        ]


# -- the rule: same CRS, pixel size and size, corners within half a pixel -----------------------------------


def grid_row(origin_x, origin_y, **changes):
    row = dict(
        crs="EPSG:32648", pixel_size=10.0, pixel_height=10.0, width=96, height=96, origin_x=origin_x, origin_y=origin_y
    )
    return {**row, **changes}


def test_corners_within_half_a_pixel_are_one_place_and_any_other_grid_is_another(tmp_path, catalogue):
    store = IndexStore(tmp_path / "index", create=True, catalogue=catalogue)
    with store.engine.begin() as conn:
        assigner = PlaceAssigner(conn)
        first = assigner.place_for(grid_row(362612.2, 1987088.2))
        assert assigner.place_for(grid_row(362612.2 + 4.9, 1987088.2 - 4.9)) == first  # 0.49 px on each axis
        assert assigner.place_for(grid_row(362612.2 + 5.1, 1987088.2)) != first  # 0.51 px
        assert assigner.place_for(grid_row(362612.2 + 960, 1987088.2)) != first  # the next chip
        assert assigner.place_for(grid_row(362612.2, 1987088.2, crs="EPSG:32647")) != first
        assert assigner.place_for(grid_row(362612.2, 1987088.2, pixel_size=20.0, pixel_height=20.0)) != first
        assert assigner.place_for(grid_row(362612.2, 1987088.2, width=95)) != first
        assert assigner.place_for(grid_row(362612.2, 1987088.2, crs=None)) != first  # no grid: a place of its own
        # corners on either side of a rounding boundary (x.45 and x.55 pixels) are 0.1 px apart: one place
        edge = assigner.place_for(grid_row(1004.5, 2004.5))
        assert PlaceAssigner(conn).place_for(grid_row(1005.5, 2005.5)) == edge
    with store.engine.connect() as conn:  # a new transaction sees them in the catalogue, not in a memo
        assert PlaceAssigner(conn).place_for(grid_row(362612.2 - 3, 1987088.2 + 3)) == first


# -- the catalogue before places ----------------------------------------------------------------------------


def test_a_catalogue_before_places_is_migrated_to_the_places_a_fresh_index_gives(
    shared_data, tmp_path, tiny_msclip, catalogue
):
    series = build_majortom_series(shared_data, tmp_path / "series", SERIES_DATES[:3], (1.0, 0.9, 1.1))
    shutil.copytree(shared_data / "ssl4eo-s12", tmp_path / "ssl4eo")
    index([series.folder, tmp_path / "ssl4eo"], tmp_path / "index", tiny_msclip, SERIES_SETTINGS, catalogue)
    fresh = tiles_by_key(tmp_path / "index", catalogue)
    store = IndexStore(tmp_path / "index", catalogue=catalogue)
    vectors_before = store.all_vectors("tiny-ms-clip")
    with store.engine.begin() as conn:
        as_catalogue_before_places(conn)
        conn.execute(
            catalog.catalogue_meta.update()
            .where(catalog.catalogue_meta.c.key == "schema_version")
            .values(value=str(BEFORE_PLACES))
        )
    store.engine.dispose()

    migrated = tiles_by_key(tmp_path / "index", catalogue)  # opening it migrates it
    assert set(migrated) == set(fresh) and len(fresh) == 9 * 3 + 9 * 4  # SSL4EO's 264 px cut into 9 chips too

    def partition(rows):
        groups = defaultdict(set)
        for key, row in rows.items():
            groups[row["place_id"]].add(key)
        return sorted(map(sorted, groups.values()))

    assert partition(migrated) == partition(fresh) and len(partition(fresh)) == 9 + 9
    for key, row in fresh.items():
        assert migrated[key]["origin_x"] == pytest.approx(row["origin_x"], abs=1e-3 * row["pixel_size"])
        assert migrated[key]["origin_y"] == pytest.approx(row["origin_y"], abs=1e-3 * row["pixel_size"])
        assert migrated[key]["pixel_height"] == pytest.approx(row["pixel_height"], rel=1e-6)
    reopened = IndexStore(tmp_path / "index", catalogue=catalogue)
    ids, vectors = reopened.all_vectors("tiny-ms-clip")  # nothing re-embedded
    assert ids.tolist() == vectors_before[0].tolist()
    np.testing.assert_array_equal(vectors, vectors_before[1])
    assert reopened.place_counts() == (18, 63)


def test_tiles_that_leave_take_their_empty_places_with_them(shared_data, tmp_path, tiny_msclip):
    series = build_majortom_series(shared_data, tmp_path / "series", SERIES_DATES[:2], (1.0, 0.9))
    example = landscape_example(shared_data, tmp_path / "series")
    index([series.folder], tmp_path / "index", tiny_msclip, SERIES_SETTINGS)
    store = IndexStore(tmp_path / "index")
    assert store.place_counts() == (10, 19)
    shutil.rmtree(example)
    shutil.rmtree(series.products[1])
    pipeline.index_archive(
        [series.folder],
        index=tmp_path / "index",
        encoders={"tiny-ms-clip": tiny_msclip},
        settings=SERIES_SETTINGS,
        workers=0,
        prune=True,
    )
    assert store.place_counts() == (9, 9)
    with store.engine.connect() as conn:
        assert len(conn.execute(select(catalog.places.c.id)).scalars().all()) == 9
