"""How the exact vectors are kept: bytes per tile per space on disk, and recall@100 after re-ranking with them.

1. Bytes: an SQLite catalogue filled the way `msearch index` fills it (IndexStore.write_batch, one
   transaction per batch of 32) with N chips of one L2A scene, with catalogue rows as the SAFE reader writes
   them, and 512-d vectors in two spaces; the file's size (after a WAL checkpoint) over N x 2, for the
   store's format (int8 codes with a scale, msearch.store.vector_codec) and for float32 (the format before
   schema 3) and float16 (the simple alternative). The FAISS IVF-PQ file's bytes per vector are measured as
   the growth of the file between N/2 and N vectors (its fixed part, centroids and codebooks, is the same at
   any size).
2. Recall@100: IVF-PQ built and tuned by msearch (msearch.store.ann) from the stored vectors, its
   candidates re-ranked with the stored vectors of each format, against exact search over the float32
   originals; also exact search over the stored vectors (the precision alone).

    python bench/vector_storage.py            # 40,000 chips
    python bench/vector_storage.py --quick    # 8,000 chips
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from msearch.schema.catalog import CATALOGUE_FILE  # noqa: E402
from msearch.store import ann, vector_codec  # noqa: E402
from msearch.store import index_store as index_store_module  # noqa: E402
from msearch.store.index_store import IndexStore  # noqa: E402
from msearch.store.synthetic import ClusteredUnitVectors  # noqa: E402

DIM = 512
SPACES = ("llama3-ms-clip-base", "rs-m-clip")
PRODUCT = "S2B_MSIL2A_20240611T101559_N0510_R065_T32TQM_20240611T130419"
BATCH = 32
QUERIES = 200
TARGET_BYTES = 1536
TARGET_RECALL = 0.95


def chip_row(i: int) -> dict:
    """A catalogue row as the SAFE reader writes it for chip i of a 10980 px scene."""
    col, row = (i % 49) * 224, (i // 49) * 224
    lon, lat = 12.0 + col * 1.3e-4, 45.0 - row * 0.9e-4
    ring = [[lon, lat], [lon + 0.0291, lat + 0.0003], [lon + 0.0288, lat - 0.0199], [lon - 0.0003, lat - 0.0202]]
    ring.append(ring[0])
    return {
        "root": "/data/sentinel-2/archive/2024",
        "key": f"{PRODUCT}.SAFE#{col},{row},224,224",
        "path": f"{PRODUCT}.SAFE",
        "reader": "safe",
        "stat_signature": hashlib.sha1(f"sig{i // 2401}".encode()).hexdigest(),
        "size": 1_180_000_000,
        "mtime": 1718110000.123456,
        "digest": hashlib.sha256(f"scene{i // 2401}".encode()).hexdigest(),
        "crs": "EPSG:32632",
        "width": 224,
        "height": 224,
        "pixel_size": 10.0,
        "min_lon": lon - 0.0003,
        "min_lat": lat - 0.0202,
        "max_lon": lon + 0.0291,
        "max_lat": lat + 0.0003,
        "centre_lon": lon + 0.0144,
        "centre_lat": lat - 0.01,
        "footprint": json.dumps({"type": "Polygon", "coordinates": [ring]}),
        "bands": "B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B11,B12",
        "offset": 1000.0,
        "level": "L2A",
        "acquired": "2024-06-11T10:15:59Z",
        "product": PRODUCT,
        "mgrs_tile": "32TQM",
        "processing_baseline": "05.10",
        "cloud_cover": 12.5,
        "nodata_fraction": 0.0,
        "scene": f"{PRODUCT}.SAFE",
        "window": f"{col},{row},224,224",
    }


# How each candidate writes a vector: the store's own format, and the two it was measured against.
FORMATS = {
    "float32 (schema 2)": lambda vector: np.ascontiguousarray(vector, dtype="<f4").tobytes(),
    "float16": lambda vector: np.ascontiguousarray(vector, dtype="<f2").tobytes(),
    "int8 + scale (schema 3)": None,
}


def catalogue_bytes(folder: Path, n: int, name: str) -> float:
    """Bytes per chip per space of an SQLite catalogue of n chips in both spaces, vectors written as `name`."""
    original = index_store_module.vector_bytes
    index_store_module.vector_bytes = FORMATS[name] or original  # the format written; the layout is the store's
    try:
        store = IndexStore(folder, create=True)
        for space in SPACES:
            store.ensure_space(space, space, "0" * 64, DIM)
        generator = ClusteredUnitVectors(DIM, n_clusters=100, seed=1)
        for start in range(0, n, BATCH):
            stop = min(n, start + BATCH)
            vectors = generator.rows(start, stop)
            done = [(chip_row(i), {space: vectors[i - start] for space in SPACES}) for i in range(start, stop)]
            store.write_batch(1, done, [])
        with store.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        store.engine.dispose()
    finally:
        index_store_module.vector_bytes = original
    return (folder / CATALOGUE_FILE).stat().st_size / (n * len(SPACES))


def stored(vectors: np.ndarray) -> np.ndarray:
    """The vectors as the catalogue gives them back."""
    return vector_codec.decode(b"".join(vector_codec.encode(vectors)), len(vectors), vectors.shape[1])


def faiss_bytes_per_vector(index, ids: np.ndarray, folder: Path) -> tuple[float, float]:
    """(bytes per vector of the IVF-PQ file at n, growth per added vector between n/2 and n)."""
    n = len(ids)
    ann.write_index(index, folder / "full.faiss")
    half = faiss.clone_index(index)
    ann.remove(half, ids[n // 2 :])
    ann.write_index(half, folder / "half.faiss")
    full, halved = (folder / "full.faiss").stat().st_size, (folder / "half.faiss").stat().st_size
    return full / n, (full - halved) / (n - n // 2)


def recall(n: int) -> dict:
    """IVF-PQ trained on the stored vectors (as `msearch index` trains it), its candidates re-ranked with the
    stored vectors of each format, against exact float32 search."""
    generator = ClusteredUnitVectors(DIM, n_clusters=100, seed=1)
    originals = generator.rows(0, n)
    ids = np.arange(1, n + 1, dtype=np.int64)
    decoded = {"int8 + scale (schema 3)": stored(originals), "float16": originals.astype(np.float16).astype(np.float32)}
    rng = np.random.default_rng(7)
    queries = generator.rows(10 * n, 10 * n + QUERIES) + rng.normal(0, 1 / np.sqrt(DIM), (QUERIES, DIM))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    truth = ann.exact_search(originals, ids, queries, 100)[1]
    started = time.perf_counter()
    index, info = ann.choose_and_build(
        decoded["int8 + scale (schema 3)"], ids, exact_threshold=100, compressed_threshold=1_000
    )
    build = time.perf_counter() - started
    results = {}
    for name, matrix in decoded.items():
        found = ann.search(index, info, queries, 100, vectors_lookup=lambda wanted, m=matrix: m[np.asarray(wanted) - 1])
        results[name] = (
            ann.recall_at_k(ann.exact_search(matrix, ids, queries, 100)[1], truth),
            ann.recall_at_k(found[1], truth),
        )
    return {"recall": results, "ivf-pq": info.describe(), "build_s": build, "index": index, "ids": ids}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chips", type=int, default=40_000)
    parser.add_argument("--quick", action="store_true", help="8,000 chips")
    args = parser.parse_args(argv)
    n = 8_000 if args.quick else args.chips
    with tempfile.TemporaryDirectory(prefix="msearch-vector-storage-") as tmp:
        scratch = Path(tmp)
        per_space = {name: catalogue_bytes(scratch / str(i), n, name) for i, name in enumerate(FORMATS)}
        measured = recall(n)
        faiss_total, faiss_marginal = faiss_bytes_per_vector(measured["index"], measured["ids"], scratch)
    print(f"{n} chips x {len(SPACES)} spaces, {DIM}-d, SQLite catalogue filled through IndexStore.write_batch")
    print(f"{'vectors stored as':<26}{'catalogue B/tile/space':>24}{'+ IVF-PQ B/vector':>20}{'total':>8}")
    for name, size in per_space.items():
        print(f"{name:<26}{size:>24.0f}{faiss_marginal:>20.0f}{size + faiss_marginal:>8.0f}")
    print(f"IVF-PQ file at {n} vectors: {faiss_total:.0f} B/vector (centroids and codebooks included)")
    print(f"search index: {measured['ivf-pq']} (built in {measured['build_s']:.1f} s)")
    print(f"recall@100 against exact float32 search, {QUERIES} query-like vectors:")
    print(f"{'vectors stored as':<26}{'exact search':>14}{'IVF-PQ re-ranked':>18}")
    for name, (exact, reranked) in measured["recall"].items():
        print(f"{name:<26}{exact:>14.4f}{reranked:>18.4f}")
    chosen = "int8 + scale (schema 3)"
    total, reranked = per_space[chosen] + faiss_marginal, measured["recall"][chosen][1]
    ok = total <= TARGET_BYTES and reranked >= TARGET_RECALL
    print(
        f"{chosen}: {total:.0f} B per tile per space (target <= {TARGET_BYTES}), recall@100 {reranked:.3f} "
        f"(target >= {TARGET_RECALL}): {'ok' if ok else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
