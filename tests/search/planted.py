"""An index whose vectors hold planted structure, for detector tests: clustered synthetic background vectors and
a planted cluster around one direction (cosine ~0.86 to it), written into a real catalogue with tile rows and
footprints. Embeddings of randomly initialised tiny models sit at cosine ~0.99 to each other, so a probe on
them cannot show that it finds what it was shown (../shared/reference/ANALYSIS.md); these vectors can."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from msearch.schema import catalog
from msearch.store.index_store import IndexStore, vector_bytes
from msearch.store.synthetic import ClusteredUnitVectors
from tests.store.test_index_store import synthetic_tile

DIM = 64
SPACE = "tiny-ms-clip"  # a real card, so that the searcher can describe the space; no model is loaded
BACKGROUND = 20_000
PLANTED = 60
THRESHOLDS = {"exact_threshold": 1_000, "compressed_threshold": 4_000}  # an IVF-PQ index at 20k vectors


def planted_ids() -> list[int]:
    return list(range(BACKGROUND + 1, BACKGROUND + PLANTED + 1))


def tile_row(i: int) -> dict:
    lon, lat = -10 + (i % 200) * 0.1, 40 + (i // 200) * 0.05
    ring = [[lon, lat], [lon + 0.02, lat], [lon + 0.02, lat + 0.02], [lon, lat + 0.02], [lon, lat]]
    return {
        **synthetic_tile(i),
        "centre_lon": lon + 0.01,
        "centre_lat": lat + 0.01,
        "min_lon": lon,
        "min_lat": lat,
        "max_lon": lon + 0.02,
        "max_lat": lat + 0.02,
        "footprint": json.dumps({"type": "Polygon", "coordinates": [ring]}),
        "acquired": f"2024-{1 + i % 12:02d}-15T10:00:00Z",
        "cloud_cover": float(i % 50),
    }


def planted_vectors() -> np.ndarray:
    background = ClusteredUnitVectors(DIM, 200, seed=1).rows(0, BACKGROUND)
    rng = np.random.default_rng(5)
    direction = rng.standard_normal(DIM).astype(np.float32)
    direction /= np.linalg.norm(direction)
    noise = rng.standard_normal((PLANTED, DIM)).astype(np.float32)
    noise *= 0.6 / np.linalg.norm(noise, axis=1, keepdims=True)
    planted = direction + noise
    planted /= np.linalg.norm(planted, axis=1, keepdims=True)
    return np.concatenate([background, planted]).astype(np.float32)


def build_planted_index(directory: Path, catalogue: str | None = None) -> IndexStore:
    store = IndexStore(directory, create=True, catalogue=catalogue)
    store.ensure_space(SPACE, SPACE, "0" * 64, DIM)
    vectors = planted_vectors()
    with store.engine.begin() as conn:
        conn.execute(catalog.tiles.insert(), [tile_row(i) for i in range(len(vectors))])
        conn.execute(
            catalog.vectors.insert(),
            [{"tile_id": i + 1, "space": SPACE, "vector": vector_bytes(v)} for i, v in enumerate(vectors)],
        )
    view = store.open_space(SPACE)
    store.rebuild_ann(view, **THRESHOLDS)
    store.save_space(view)
    return store
