"""GeoParquet export of a real index (5 TerraMesh L2A tiles, both tiny encoders), read back with pyarrow."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely

from msearch.indexer.pipeline import index_archive
from msearch.indexer.tiles import ReadSettings
from msearch.schema.bands import parse_band_order
from msearch.store.export import embedding_column, export_geoparquet
from msearch.store.index_store import IndexStore, SpaceMismatchError

SPACES = ["tiny-ms-clip", "rs-m-clip"]


@pytest.fixture(scope="module")
def terramesh_index(shared_data, tmp_path_factory):
    index = tmp_path_factory.mktemp("export-index")
    summary = index_archive(
        [shared_data / "terramesh-examples" / "S2L2A"],
        index=index,
        models=SPACES,
        settings=ReadSettings(band_order=parse_band_order("l2a")),
        workers=0,
    )
    assert summary.indexed == 5 and not summary.failed
    return index


def test_export_round_trip(terramesh_index, tmp_path):
    out = tmp_path / "tiles.parquet"
    assert export_geoparquet(terramesh_index, out) == 5
    store = IndexStore(terramesh_index)
    table = pq.read_table(out)
    assert table.num_rows == 5
    assert not list(tmp_path.glob(".*.tmp"))

    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB" and column["geometry_types"] == ["Polygon"]
    assert column["crs"]["id"] == {"authority": "OGC", "code": "CRS84"}
    assert column["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]

    tiles = store.tiles_by_id(table.column("id").to_pylist())
    geometries = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
    for tile_id, geometry in zip(table.column("id").to_pylist(), geometries):
        assert shapely.equals_exact(geometry, shapely.from_geojson(tiles[tile_id]["footprint"]), tolerance=0)
    xmin, ymin, xmax, ymax = column["bbox"]
    assert np.allclose([xmin, ymin, xmax, ymax], [*shapely.total_bounds(geometries)])
    boxes = table.column("bbox").to_pylist()
    assert [b["xmin"] for b in boxes] == [float(v) for v in shapely.bounds(geometries)[:, 0]]

    rows = table.to_pylist()
    for row in rows:
        tile = tiles[row["id"]]
        for name in (
            "root",
            "path",
            "key",
            "crs",
            "acquired",
            "level",
            "centre_lon",
            "centre_lat",
            "min_lon",
            "max_lat",
        ):
            assert row[name] == tile[name]
        assert row["bands"] == tile["bands"].split(",") and len(row["bands"]) == 12

    exported = json.loads(table.schema.metadata[b"msearch"])["spaces"]
    assert sorted(exported) == sorted(SPACES)
    for space in SPACES:
        manifest = store.manifest(space)
        assert exported[space] == {
            "column": embedding_column(space),
            "identity": manifest.identity,
            "card": manifest.card,
            "weights_sha256": manifest.weights_sha256,
            "dim": manifest.dim,
            "metric": manifest.metric,
        }
        field = table.schema.field(embedding_column(space))
        assert field.type.list_size == manifest.dim and str(field.type.value_type) == "float"
        ids, vectors = store.all_vectors(space)
        matrix = np.stack(table.column(embedding_column(space)).to_numpy(zero_copy_only=False))
        by_id = dict(zip(table.column("id").to_pylist(), matrix))
        assert matrix.dtype == np.float32
        for tile_id, vector in zip(ids, vectors):
            assert np.array_equal(by_id[int(tile_id)], vector)


def test_export_selected_space_small_row_groups_and_missing_vectors(terramesh_index, tmp_path):
    """A tile without a vector in a space exports a null, not zeros; row groups stream in tile id order."""
    index = tmp_path / "index"
    shutil.copytree(terramesh_index, index)  # the module's index stays whole for the other tests
    store = IndexStore(index)
    ids, _ = store.all_vectors("tiny-ms-clip")
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM vectors WHERE space = 'tiny-ms-clip' AND tile_id = ?", (int(ids[0]),))
    out = tmp_path / "tiny.parquet"
    assert export_geoparquet(index, out, spaces=["tiny-ms-clip"], row_group_rows=2) == 5
    parquet = pq.ParquetFile(out)
    assert parquet.metadata.num_row_groups == 3
    table = parquet.read()
    assert [n for n in table.column_names if n.startswith("embedding_")] == ["embedding_tiny-ms-clip"]
    assert table.column("id").to_pylist() == sorted(table.column("id").to_pylist())
    embeddings = dict(zip(table.column("id").to_pylist(), table.column("embedding_tiny-ms-clip").to_pylist()))
    assert embeddings[int(ids[0])] is None
    assert sum(v is not None for v in embeddings.values()) == 4


def test_export_unknown_space_and_missing_index(terramesh_index, tmp_path):
    with pytest.raises(SpaceMismatchError, match="no space 'nope'"):
        export_geoparquet(terramesh_index, tmp_path / "x.parquet", spaces=["nope"])
    with pytest.raises(FileNotFoundError):
        export_geoparquet(tmp_path / "no-index", tmp_path / "x.parquet")
    assert not list(tmp_path.iterdir())
