"""A space's acquisitions in memory (msearch.store.acquisitions), on both catalogue backends: rows in (place,
date) order, scores equal to the stored vectors' decoded scores, and a cached table read again when the space's
vectors change."""

import numpy as np
import pytest

from msearch.schema import catalog
from msearch.store import vector_codec
from msearch.store.acquisitions import AcquisitionCache, read_acquisitions
from msearch.store.index_store import IndexStore, vector_bytes
from msearch.store.synthetic import ClusteredUnitVectors

DIM = 32
SPACE = "synthetic"
DATES = ("2021-03-01T10:00:00Z", "2020-01-01T10:00:00Z", None, "2020-06-01T10:00:00Z")  # out of order, one undated


def add_tiles(store: IndexStore, first_id: int, places: list[int]) -> np.ndarray:
    """Tiles first_id.. with their place (a row of `places` each) and a date of DATES by position."""
    vectors = ClusteredUnitVectors(DIM, 5, seed=first_id).rows(0, len(places))
    with store.engine.begin() as conn:
        for place in sorted(set(places)):
            exists = conn.execute(catalog.places.select().where(catalog.places.c.id == place)).first()
            if not exists:
                conn.execute(catalog.places.insert().values(id=place, crs="EPSG:32632", width=8, height=8))
        for offset, place in enumerate(places):
            tile_id = first_id + offset
            conn.execute(
                catalog.tiles.insert().values(
                    id=tile_id,
                    root="/archive",
                    key=f"t{tile_id}.tif",
                    path=f"t{tile_id}.tif",
                    reader="geotiff",
                    stat_signature="s",
                    acquired=DATES[offset % len(DATES)],
                    cloud_cover=None if offset % 3 else 40.0,
                    nodata_fraction=0.1,
                    place_id=place,
                )
            )
            conn.execute(
                catalog.vectors.insert().values(tile_id=tile_id, space=SPACE, vector=vector_bytes(vectors[offset]))
            )
    return vectors


@pytest.fixture
def store(tmp_path, catalogue):
    store = IndexStore(tmp_path / "index", create=True, catalogue=catalogue)
    store.ensure_space(SPACE, "synthetic-card", "0" * 64, DIM)
    return store


def test_rows_in_place_and_date_order_with_scores_of_the_decoded_vectors(store):
    add_tiles(store, 1, [2, 2, 2, 2, 1, 1, 1, 1])
    table = read_acquisitions(store.engine, SPACE, DIM)
    assert len(table) == 8
    assert table.place_ids.tolist() == [1, 1, 1, 1, 2, 2, 2, 2]
    for place in (1, 2):
        days = table.days[table.place_ids == place]
        assert np.isnat(days[-1]) and (np.diff(days[:-1].astype("int64")) > 0).all()  # dated in order, undated last
    assert np.isnan(table.cloud).sum() == 5 and (table.cloud[~np.isnan(table.cloud)] == 40.0).all()
    query = ClusteredUnitVectors(DIM, 5, seed=99).rows(0, 1)[0]
    decoded = store.vectors_of(SPACE, table.tile_ids)
    np.testing.assert_allclose(table.scores(query), decoded @ query, atol=1e-6)
    np.testing.assert_array_equal(table.vectors(np.arange(8)), decoded)
    np.testing.assert_allclose(table.scores(query, np.array([5, 2])), (decoded @ query)[[5, 2]], atol=1e-6)
    stored = vector_codec.decode(vector_bytes(decoded[0]), 1, DIM)[0]
    assert float(stored @ query) == pytest.approx(float(table.scores(query)[0]), abs=1e-6)


def test_the_cache_reads_again_when_the_space_changed(store):
    add_tiles(store, 1, [1, 1, 1, 1])
    cache = AcquisitionCache()
    first = cache.get(store, SPACE)
    assert cache.get(store, SPACE) is first  # unchanged: the same table
    add_tiles(store, 5, [3, 3])
    second = cache.get(store, SPACE)
    assert second is not first and len(second) == 6 and set(second.place_ids.tolist()) == {1, 3}
    with store.engine.begin() as conn:
        store.delete_tiles(conn, [5, 6])
    assert len(cache.get(store, SPACE)) == 4  # a deletion bumps the space's generation
