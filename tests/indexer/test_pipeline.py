"""The indexing run end to end (msearch.indexer.pipeline) on real Sentinel-2 tiles (small copies in tmp_path)
with the tiny models of both families: what a run records. Its steps have their own tests: test_plan.py,
test_reading.py, test_encoding.py, test_writing.py, test_rebuild.py; the Ray runner's are in test_distributed.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform_bounds, transform_geom

from msearch.indexer.tiles import ReadSettings
from msearch.schema.bands import BAND_LAYOUTS
from msearch.schema.pixels import Pixels
from msearch.store.index_store import IndexStore
from msearch.store.vector_codec import VECTOR_ATOL
from tests.indexer.helpers import (
    MODELS,
    assert_view_matches_catalogue,
    read_raw,
    run,
    tiles_by_key,
    vectors_by_key,
)


def test_eurosat_tiles_vectors_bands_and_geometry(eurosat4, tmp_path, encoders):
    index = tmp_path / "index"
    summary = run(eurosat4, index, encoders)

    assert (summary.discovered, summary.indexed, summary.unchanged) == (4, 4, 0)
    assert not summary.failed and not summary.skipped and summary.ok
    tiles = tiles_by_key(index)
    assert sorted(tiles) == ["Forest/Forest_1.tif", "Forest/Forest_10.tif", "River/River_1.tif", "River/River_10.tif"]
    for space, encoder in encoders.items():
        vectors = vectors_by_key(index, space)
        assert sorted(vectors) == sorted(tiles)
        for key, row in tiles.items():
            path = eurosat4 / key
            raw = read_raw(path)
            # 13 bands, B8A last: the encoder must have received the bands under their true names, offset-free
            # the catalogue lists them in canonical order, and keeps the file's own order for re-reading it
            assert row["bands"] == ",".join(BAND_LAYOUTS["l1c"])
            assert row["file_band_order"] == ",".join(BAND_LAYOUTS["eurosat"])
            assert row["offset"] == 0.0
            expected = encoder.encode_pixels([Pixels(raw, BAND_LAYOUTS["eurosat"])])[0]
            assert vectors[key].shape == (encoder.dim,)
            np.testing.assert_allclose(vectors[key], expected, atol=VECTOR_ATOL)
            # the same tile read in L1C order (B8A after B08) is a different input: the check can fail
            wrong = encoder.encode_pixels([Pixels(raw, BAND_LAYOUTS["l1c"])])[0]
            if space == "tiny-ms-clip":
                assert np.abs(wrong - vectors[key]).max() > 1e-4

    for key, row in tiles.items():
        with rasterio.open(eurosat4 / key) as raster:
            bounds = transform_bounds(raster.crs, "EPSG:4326", *raster.bounds, densify_pts=21)
            corners = [
                (raster.bounds.left, raster.bounds.bottom),
                (raster.bounds.right, raster.bounds.bottom),
                (raster.bounds.right, raster.bounds.top),
                (raster.bounds.left, raster.bounds.top),
                (raster.bounds.left, raster.bounds.bottom),
            ]
            ring = transform_geom(raster.crs, "EPSG:4326", {"type": "Polygon", "coordinates": [corners]})[
                "coordinates"
            ][0]
            assert (row["width"], row["height"], row["crs"]) == (64, 64, raster.crs.to_string())
        assert (row["min_lon"], row["min_lat"], row["max_lon"], row["max_lat"]) == pytest.approx(bounds, abs=1e-9)
        assert (row["centre_lon"], row["centre_lat"]) == pytest.approx(
            ((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)
        )
        footprint = json.loads(row["footprint"])
        assert footprint["type"] == "Polygon"
        np.testing.assert_allclose(np.array(footprint["coordinates"][0]), np.array(ring), atol=1e-9)
        assert row["stat_signature"] and len(row["digest"]) == 64 and row["reader"] == "geotiff"

    store = IndexStore(index)
    assert set(store.manifests()) == set(MODELS)
    for space, encoder in encoders.items():
        manifest = store.manifest(space)
        assert (manifest.card, manifest.dim, manifest.vectors) == (space, encoder.dim, 4)
        assert manifest.weights_sha256 == encoder.identity.weights_sha256
        assert (store.space_dir(space) / manifest.faiss_file).is_file()
        assert_view_matches_catalogue(index, space)


def test_terramesh_l2a_default_band_order(shared_data, tmp_path, encoders):
    src = shared_data / "terramesh-examples" / "S2L2A"
    index = tmp_path / "index"
    summary = run(src, index, encoders, settings=ReadSettings())  # 12 bands: the L2A stack, no order needed

    files = sorted(p.name for p in src.glob("*.tif"))
    assert len(files) == 5
    assert (summary.discovered, summary.indexed, len(summary.failed)) == (5, 5, 0)
    tiles = tiles_by_key(index)
    assert sorted(tiles) == files
    for space, encoder in encoders.items():
        vectors = vectors_by_key(index, space)
        assert len(vectors) == 5
        for key in files:
            assert tiles[key]["bands"] == ",".join(BAND_LAYOUTS["l2a"])
            assert tiles[key]["offset"] == 0.0  # TerraMesh S2L2A is offset-free
            expected = encoder.encode_pixels([Pixels(read_raw(src / key), BAND_LAYOUTS["l2a"])])[0]
            np.testing.assert_allclose(vectors[key], expected, atol=VECTOR_ATOL)
    with rasterio.open(src / files[0]) as raster:
        bounds = transform_bounds(raster.crs, "EPSG:4326", *raster.bounds, densify_pts=21)
    row = tiles[files[0]]
    assert (row["min_lon"], row["min_lat"], row["max_lon"], row["max_lat"]) == pytest.approx(bounds, abs=1e-9)
    assert (row["width"], row["height"]) == (224, 224)
    for space in MODELS:
        assert_view_matches_catalogue(index, space)
