"""Synthetic stand-ins for tile embeddings, shared by the index tests and the index benchmark.

Real CLIP embeddings of a tile archive are clustered (land-cover classes, regions, seasons) and their variance
falls off across directions rather than being spread evenly over all of them. The generator mimics both: a
Gaussian mixture whose within-cluster noise has a decaying spectrum on a random basis, projected onto the
unit sphere, so that cosine similarity is the inner product, as for the real vectors.
"""

from __future__ import annotations

import numpy as np


class ClusteredUnitVectors:
    """Rows of a Gaussian mixture on the unit sphere, generated reproducibly in any chunks.

    The rows of `rows(start, stop)` depend only on (seed, start, stop), so a set far larger than RAM can be
    written to disk chunk by chunk, and rows beyond the stored ones serve as fresh, query-like vectors from
    the same distribution.
    """

    def __init__(self, dim: int, n_clusters: int, *, spread: float = 1.0, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.seed = seed
        self.centres = _unit_rows(rng.standard_normal((n_clusters, dim), dtype=np.float32))
        # Noise scale 1/sqrt(i+1) along the i-th direction of a random orthonormal basis, normalised so that the
        # noise has an expected norm of `spread` (spread 1: a point's cosine with its cluster centre is ~0.7).
        scales = 1.0 / np.sqrt(np.arange(1, dim + 1, dtype=np.float32))
        basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        self.noise_map = (scales[:, None] * basis.astype(np.float32)) * (spread / np.linalg.norm(scales))

    def rows(self, start: int, stop: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, start, stop])
        labels = rng.integers(0, len(self.centres), size=stop - start)
        noise = rng.standard_normal((stop - start, self.dim), dtype=np.float32) @ self.noise_map
        return _unit_rows(self.centres[labels] + noise)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
