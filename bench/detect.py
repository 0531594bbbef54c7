"""Benchmark of detectors (msearch.search.detect) at archive scale: fit a probe on five planted positives and
score the archive to a ranked top-1000, through the search index's candidates and exhaustively.

For each size: clustered synthetic 512-d unit vectors as bench/ann.py makes them (written chunk by chunk to a
float32 file, memory-mapped), with a planted cluster of PLANTED vectors around one random direction (cosine
~0.86 to it) at random rows. The search index (msearch.store.ann's choice for the size: IVF-PQ past 500k) is
built once and kept; building it is indexing, not detection, and is timed apart. Then, timed:

- fit: the probe on 5 planted positives and BACKGROUND_NEGATIVES rows drawn as negatives (as a collection
  with no labelled negatives gets), with its cross-validation;
- candidates: the index searched with the probe's direction (the detector's candidate_probabilities, deeper
  until the top-1000 is reached), rescored exactly from the stored vectors;
- exhaustive: every vector scored in chunks (exhaustive_probabilities).

Reported: seconds, recall@1000 of the planted tiles (the unlabelled ones found in the top 1000, over how many
the exhaustive top 1000 holds), the overlap of both top-1000 lists, and memory (peak anonymous RSS; the vector
file's pages are page cache).

    python bench/detect.py --sizes 1000000 --workdir /tmp/msearch-detect-bench
"""

from __future__ import annotations

import argparse
import json
import logging
import mmap
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ann import DIM, GENERATION_CHUNK, N_CLUSTERS, PeakAnonymousMemory, proc_status  # noqa: E402 (bench/ann.py)

from msearch.search import detect  # noqa: E402
from msearch.store import ann  # noqa: E402
from msearch.store.synthetic import ClusteredUnitVectors  # noqa: E402

PLANTED = 200
POSITIVES = 5
TOP = 1000
PLANTED_NOISE = 0.6  # isotropic noise of this norm on the direction: cosine ~0.86 to it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/msearch-detect-bench"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    for n in (int(size) for size in args.sizes.split(",")):
        print(json.dumps(measure(args.workdir, n, args.repeats)), flush=True)


def planted_archive(workdir: Path, n: int) -> tuple[np.memmap, np.ndarray]:
    """The vectors (a memmap) and the rows of the planted cluster."""
    rng = np.random.default_rng(7)
    rows = np.sort(rng.choice(n, size=PLANTED, replace=False))
    path = workdir / f"vectors-{n}.f32"
    if not path.exists() or path.stat().st_size != n * DIM * 4:
        generator = ClusteredUnitVectors(DIM, N_CLUSTERS, seed=0)
        started = time.perf_counter()
        with open(path, "wb") as out:
            for start in range(0, n, GENERATION_CHUNK):
                out.write(generator.rows(start, min(n, start + GENERATION_CHUNK)).tobytes())
        vectors = np.memmap(path, dtype=np.float32, mode="r+", shape=(n, DIM))
        direction = rng.standard_normal(DIM).astype(np.float32)
        direction /= np.linalg.norm(direction)
        noise = rng.standard_normal((PLANTED, DIM)).astype(np.float32)
        noise *= PLANTED_NOISE / np.linalg.norm(noise, axis=1, keepdims=True)
        planted = direction + noise
        vectors[rows] = planted / np.linalg.norm(planted, axis=1, keepdims=True)
        vectors.flush()
        logging.info(f"{n}: wrote {path} with {PLANTED} planted vectors in {time.perf_counter() - started:.0f} s")
    return np.memmap(path, dtype=np.float32, mode="r", shape=(n, DIM)), rows


def built_index(workdir: Path, vectors: np.ndarray) -> tuple[object, ann.AnnInfo, float | None]:
    n = len(vectors)
    index_path, info_path = workdir / f"index-{n}.faiss", workdir / f"info-{n}.json"
    if index_path.exists() and info_path.exists():
        return ann.read_index(index_path), ann.AnnInfo.from_dict(json.loads(info_path.read_text())), None
    started = time.perf_counter()
    index, info = ann.choose_and_build(vectors, np.arange(n, dtype=np.int64))
    build_s = time.perf_counter() - started
    ann.write_index(index, index_path)
    info_path.write_text(json.dumps(info.to_dict()))
    return index, info, build_s


def measure(workdir: Path, n: int, repeats: int) -> dict:
    vectors, planted = planted_archive(workdir, n)
    index, info, build_s = built_index(workdir, vectors)
    vectors._mmap.madvise(mmap.MADV_RANDOM)  # candidates read scattered rows
    positives = planted[:POSITIVES]
    others = set(planted[POSITIVES:].tolist())
    rng = np.random.default_rng(detect.BACKGROUND_SEED)

    def lookup(ids: np.ndarray) -> np.ndarray:
        return np.asarray(vectors[np.asarray(ids)], dtype=np.float32)

    def search(direction: np.ndarray, depth: int) -> list[tuple[int, float]]:
        scores, ids = ann.search(
            index, info, direction[None], depth, vectors_lookup=lookup, nprobe_scale=detect.NPROBE_SCALE
        )
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def enough(ids, cosines, exhausted):
        return exhausted or len(ids) >= TOP

    timings = {"fit_s": [], "candidates_s": [], "exhaustive_s": []}
    with PeakAnonymousMemory() as memory:
        for _ in range(repeats):
            started = time.perf_counter()
            drawn = np.setdiff1d(rng.choice(n, size=detect.BACKGROUND_NEGATIVES + POSITIVES, replace=False), positives)
            probe = detect.fit_probe(lookup(positives), np.empty((0, DIM), np.float32), lookup(drawn[:500]))
            timings["fit_s"].append(time.perf_counter() - started)

            started = time.perf_counter()
            ids, p, _ = detect.candidate_probabilities(
                probe, search, lookup, enough, max(detect.FIRST_DEPTH, 2 * (TOP + POSITIVES)), n
            )
            fast = ids[np.argsort(-p, kind="stable")[:TOP]]
            timings["candidates_s"].append(time.perf_counter() - started)

        started = time.perf_counter()
        chunks = (
            (np.arange(start, min(n, start + ann.CHUNK_ROWS)), np.asarray(vectors[start : start + ann.CHUNK_ROWS]))
            for start in range(0, n, ann.CHUNK_ROWS)
        )
        ids, p = detect.exhaustive_probabilities(probe, chunks, TOP, None)
        full = ids[np.argsort(-p, kind="stable")]
        timings["exhaustive_s"].append(time.perf_counter() - started)

    found_fast, found_full = len(others & set(fast.tolist())), len(others & set(full.tolist()))
    fit_s, candidates_s = float(np.median(timings["fit_s"])), float(np.median(timings["candidates_s"]))
    return {
        "n": n,
        "dim": DIM,
        "kind": info.kind,
        "params": info.params,
        "build_s": build_s,
        "fit_s": fit_s,
        "candidates_s": candidates_s,
        "fit_and_score_s": fit_s + candidates_s,
        "exhaustive_s": timings["exhaustive_s"][0],
        "cv": probe.cv,
        "planted_unlabelled": len(others),
        "planted_in_top_candidates": found_fast,
        "planted_in_top_exhaustive": found_full,
        "recall_vs_exhaustive": found_fast / found_full if found_full else None,
        "top_overlap": len(set(fast.tolist()) & set(full.tolist())) / TOP,
        "peak_anon_mb": memory.peak_mb,
        "peak_rss_mb": proc_status()["VmHWM"] / 1024,
    }


if __name__ == "__main__":
    main()
