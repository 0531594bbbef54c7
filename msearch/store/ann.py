"""Nearest-neighbour indexes over L2-normalised embeddings whose type follows the size of the space.

- below `EXACT_THRESHOLD` vectors: exact search (IndexFlatIP behind an id map);
- up to `COMPRESSED_THRESHOLD`: an inverted file holding the full vectors (IVF-flat), scores are exact;
- above: an inverted file of 64-byte product-quantisation codes (IVF-PQ), whose candidates are re-ranked
  exactly with the full vectors read from the caller's vector store (a memory-mapped float32 file), so
  that only the codes (640 MB at 10M vectors) live in RAM.

Inverted files are trained on a bounded sample and then tuned: nprobe (and for IVF-PQ the re-rank depth)
grows until recall@100 against exact search, on held-out query-like vectors, reaches the target. The
choice, its parameters and the measured recall are an `AnnInfo`, which serialises to JSON for a manifest.

HNSW is not offered: it cannot remove vectors, it keeps full vectors plus links in RAM (over 20 GB at 10M),
and building it over millions of 512-d vectors on two cores takes hours.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import faiss
import numpy as np

# One query, k=100, d=512, faiss-cpu 1.15 on the 2-core development machine: IndexFlatIP takes 12 ms at 50k
# vectors, 25 ms at 100k and 51 ms at 200k (~0.25 us per vector). 50k keeps exact search well inside the
# 20 ms per-query target. The same bound decides when an id subset is searched exactly (see `search`).
EXACT_THRESHOLD = 50_000
# IVF-flat keeps 2 KB per 512-d vector in RAM: 1 GB at 500k, already half the 2 GB search budget. Beyond it
# the codes are compressed.
COMPRESSED_THRESHOLD = 500_000
# A trained inverted file keeps working as vectors are added; its lists grow unbalanced and slower to scan
# as the space outgrows the training, so it is retrained past this growth factor.
RETRAIN_GROWTH = 4.0
RECALL_K = 100
DEFAULT_TARGET_RECALL = 0.95
# nlist ~ 4 sqrt(n), capped: assigning every added vector costs nlist inner products, and 10M vectors into
# 4096 lists is already ~4e13 flops (minutes on two cores).
MAX_NLIST = 4096
# faiss k-means warns below 39 training points per centroid; 40 bounds training at 164k vectors.
TRAINING_POINTS_PER_LIST = 40
KMEANS_ITERATIONS = 10
PQ_NBITS = 8
PQ_CODE_BYTES = 64
FIRST_RERANK_FACTOR = 4
MAX_RERANK_FACTOR = 64
TUNING_QUERIES = 200
# Default tuning queries are stored vectors plus isotropic noise of this norm (cosine ~0.7 with the source
# vector once renormalised): near the data like real queries, but not points of it, which would be found
# at rank 1 trivially and overstate recall. Text queries sit further from the image embeddings than that;
# pass encoded prompts as `sample_queries` to tune on them instead.
QUERY_NOISE = 1.0
CHUNK_ROWS = 65_536

Kind = str  # 'flat' | 'ivf-flat' | 'ivf-pq'
VectorsLookup = Callable[[np.ndarray], np.ndarray]
log = logging.getLogger(__name__)


@dataclass
class AnnInfo:
    """What was built: the index kind, its tuned parameters and the recall measured when it was tuned.

    `trained_on` is the size of the space when the index was built (what `needs_retrain` compares against);
    `params["training_sample"]` is how many of those vectors trained the quantisers.
    """

    kind: Kind
    trained_on: int
    target_recall: float
    measured_recall_at_100: float
    exact_threshold: int = EXACT_THRESHOLD
    compressed_threshold: int = COMPRESSED_THRESHOLD
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.kind == "flat":
            return "exact search"
        params = ", ".join(f"{k} {v}" for k, v in self.params.items() if k != "training_sample")
        return f"{self.kind} ({params}; recall@100 {self.measured_recall_at_100:.3f} against exact search)"

    @classmethod
    def from_dict(cls, data: dict) -> AnnInfo:
        return cls(**data)


def choose_kind(
    n: int, exact_threshold: int = EXACT_THRESHOLD, compressed_threshold: int = COMPRESSED_THRESHOLD
) -> Kind:
    if n < exact_threshold:
        return "flat"
    return "ivf-flat" if n < compressed_threshold else "ivf-pq"


def new_flat_index(dim: int) -> faiss.Index:
    """Exact inner-product search, labelled by tile id."""
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def choose_and_build(
    vectors: np.ndarray,
    ids: np.ndarray,
    *,
    target_recall: float = DEFAULT_TARGET_RECALL,
    exact_threshold: int = EXACT_THRESHOLD,
    compressed_threshold: int = COMPRESSED_THRESHOLD,
    sample_queries: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[faiss.Index, AnnInfo]:
    """Build the index that suits the size of `vectors` (n, d) float32, unit rows; `ids` (n,) int64, unique.

    `vectors` may be a np.memmap larger than RAM, or int8 codes decoded as read (vector_codec.UnitCodes): it is
    read in chunks, apart from the training sample.
    """
    n, dim = vectors.shape
    ids = np.asarray(ids, dtype=np.int64)
    kind = choose_kind(n, exact_threshold, compressed_threshold)
    if kind == "flat":
        index = new_flat_index(dim)
        _add_chunked(index, vectors, ids)
        return index, AnnInfo(kind, n, target_recall, 1.0, exact_threshold, compressed_threshold)

    rng = np.random.default_rng(seed)
    nlist = max(
        1,
        min(
            MAX_NLIST, 2 ** round(math.log2(4 * math.sqrt(n))), 2 ** math.floor(math.log2(n / TRAINING_POINTS_PER_LIST))
        ),
    )
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf-flat":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        params = {"nlist": nlist}
    else:
        m = _pq_subquantizers(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, PQ_NBITS, faiss.METRIC_INNER_PRODUCT)
        # Polysemous training (on by default) reorders codes for Hamming filtering, which search never uses,
        # and it dominates training time.
        index.do_polysemous_training = False
        params = {"nlist": nlist, "m": m, "nbits": PQ_NBITS, "rerank_factor": FIRST_RERANK_FACTOR}
    index.cp.niter = KMEANS_ITERATIONS
    if kind == "ivf-flat":
        # Lookup by id, to reconstruct the vectors of an id subset. Not for ivf-pq, whose codes do not give the
        # vectors back and whose hashtable would cost ~50 bytes a vector (~0.5 GB at 10M).
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
    training_rows = np.sort(rng.choice(n, size=min(n, nlist * TRAINING_POINTS_PER_LIST), replace=False))
    started = time.perf_counter()
    index.train(np.ascontiguousarray(vectors[training_rows], dtype=np.float32))
    log.info(
        "%s: trained %d lists on %d vectors in %.1f s", kind, nlist, len(training_rows), time.perf_counter() - started
    )
    started = time.perf_counter()
    _add_chunked(index, vectors, ids)
    log.info("%s: added %d vectors in %.1f s", kind, n, time.perf_counter() - started)

    if sample_queries is None:
        sample_queries = _query_like(vectors, rng)
    info = AnnInfo(
        kind,
        n,
        target_recall,
        0.0,
        exact_threshold,
        compressed_threshold,
        {**params, "nprobe": 1, "training_sample": len(training_rows)},
    )
    started = time.perf_counter()
    _tune(
        index,
        info,
        sample_queries,
        exact_search(vectors, ids, sample_queries, RECALL_K)[1],
        _lookup_by_id(vectors, ids),
    )
    log.info(
        "%s: tuned to %s, recall@100 %.3f, in %.1f s",
        kind,
        info.params,
        info.measured_recall_at_100,
        time.perf_counter() - started,
    )
    return index, info


def search(
    index: faiss.Index,
    info: AnnInfo,
    queries: np.ndarray,
    k: int,
    *,
    vectors_lookup: VectorsLookup | None = None,
    allowed_ids: np.ndarray | None = None,
    nprobe_scale: int = 1,
    rerank: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) per query, best first; missing results are (-inf, -1) as in faiss.
    `nprobe_scale` probes that many times the tuned number of lists (at most all of them), for queries farther
    from the data than the tuning queries (a detector's direction) or a per-place search, whose near-duplicate
    acquisitions share lists. `rerank=False` leaves an ivf-pq index's candidates in the order and with the
    approximate scores of their codes, for a caller that scores its candidates exactly itself (per-place search).

    `vectors_lookup(ids) -> (len(ids), d)` returns stored full vectors: required for ivf-pq (exact re-ranking),
    otherwise the index reconstructs them. `allowed_ids` restricts the search to those ids (which must be in
    the index): a subset below the exact threshold is searched exactly over just its vectors; a larger one
    goes through the index with an id selector, and a query that finds fewer than k allowed ids there (the
    probed lists held too few) is answered exactly, so k results come back whenever k allowed ids exist.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if info.kind == "ivf-pq" and vectors_lookup is None:
        raise ValueError("an ivf-pq index re-ranks with the stored vectors: pass vectors_lookup")
    selector = None
    if allowed_ids is not None:
        allowed_ids = np.unique(np.asarray(allowed_ids, dtype=np.int64))
        if len(allowed_ids) < info.exact_threshold:
            return exact_search(_stored_vectors(index, info, allowed_ids, vectors_lookup), allowed_ids, queries, k)
        selector = faiss.IDSelectorBatch(allowed_ids)

    if info.kind == "flat":
        params = None if selector is None else faiss.SearchParameters(sel=selector)
    else:
        nprobe = min(info.params["nlist"], info.params["nprobe"] * nprobe_scale)
        params = faiss.SearchParametersIVF(nprobe=nprobe, sel=selector)
    reranked = info.kind == "ivf-pq" and rerank
    depth = k * info.params["rerank_factor"] if reranked else k
    scores, found = index.search(queries, depth, params=params)
    if reranked:
        scores, found = _rerank(queries, found, k, vectors_lookup)

    if allowed_ids is not None:
        short = np.flatnonzero((found >= 0).sum(axis=1) < min(k, len(allowed_ids)))
        if len(short):
            stored = _stored_vectors(index, info, allowed_ids, vectors_lookup)
            scores[short], found[short] = exact_search(stored, allowed_ids, queries[short], k)
    return scores, found


def add(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> None:
    """Add vectors to a built index. A trained inverted file takes them without retraining: each goes to the
    list of its nearest existing centroid. See `needs_retrain` for when the training has gone stale."""
    _add_chunked(index, vectors, np.asarray(ids, dtype=np.int64))


def remove(index: faiss.Index, ids: np.ndarray) -> int:
    """Remove vectors by id; returns how many were there."""
    ids = np.asarray(ids, dtype=np.int64)
    if isinstance(index, faiss.IndexIVF) and index.direct_map.type == faiss.DirectMap.Hashtable:
        return index.remove_ids(faiss.IDSelectorArray(ids))  # the only selector a hashtable removes with
    # Otherwise every stored id is tested against the selector: a hashed set, not a linear scan of `ids`.
    return index.remove_ids(faiss.IDSelectorBatch(ids))


def stored_ids(index: faiss.Index) -> np.ndarray:
    """Every id an index holds (flat: in insertion order; inverted file: list by list)."""
    if isinstance(index, faiss.IndexIDMap):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    invlists = index.invlists
    parts = [
        faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
        for i in range(index.nlist)
        if invlists.list_size(i)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)


def needs_retrain(info: AnnInfo, n_now: int, growth: float = RETRAIN_GROWTH) -> bool:
    """Whether a space now holding `n_now` vectors deserves a rebuild: its size now calls for another kind of
    index (it crossed a threshold), or an inverted file has grown more than `growth` times since training."""
    if choose_kind(n_now, info.exact_threshold, info.compressed_threshold) != info.kind:
        return True
    return info.kind != "flat" and n_now > growth * info.trained_on


def write_index(index: faiss.Index, path: str | os.PathLike) -> None:
    """Write atomically: readers see the old file or the complete new one, never a partial write."""
    path = Path(path)
    # A fresh name in the same folder (os.replace is atomic only within a file system), created by faiss itself
    # so that the file gets the usual umask permissions rather than mkstemp's 0600.
    tmp = str(path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp"))
    try:
        faiss.write_index(index, tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself is durable only once the folder is synced
    finally:
        os.close(folder)


def read_index(path: str | os.PathLike, *, mmap: bool = False) -> faiss.Index:
    """Read an index; with mmap the inverted lists of an IVF index stay on disk, paged in as probed (read-only:
    read without mmap to add or remove). Flat indexes are read into RAM either way."""
    return faiss.read_index(str(path), faiss.IO_FLAG_MMAP if mmap else 0)


def exact_search(
    vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int, chunk_rows: int = CHUNK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product, chunk by chunk so that `vectors` may be a memmap larger than RAM."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(vectors), chunk_rows):
        chunk_scores = queries @ np.asarray(vectors[start : start + chunk_rows], dtype=np.float32).T
        chunk_ids = np.broadcast_to(ids[start : start + chunk_rows], chunk_scores.shape)
        scores = np.concatenate([best_scores, chunk_scores], axis=1)
        candidates = np.concatenate([best_ids, chunk_ids], axis=1)
        keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(scores, keep, axis=1)
        best_ids = np.take_along_axis(candidates, keep, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_scores, order, axis=1), np.take_along_axis(best_ids, order, axis=1)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's true top-k (rows of `truth`) present in its found top-k. Rows are padded
    with -1 where fewer than k vectors exist: the padding is not a result."""
    fractions = []
    for f, t in zip(found, truth):
        t = t[t >= 0]
        fractions.append(len(np.intersect1d(f[f >= 0], t)) / len(t) if len(t) else 1.0)
    return float(np.mean(fractions))


def _tune(
    index: faiss.Index, info: AnnInfo, queries: np.ndarray, truth: np.ndarray, vectors_lookup: VectorsLookup
) -> None:
    """Double nprobe (or, for ivf-pq, the re-rank depth when that gains more recall) until the target is met."""

    def measured(params: dict) -> float:
        trial = AnnInfo(**{**info.to_dict(), "params": params})
        return recall_at_k(search(index, trial, queries, RECALL_K, vectors_lookup=vectors_lookup)[1], truth)

    recall = measured(info.params)
    while recall < info.target_recall:
        trials = []
        if info.params["nprobe"] < info.params["nlist"]:
            trials.append({**info.params, "nprobe": info.params["nprobe"] * 2})
        if info.kind == "ivf-pq" and info.params["rerank_factor"] < MAX_RERANK_FACTOR:
            trials.append({**info.params, "rerank_factor": info.params["rerank_factor"] * 2})
        if not trials:
            break  # the target is out of reach: the shortfall stays recorded in measured_recall_at_100
        recall, info.params = max(((measured(params), params) for params in trials), key=lambda t: t[0])
    info.measured_recall_at_100 = recall


def _rerank(
    queries: np.ndarray, candidates: np.ndarray, k: int, vectors_lookup: VectorsLookup
) -> tuple[np.ndarray, np.ndarray]:
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    found = np.full((len(queries), k), -1, dtype=np.int64)
    for row, (query, row_candidates) in enumerate(zip(queries, candidates)):
        row_candidates = row_candidates[row_candidates >= 0]
        exact = vectors_lookup(row_candidates) @ query
        best = np.argsort(-exact, kind="stable")[:k]
        scores[row, : len(best)], found[row, : len(best)] = exact[best], row_candidates[best]
    return scores, found


def _stored_vectors(
    index: faiss.Index, info: AnnInfo, ids: np.ndarray, vectors_lookup: VectorsLookup | None
) -> np.ndarray:
    if vectors_lookup is not None:
        return vectors_lookup(ids)
    return index.reconstruct_batch(ids)  # exact for flat and ivf-flat; ivf-pq required a lookup


def _lookup_by_id(vectors: np.ndarray, ids: np.ndarray) -> VectorsLookup:
    order = np.argsort(ids)
    sorted_ids = ids[order]

    def lookup(wanted: np.ndarray) -> np.ndarray:
        rows = order[np.searchsorted(sorted_ids, wanted)]
        by_row = np.argsort(rows)  # ascending reads are kinder to a memmap
        vectors_out = np.empty((len(rows), vectors.shape[1]), dtype=np.float32)
        vectors_out[by_row] = vectors[rows[by_row]]
        return vectors_out

    return lookup


def _query_like(vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rows = np.sort(rng.choice(len(vectors), size=min(len(vectors), TUNING_QUERIES), replace=False))
    noise = rng.standard_normal((len(rows), vectors.shape[1]), dtype=np.float32)
    noise *= QUERY_NOISE / np.linalg.norm(noise, axis=1, keepdims=True)
    queries = np.asarray(vectors[rows], dtype=np.float32) + noise
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def _pq_subquantizers(dim: int) -> int:
    """64-byte codes at 8 bits per sub-quantiser, each of at least 8 dimensions (d=512: m=64); m divides d."""
    m = max(1, min(PQ_CODE_BYTES, dim // 8))
    while dim % m:
        m -= 1
    return m


def _add_chunked(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> None:
    for start in range(0, len(vectors), CHUNK_ROWS):
        index.add_with_ids(
            np.ascontiguousarray(vectors[start : start + CHUNK_ROWS], dtype=np.float32), ids[start : start + CHUNK_ROWS]
        )
