"""Heat maps and outlines (msearch.search.heatmaps) over a real index of chips cut from a real scene: a 600 x 560
px window of Major TOM cell 199U_1099R with a nodata corner, cut into 224 px chips and smaller edge chips
(152 px wide, 112 px high), indexed with the tiny models of both families."""

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.io import MemoryFile

from msearch.search.heatmaps import (
    geotiff_bytes,
    heat_maps,
    heat_rgba,
    heat_target,
    otsu_threshold,
    outline,
)
from msearch.search.searcher import QueryError, Searcher
from tests.scenes import majortom_scene, write_scene

SCENE_ROWS, SCENE_COLS = slice(100, 660), slice(200, 800)  # 560 x 600 px of the cell
NODATA_CORNER = 120  # the scene's top-left 120 x 120 px are nodata (0 in every band)


@pytest.fixture(scope="module")
def scene_index(tmp_path_factory, shared_data):
    from msearch.indexer.pipeline import index_archive
    from msearch.indexer.tiles import ReadSettings
    from msearch.schema.bands import BAND_LAYOUTS

    values, crs, transform = majortom_scene(shared_data)
    values = values[:, SCENE_ROWS, SCENE_COLS].copy()
    values[:, :NODATA_CORNER, :NODATA_CORNER] = 0
    scene_transform = transform @ Affine.translation(SCENE_COLS.start, SCENE_ROWS.start)
    base = tmp_path_factory.mktemp("heat")
    (base / "archive").mkdir()
    write_scene(base / "archive" / "scene.tif", values, crs, scene_transform)
    index = base / "index"
    summary = index_archive(
        [base / "archive"],
        index=index,
        models=["tiny-ms-clip", "rs-m-clip"],
        settings=ReadSettings(band_order=BAND_LAYOUTS["l2a"]),
        workers=0,
    )
    assert summary.indexed == 9
    return index, crs, scene_transform


@pytest.fixture(scope="module")
def searcher(scene_index):
    from msearch.indexer.readers import ArchivePixels

    return Searcher(scene_index[0], pixels=ArchivePixels())


def _chips(searcher) -> dict[tuple[int, int, int, int], int]:
    """Tile id by window (col, row, width, height)."""
    with searcher.store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT id, window FROM tiles").all()
    return {tuple(int(v) for v in window.split(",")): tile_id for tile_id, window in rows}


def _geotiff(heat_map):
    with MemoryFile(geotiff_bytes(heat_map)) as memory, memory.open() as dataset:
        return dataset.read(1), dataset.profile, dataset.bounds


def test_chips_of_the_scene(searcher):
    assert sorted(_chips(searcher)) == sorted(
        (col, row, width, height)
        for col, width in ((0, 224), (224, 224), (448, 152))
        for row, height in ((0, 224), (224, 224), (448, 112))
    )


def test_a_full_chips_heat_geotiff_covers_exactly_its_footprint(searcher, scene_index):
    _, crs, scene_transform = scene_index
    tile_id = _chips(searcher)[(224, 0, 224, 224)]
    target = heat_target(searcher, text="a river between fields")
    assert target.space == "tiny-ms-clip"
    [heat_map] = heat_maps(searcher, [tile_id], target)
    values, profile, bounds = _geotiff(heat_map)
    assert values.shape == (14, 14) and profile["dtype"] == "float32" and math.isnan(profile["nodata"])
    assert rasterio.crs.CRS.from_user_input(profile["crs"]) == crs
    chip = scene_transform @ Affine.translation(224, 0)
    assert profile["transform"].almost_equals(chip @ Affine.scale(16), precision=1e-9)
    left, top = chip @ (0, 0)
    right, bottom = chip @ (224, 224)
    assert bounds == pytest.approx((left, bottom, right, top), abs=1e-6)
    # ... which is the footprint the catalogue holds, in WGS84.
    from rasterio.warp import transform_bounds

    row = searcher.store.tiles_by_id([tile_id])[tile_id]
    wgs84 = transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
    assert wgs84 == pytest.approx((row["min_lon"], row["min_lat"], row["max_lon"], row["max_lat"]), abs=1e-9)
    np.testing.assert_array_equal(values, heat_map.values)
    assert np.isfinite(values).all()


def test_heat_is_the_dense_score_of_the_pixels_the_encoder_saw(searcher):
    from msearch.models.dense import dense_embeddings

    chips = _chips(searcher)
    ids = [chips[(224, 224, 224, 224)], chips[(448, 0, 152, 224)], chips[(0, 448, 224, 112)]]
    target = heat_target(searcher, text="farmland")
    maps = heat_maps(searcher, ids, target)
    encoder = searcher.encoder("tiny-ms-clip")
    for tile_id, heat_map in zip(ids, maps):
        pixels = searcher.tile_pixels(tile_id)
        alone = dense_embeddings(encoder, encoder.prepare([pixels])).heat(target.vector)[0]
        np.testing.assert_allclose(heat_map.values, alone, atol=1e-5)  # batched with other sizes: the same


@pytest.mark.parametrize(
    "window, pixel",
    [((224, 224, 224, 224), (100, 37)), ((448, 0, 152, 224), (100, 100)), ((0, 448, 224, 112), (5, 111))],
)
def test_the_patch_under_a_pixel_is_the_one_the_encoder_saw(searcher, scene_index, window, pixel):
    """Worked out here from the recipe's published steps: the shorter side resized to 224 (the longer one to
    int(224 * long / short)), then a centre crop of 224 (offset round((long - 224) / 2)), 16 px patches."""
    _, _, scene_transform = scene_index
    col_off, row_off, width, height = window
    short, long = min(width, height), max(width, height)
    resized_long = int(224 * long / short)
    offset = round((resized_long - 224) / 2)
    scale = short / 224  # tile pixels per resized pixel
    col, row = pixel
    if width >= height:
        expected = (int((row + 0.5) / (16 * scale)), int(((col + 0.5) / scale - offset) // 16))
    else:
        expected = (int(((row + 0.5) / scale - offset) // 16), int((col + 0.5) / (16 * scale)))
    tile_id = _chips(searcher)[window]
    [heat_map] = heat_maps(searcher, [tile_id], heat_target(searcher, text="a town"))
    _, profile, bounds = _geotiff(heat_map)
    x, y = scene_transform @ Affine.translation(col_off, row_off) @ (col + 0.5, row + 0.5)
    assert rasterio.transform.rowcol(profile["transform"], x, y) == expected
    # The edge chips' heat covers the square the encoder saw: the whole short side, the middle of the long one.
    chip_left, chip_top = scene_transform @ (col_off, row_off)
    chip_right, chip_bottom = scene_transform @ (col_off + width, row_off + height)
    margin = offset * scale * 10  # metres: 10 m pixels
    if width > height:
        assert bounds == pytest.approx((chip_left + margin, chip_bottom, chip_right - margin, chip_top), abs=10 * scale)
    elif height > width:
        assert bounds == pytest.approx((chip_left, chip_bottom + margin, chip_right, chip_top - margin), abs=10 * scale)


def test_patches_over_nodata_are_nodata(searcher):
    tile_id = _chips(searcher)[(0, 0, 224, 224)]
    [heat_map] = heat_maps(searcher, [tile_id], heat_target(searcher, text="a lake"))
    values, _, _ = _geotiff(heat_map)
    # 120 px of nodata: patches 0-6 wholly, patch 7 half of its rows or columns (nodata at half), (7, 7) a quarter.
    expected = np.zeros((14, 14), dtype=bool)
    expected[:8, :8] = True
    expected[7, 7] = False
    np.testing.assert_array_equal(np.isnan(values), expected)
    rgba = heat_rgba(heat_map)
    assert rgba.shape == (224, 224, 4)
    assert (rgba[:112, :112, 3] == 0).all() and (rgba[130:, 130:, 3] > 0).all()


def test_outlines_in_wgs84_with_their_scores(searcher):
    from shapely.geometry import box, shape

    tile_id = _chips(searcher)[(224, 224, 224, 224)]
    [heat_map] = heat_maps(searcher, [tile_id], heat_target(searcher, text="a reservoir"))
    row = searcher.store.tiles_by_id([tile_id])[tile_id]
    footprint = box(row["min_lon"], row["min_lat"], row["max_lon"], row["max_lat"]).buffer(1e-9)

    collection = outline(heat_map)
    threshold = collection["properties"]["threshold"]
    assert collection["properties"]["threshold_method"] == "otsu"
    above = heat_map.values >= threshold
    assert 0 < above.sum() < 196
    assert sum(f["properties"]["patches"] for f in collection["features"]) == above.sum()
    for feature in collection["features"]:
        assert footprint.contains(shape(feature["geometry"]))
        assert feature["properties"]["mean_score"] >= threshold
    json.dumps(collection)  # plain JSON

    top = float(np.max(heat_map.values))
    [best] = outline(heat_map, threshold=top)["features"]
    assert best["properties"]["patches"] == 1 and best["properties"]["mean_score"] == pytest.approx(top, abs=1e-6)
    assert outline(heat_map, threshold=top + 1)["features"] == []


def test_otsu_splits_two_groups_halfway():
    assert otsu_threshold(np.array([0.1] * 10 + [0.5] * 5 + [np.nan])) == pytest.approx(0.3)
    assert otsu_threshold(np.array([0.0, 0.01, 0.02, 0.9, 0.95])) == pytest.approx((0.02 + 0.9) / 2)
    with pytest.raises(QueryError, match="flat"):
        otsu_threshold(np.full(9, 0.2))


def test_like_heat_scores_against_the_examples_stored_vector(searcher):
    chips = _chips(searcher)
    example = chips[(224, 0, 224, 224)]
    target = heat_target(searcher, like=str(example), space="rs-m-clip")
    assert target.space == "rs-m-clip" and target.label == f"like:{example}"
    stored = searcher.store.vectors_of("rs-m-clip", [example])[0]
    assert float(target.vector @ stored / np.linalg.norm(stored)) == pytest.approx(1.0, abs=1e-6)
    [heat_map] = heat_maps(searcher, [chips[(224, 224, 224, 224)]], target)
    assert heat_map.values.shape == (7, 7)  # ViT-B/32
    _, profile, _ = _geotiff(heat_map)
    assert profile["transform"].a == pytest.approx(320.0)  # 32 px patches of 10 m


def test_bad_input_is_a_clear_error(searcher):
    with pytest.raises(QueryError, match="no tile with id 999"):
        heat_maps(searcher, [999], heat_target(searcher, text="a river"))
    with pytest.raises(QueryError, match="empty"):
        heat_target(searcher, text="   ")
    with pytest.raises(QueryError, match="one of them"):
        heat_target(searcher, text="a river", like="1")
    with pytest.raises(QueryError, match="no space"):
        heat_target(searcher, text="a river", space="nonesuch")


def test_a_space_without_its_vision_tower_offline(scene_index, tmp_path):
    """A space indexed with local weights (--checkpoint) whose card names hub weights never downloaded: a
    searcher without the checkpoint cannot load the vision tower, and says so."""
    import os
    import shutil

    from msearch.indexer.pipeline import index_archive
    from msearch.indexer.readers import ArchivePixels
    from msearch.indexer.tiles import ReadSettings
    from msearch.schema.bands import BAND_LAYOUTS

    card = json.loads((Path(os.environ["MSEARCH_CARDS"]) / "tiny-ms-clip.json").read_text())
    card.update(name="tiny-ms-clip-elsewhere", weights={"hub": "msearch-test/never-downloaded", "file": "w.pt"})
    card_path = os.path.join(os.environ["MSEARCH_CARDS"], "tiny-ms-clip-elsewhere.json")
    with open(card_path, "w") as handle:
        json.dump(card, handle)
    try:
        weights = tmp_path / "local.pt"
        shutil.copy(get_card_weights("tiny-ms-clip"), weights)
        index = tmp_path / "index"
        index_archive(
            [scene_index[0].parent / "archive"],
            index=index,
            models=["tiny-ms-clip-elsewhere"],
            checkpoint=weights,
            settings=ReadSettings(band_order=BAND_LAYOUTS["l2a"]),
            workers=0,
        )
        offline = Searcher(index, pixels=ArchivePixels())
        target = heat_target(offline, like="1")
        with pytest.raises(QueryError, match="image encoder of space 'tiny-ms-clip-elsewhere'.*--checkpoint"):
            heat_maps(offline, [2], target)
        from typer.testing import CliRunner

        from msearch.cli import app

        args = ["query", "--like", "1", "--index", str(index), "--heatmaps", str(tmp_path / "heat")]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "image encoder of space 'tiny-ms-clip-elsewhere'" in _unwrapped(result.output)
        result = CliRunner().invoke(app, args + ["--checkpoint", f"tiny-ms-clip-elsewhere={weights}"])
        assert (
            result.exit_code == 0 and len(list((tmp_path / "heat").glob("*.png"))) == 8
        )  # the 9 chips but the example
        from fastapi.testclient import TestClient

        from msearch.search.server import create_app

        api = TestClient(create_app(offline, allowed_hosts=["127.0.0.1"]), base_url="http://127.0.0.1")
        response = api.get("/api/tiles/2/heatmap.png", params={"like": 1})
        assert response.status_code == 422 and "--checkpoint" in response.json()["error"], response.text
        with_weights = Searcher(index, {"tiny-ms-clip-elsewhere": weights}, pixels=ArchivePixels())
        assert heat_maps(with_weights, [2], target)[0].values.shape == (14, 14)
    finally:
        os.remove(card_path)  # the session's card folder is shared with other tests


def get_card_weights(name: str):
    from msearch.models import get_card
    from msearch.models.loading import weights_file

    return weights_file(get_card(name))


# -- the CLI ------------------------------------------------------------------------------------------------


def test_query_heatmaps_writes_a_geotiff_and_a_picture_per_result(scene_index, searcher, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from msearch.cli import app

    index = str(scene_index[0])
    out = tmp_path / "heat"
    result = CliRunner().invoke(
        app, ["query", "a river", "--index", index, "-k", "4", "--json", "--heatmaps", str(out)]
    )
    assert result.exit_code == 0, result.output
    ranked = json.loads(result.stdout)["results"]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{r['rank']}_{r['tile_id']}.{ext}" for r in ranked for ext in ("tif", "png"))
    windows = {tile_id: window for window, tile_id in _chips(searcher).items()}
    for r in ranked:
        with rasterio.open(out / f"{r['rank']}_{r['tile_id']}.tif") as dataset:
            assert dataset.count == 1 and dataset.dtypes == ("float32",) and dataset.shape == (14, 14)
            assert dataset.crs == scene_index[1]
        _, _, width, height = windows[r["tile_id"]]
        assert Image.open(out / f"{r['rank']}_{r['tile_id']}.png").size == (width, height)

    by_example = tmp_path / "like"
    example = str(ranked[0]["tile_id"])
    result = CliRunner().invoke(
        app, ["query", "--like", example, "--index", index, "-k", "2", "--heatmaps", str(by_example)]
    )
    assert result.exit_code == 0, result.output
    assert len(list(by_example.glob("*.tif"))) == 2 and "tiny-ms-clip" in result.output

    result = CliRunner().invoke(app, ["query", "x", "--index", index, "--heatmaps", str(out / "1_1.tif")])
    assert result.exit_code == 2 and "is a file" in _unwrapped(result.output)


def test_locate_prints_outlines_and_writes_geojson(scene_index, searcher, tmp_path):
    from typer.testing import CliRunner

    from msearch.cli import app

    index = str(scene_index[0])
    tile_id = str(_chips(searcher)[(224, 224, 224, 224)])
    path = tmp_path / "where.geojson"
    result = CliRunner().invoke(app, ["locate", tile_id, "a reservoir", "--index", index, "--geojson", str(path)])
    assert result.exit_code == 0, result.output
    collection = json.loads(path.read_text())
    assert collection["properties"]["threshold_method"] == "otsu" and collection["features"]
    printed = _unwrapped(result.output)
    assert f"{len(collection['features'])} outline" in printed and "Otsu" in printed
    best = collection["features"][0]["properties"]["mean_score"]
    assert f"mean score {best:.4f}" in printed

    result = CliRunner().invoke(app, ["locate", tile_id, "a reservoir", "--index", index, "--threshold", "5"])
    assert result.exit_code == 0 and "0 outlines" in _unwrapped(result.output)

    for args, message in (
        (["999", "a river"], "no tile with id 999"),
        ([tile_id, "   "], "empty"),
        ([tile_id, "a river", "--space", "nonesuch"], "no space 'nonesuch'"),
        (["no/such/chip.tif", "a river"], "neither a tile id"),
    ):
        result = CliRunner().invoke(app, ["locate", *args, "--index", index])
        assert result.exit_code == 2 and message in _unwrapped(result.output), result.output


def _unwrapped(output: str) -> str:
    """The CLI's output with rich's line wrapping undone."""
    return " ".join(output.split())


# -- the API --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(searcher):
    from fastapi.testclient import TestClient

    from msearch.search.server import create_app

    return TestClient(create_app(searcher, allowed_hosts=["127.0.0.1"]), base_url="http://127.0.0.1")


def test_api_heatmap_png_tif_and_locate(client, searcher):
    from PIL import Image

    chips = _chips(searcher)
    tile_id = chips[(448, 0, 152, 224)]
    [expected] = heat_maps(searcher, [tile_id], heat_target(searcher, text="a river"))

    response = client.get(f"/api/tiles/{tile_id}/heatmap.png", params={"q": "a river"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(response.content))
    assert picture.mode == "RGBA" and picture.size == (152, 224)
    np.testing.assert_array_equal(np.asarray(picture), heat_rgba(expected))

    response = client.get(f"/api/tiles/{tile_id}/heatmap.tif", params={"q": "a river"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/tiff"
    with MemoryFile(response.content) as memory, memory.open() as dataset:
        np.testing.assert_allclose(dataset.read(1), expected.values, atol=1e-6)
        assert dataset.transform.almost_equals(Affine(*expected.transform))

    response = client.get(f"/api/tiles/{tile_id}/locate", params={"q": "a river", "threshold": -2})
    assert response.status_code == 200 and response.headers["content-type"] == "application/geo+json"
    collection = response.json()
    assert collection["properties"]["threshold_method"] == "given"
    assert sum(f["properties"]["patches"] for f in collection["features"]) == 196  # every patch is above -2

    example = chips[(224, 0, 224, 224)]
    response = client.get(f"/api/tiles/{tile_id}/heatmap.tif", params={"like": example, "space": "rs-m-clip"})
    assert response.status_code == 200
    with MemoryFile(response.content) as memory, memory.open() as dataset:
        assert dataset.shape == (7, 7)


@pytest.mark.parametrize(
    "path, params, status, message",
    [
        ("heatmap.png", {}, 422, "one of them"),
        ("heatmap.png", {"q": "a river", "like": 1}, 422, "one of them"),
        ("heatmap.tif", {"q": "  "}, 400, "q"),  # the schema's not-blank pattern
        ("locate", {"q": "a river", "space": "nonesuch"}, 422, "no space"),
        ("locate", {"q": "a river", "lang": "xx"}, 400, "lang"),
        ("locate", {"q": "a river", "threshold": "high"}, 400, "threshold"),
        ("heatmap.png", {"q": "a river", "top_k": 3}, 400, "top_k"),  # a parameter the route does not take
        ("heatmap.png", {"like": 999}, 404, "no example tile with id 999"),
        ("heatmap.png", {"like": "../etc"}, 400, "like"),
    ],
)
def test_api_errors(client, path, params, status, message):
    response = client.get(f"/api/tiles/1/{path}", params=params)
    assert response.status_code == status and message in response.json()["error"], response.text


def test_api_no_such_tile_and_documented_errors(client):
    for path in ("heatmap.png", "heatmap.tif", "locate"):
        response = client.get(f"/api/tiles/999/{path}", params={"q": "a river"})
        assert response.status_code == 404 and response.json() == {"error": "no tile with id 999 in this index"}
        operation = client.get("/api/openapi.json").json()["paths"][f"/api/tiles/{{tile_id}}/{path}"]["get"]
        for status in ("400", "404", "422"):
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}


def test_the_patch_cache_serves_any_query_from_one_forward_pass(searcher):
    from msearch.search.heatmaps import PatchCache

    chips = sorted(_chips(searcher).values())
    rows = searcher.store.tiles_by_id(chips[:3])
    cache = PatchCache(searcher, 2)
    river, town = heat_target(searcher, text="a river"), heat_target(searcher, text="a town")
    first = cache.heat(rows[chips[0]], river)
    second = cache.heat(rows[chips[0]], town)
    assert len(cache._tiles) == 1  # one tile's patches, two queries
    [expected_river, expected_town] = [heat_maps(searcher, [chips[0]], t)[0] for t in (river, town)]
    np.testing.assert_allclose(first.values, expected_river.values, atol=1e-6)
    np.testing.assert_allclose(second.values, expected_town.values, atol=1e-6)
    assert np.nanmax(np.abs(first.values - second.values)) > 1e-4
    for tile_id in chips[1:3]:
        cache.heat(rows[tile_id], river)
    assert [key[0] for key in cache._tiles] == chips[1:3]  # the least recently used tile went first
