"""How the catalogue keeps the exact vectors (schema version 3): each L2-normalised vector as int8 codes with
one float32 scale, `scale (4 bytes, little-endian) + dim int8 codes`, decoded as the codes scaled to unit
length. Rounding to codes leaves codes x scale 0.9995 to 1.0005 long (measured on the EuroSAT index), and the
search indexes score by inner product: decoded as codes x scale, a score would not be the cosine it is shown
as, and the longer of two vectors would win a near tie. So the codes give the direction and the length is 1
(the scale, kept in the format, is not needed for either). Every path from the catalogue to a vector (the FAISS views,
exact re-ranking, query by example, evaluation, export) decodes here.

Measured with bench/vector_storage.py (512-d, two spaces, SQLite): 1.16 KB per tile per space in the
catalogue (float16: 1.70 KB, float32: 2.95 KB), and recall@100 against exact float32 search 0.987 for
IVF-PQ re-ranked with these vectors (float16: 0.988). A component is off by at most half a step,
scale / 2 = max|x| / 254 <= 1/254, so a stored vector's cosine with its original is about 0.9999.
"""

from __future__ import annotations

import numpy as np

SCALE_BYTES = 4
# Two stored copies of one embedding computed apart (another batch, another run) differ by at most one step
# per component; a unit vector's step is at most 1/127.
VECTOR_ATOL = 1.0 / 127


def stored_size(dim: int) -> int:
    return SCALE_BYTES + dim


def encode(vectors: np.ndarray) -> list[bytes]:
    """One blob per row of `vectors` (n, dim)."""
    scale, codes = quantise(vectors)
    return [s.tobytes() + c.tobytes() for s, c in zip(scale.astype("<f4"), codes)]


def quantise(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scales (n,) float32, codes (n, dim) int8) of the rows of `vectors`: what `encode` stores."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    scale = np.maximum(np.abs(vectors).max(axis=1), np.finfo(np.float32).tiny) / 127
    return scale, np.clip(np.rint(vectors / scale[:, None]), -127, 127).astype(np.int8)


def decode(blob: bytes, n: int, dim: int) -> np.ndarray:
    """(n, dim) float32 unit vectors from n concatenated blobs; ValueError when the size is not n blobs of
    `dim`."""
    return decode_codes(*split(blob, n, dim))


def split(blob: bytes, n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(scales (n, 1) float32, codes (n, dim) int8) of n concatenated blobs, undecoded: a caller that keeps
    many vectors in memory keeps them at a quarter of float32's size and decodes them a chunk at a time. A
    row's scale here is the one that makes its codes unit length (1 / |codes|; 1 for a zero vector, which stays
    zero), not the stored one: see the module's docstring."""
    if len(blob) != n * stored_size(dim):
        raise ValueError(f"{len(blob)} bytes are not {n} stored {dim}-d vectors ({stored_size(dim)} bytes each)")
    if n == 0:
        return np.empty((0, 1), np.float32), np.empty((0, dim), np.int8)
    rows = np.frombuffer(blob, dtype=np.uint8).reshape(n, stored_size(dim))
    codes = rows[:, SCALE_BYTES:].view(np.int8)
    return unit_scales(codes), codes


def unit_scales(codes: np.ndarray) -> np.ndarray:
    """(n, 1) float32: the scale that makes each row of int8 `codes` unit length (1 for a zero row)."""
    # The squared length of int8 codes is an exact integer; its square root in float64, so that the decoded float32
    # vectors are unit length to within 1e-7. einsum sums without a widened copy of the codes.
    squares = np.einsum("ij,ij->i", codes, codes, dtype=np.int64)
    norms = np.maximum(np.sqrt(squares.astype(np.float64)), 1.0)
    return (1.0 / norms).astype(np.float32)[:, None]


def decode_codes(scales: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The float32 unit vectors of `split`'s (scales, codes): codes x scale, as `decode` gives them. A float32
    product of an int8 code and a float32 scale is the correctly rounded exact product, as a float64 product
    rounded to float32 would be, at half the memory: 65,536 512-d rows decode in 0.07 s rather than 0.5 s."""
    return codes.astype(np.float32) * scales


class UnitCodes:
    """An (n, dim) float32 matrix of unit vectors held as int8 codes (an array or a memory-mapped file, a quarter
    of float32's size) and decoded as `decode` decodes them, rows at a time: indexing with a slice, an integer
    array or an integer gives the decoded rows. What msearch.store.ann builds an index from when the float32
    vectors would not fit (10M 512-d vectors: 5.1 GB of codes, 20 GB as float32)."""

    dtype = np.dtype(np.float32)

    def __init__(self, codes: np.ndarray):
        self.codes = codes

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, rows) -> np.ndarray:
        codes = np.asarray(self.codes[rows])
        if codes.ndim == 1:
            return decode_codes(unit_scales(codes[None]), codes[None])[0]
        return decode_codes(unit_scales(codes), codes)
