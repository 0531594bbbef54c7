"""Stored vectors decode to unit length, so that the search indexes' inner products are the cosines shown:
int8 codes times their scale are 0.9995 to 1.0005 long, and a longer vector would win a near tie."""

import numpy as np

from msearch.schema import catalog
from msearch.store import vector_codec
from msearch.store.index_store import IndexStore, vector_bytes
from msearch.store.synthetic import ClusteredUnitVectors

DIM = 512
SPACE = "synthetic"


def unit_vectors(n: int) -> np.ndarray:
    return ClusteredUnitVectors(DIM, n_clusters=10, seed=5).rows(0, n)


def as_coded(blob: bytes) -> np.ndarray:
    """Codes x scale: the vector a blob holds before decoding scales it to unit length."""
    scale = float(np.frombuffer(blob[: vector_codec.SCALE_BYTES], dtype="<f4")[0])
    return np.frombuffer(blob[vector_codec.SCALE_BYTES :], dtype=np.int8) * scale


def test_decoded_vectors_have_unit_length_and_stay_within_a_step_of_the_original():
    vectors = unit_vectors(1000)
    blobs = vector_codec.encode(vectors)
    coded = np.linalg.norm([as_coded(blob) for blob in blobs], axis=1)
    assert np.abs(coded - 1).max() > 1e-4  # what rounding to codes does to the length
    decoded = vector_codec.decode(b"".join(blobs), len(blobs), DIM)
    np.testing.assert_allclose(np.linalg.norm(decoded.astype(np.float64), axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(decoded, vectors, atol=vector_codec.VECTOR_ATOL)


def test_a_near_tie_is_ranked_by_cosine_not_by_the_stored_length(tmp_path):
    """Two tiles whose codes x scale differ most in length, and a query a little closer (by cosine) to the
    shorter one: the search index ranks the shorter one first, scores equal to the cosines, and exact
    re-ranking (the stored vectors read back) agrees."""
    vectors = unit_vectors(400)
    coded = np.array([as_coded(blob) for blob in vector_codec.encode(vectors)])
    lengths = np.linalg.norm(coded, axis=1)
    longer, shorter = vectors[lengths.argmax()], vectors[lengths.argmin()]
    # their directions as stored
    a, b = (coded[i] / lengths[i] for i in (lengths.argmax(), lengths.argmin()))
    store = IndexStore(tmp_path / "index", create=True)
    store.ensure_space(SPACE, "synthetic-card", "0" * 64, DIM)
    with store.engine.begin() as conn:
        conn.execute(
            catalog.tiles.insert(),
            [
                {"id": i, "root": "/archive", "key": f"t{i}.tif", "path": f"t{i}.tif", "reader": "geotiff"}
                | {"stat_signature": "s"}
                for i in (1, 2)
            ],
        )
        conn.execute(
            catalog.vectors.insert(),
            [{"tile_id": 1, "space": SPACE, "vector": vector_bytes(longer)}]
            + [{"tile_id": 2, "space": SPACE, "vector": vector_bytes(shorter)}],
        )
    # q = a + t b, normalised, with cos(q, b) / cos(q, a) = r: half the ratio of the coded lengths, so that
    # inner products with codes x scale would rank the longer vector first.
    r = 1 + (lengths.max() / lengths.min() - 1) / 2
    c = float(a @ b)
    t = (r - c) / (1 - r * c)
    query = (a + t * b) / np.linalg.norm(a + t * b)
    cosines = [float(query @ b), float(query @ a)]
    assert cosines[0] > cosines[1] and lengths.max() * cosines[1] > lengths.min() * cosines[0]

    view = store.open_space(SPACE)
    scores, ids = store.search(view, query[None, :].astype(np.float32), 2)
    assert ids[0].tolist() == [2, 1]
    np.testing.assert_allclose(scores[0], cosines, atol=1e-6)
    stored = store.vectors_of(SPACE, ids[0])
    np.testing.assert_allclose(stored @ query, cosines, atol=1e-6)


def test_unit_codes_decode_rows_as_decode_does():
    vectors = unit_vectors(300)
    blobs = vector_codec.encode(vectors)
    decoded = vector_codec.decode(b"".join(blobs), len(blobs), DIM)
    _, codes = vector_codec.quantise(vectors)
    matrix = vector_codec.UnitCodes(codes)
    assert matrix.shape == (300, DIM) and len(matrix) == 300
    np.testing.assert_array_equal(matrix[10:20], decoded[10:20])
    np.testing.assert_array_equal(matrix[np.array([299, 0, 7])], decoded[[299, 0, 7]])
    np.testing.assert_array_equal(matrix[5], decoded[5])


def test_an_index_built_from_codes_equals_one_built_from_their_decoded_vectors():
    """IndexStore.rebuild_ann streams the catalogue's int8 codes, not float32 vectors, into the build: the
    index (IVF-PQ here: trained, filled and tuned from the rows) must be the one the decoded vectors give."""
    from msearch.store import ann

    _, codes = vector_codec.quantise(unit_vectors(3000))
    decoded = vector_codec.UnitCodes(codes)[:]
    ids = np.arange(100, 3100, dtype=np.int64)
    queries = ClusteredUnitVectors(DIM, n_clusters=10, seed=5).rows(5000, 5020)
    built = [
        ann.choose_and_build(matrix, ids, exact_threshold=500, compressed_threshold=1000)
        for matrix in (vector_codec.UnitCodes(codes), decoded)
    ]
    assert built[0][1] == built[1][1] and built[0][1].kind == "ivf-pq"

    def lookup(wanted):
        return decoded[np.asarray(wanted) - 100]

    found = [ann.search(index, info, queries, 10, vectors_lookup=lookup) for index, info in built]
    np.testing.assert_array_equal(found[0][1], found[1][1])
    np.testing.assert_array_equal(found[0][0], found[1][0])
