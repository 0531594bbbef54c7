"""Benchmark of the size-dependent vector index (msearch.store.ann) on synthetic 512-d tile embeddings.

For each size: write clustered unit vectors to a float32 file (chunk by chunk, seeded; never all in RAM),
build the index with `choose_and_build` over a memmap of that file, compute exact ground truth chunk-wise
for fresh query-like vectors, then search in a separate process that holds only what serving needs (the index
read from disk and a memmap of the vectors for re-ranking). Its memory is reported twice: peak RSS, which also
counts page-cache pages of the vector file that the kernel maps around each row read (clean, shared and
reclaimable at any time), and anonymous RSS, the memory the search itself holds.

    python bench/ann.py --sizes 1000000,10000000 --queries 200 --workdir /tmp/msearch-ann-bench

A 10M run needs 20 GB free under --workdir. Vector files are kept and reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import mmap
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from msearch.store import ann
from msearch.store.synthetic import ClusteredUnitVectors

DIM = 512
N_CLUSTERS = 1024
GENERATION_CHUNK = 100_000
WARMUP_QUERIES = 10
# Text queries sit further from the image embeddings than the stored-vector-plus-noise sample the index is tuned
# on: recall is also measured on fresh vectors pushed this far off (cosine ~0.55 with where they started).
FAR_QUERY_NOISE = 1.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/msearch-ann-bench"))
    parser.add_argument("--search-only", type=int, metavar="N", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    if args.search_only:
        print(json.dumps(measure_search(args.workdir, args.search_only)))
        return

    rows = []
    for n in (int(size) for size in args.sizes.split(",")):
        row = build(args.workdir, n, args.queries)
        child = subprocess.run(
            [sys.executable, __file__, "--workdir", str(args.workdir), "--search-only", str(n)],
            check=True,
            capture_output=True,
            text=True,
        )
        row.update(json.loads(child.stdout.strip().splitlines()[-1]))
        print(json.dumps(row), flush=True)
        rows.append(row)
    print_table(rows)


def build(workdir: Path, n: int, n_queries: int) -> dict:
    generator = ClusteredUnitVectors(DIM, N_CLUSTERS, seed=0)
    vectors_path = workdir / f"vectors-{n}.f32"
    if not vectors_path.exists() or vectors_path.stat().st_size != n * DIM * 4:
        started = time.perf_counter()
        with open(vectors_path, "wb") as out:
            for start in range(0, n, GENERATION_CHUNK):
                out.write(generator.rows(start, min(n, start + GENERATION_CHUNK)).tobytes())
        logging.info(f"{n}: wrote {vectors_path} in {time.perf_counter() - started:.0f} s")
    vectors = np.memmap(vectors_path, dtype=np.float32, mode="r", shape=(n, DIM))
    ids = np.arange(n, dtype=np.int64)  # ids are row numbers, so re-ranking reads rows of the memmap

    with PeakAnonymousMemory() as build_memory:
        started = time.perf_counter()
        index, info = ann.choose_and_build(vectors, ids)
        build_s = time.perf_counter() - started
    logging.info(f"{n}: built {info.kind} in {build_s:.0f} s")
    ann.write_index(index, workdir / f"index-{n}.faiss")
    (workdir / f"info-{n}.json").write_text(json.dumps(info.to_dict()))

    # Fresh rows of the same mixture: query-like vectors that are not in the index (and not the tuning sample).
    near = generator.rows(n, n + n_queries)
    noise = np.random.default_rng(1).standard_normal(near.shape, dtype=np.float32)
    far = near + noise * (FAR_QUERY_NOISE / np.linalg.norm(noise, axis=1, keepdims=True))
    far /= np.linalg.norm(far, axis=1, keepdims=True)
    for name, queries in (("near", near), ("far", far)):
        started = time.perf_counter()
        truth = ann.exact_search(vectors, ids, queries, ann.RECALL_K)[1]
        logging.info(f"{n}: exact ground truth for {n_queries} {name} queries in {time.perf_counter() - started:.0f} s")
        np.save(workdir / f"queries-{name}-{n}.npy", queries)
        np.save(workdir / f"truth-{name}-{n}.npy", truth)
    return {
        "n": n,
        "kind": info.kind,
        "params": info.params,
        "tuning_recall": info.measured_recall_at_100,
        "build_s": build_s,
        "build_peak_anon_mb": build_memory.peak_mb,
    }


def measure_search(workdir: Path, n: int) -> dict:
    info = ann.AnnInfo.from_dict(json.loads((workdir / f"info-{n}.json").read_text()))
    index = ann.read_index(workdir / f"index-{n}.faiss")
    vectors = np.memmap(workdir / f"vectors-{n}.f32", dtype=np.float32, mode="r", shape=(n, DIM))
    # Re-ranking reads scattered 2 KB rows: no read-ahead, which would pull in far more than each row from disk.
    vectors._mmap.madvise(mmap.MADV_RANDOM)

    def lookup(ids: np.ndarray) -> np.ndarray:
        return vectors[ids]

    results = {}
    for name in ("near", "far"):
        queries, truth = np.load(workdir / f"queries-{name}-{n}.npy"), np.load(workdir / f"truth-{name}-{n}.npy")
        for query in queries[:WARMUP_QUERIES]:
            ann.search(index, info, query[None], ann.RECALL_K, vectors_lookup=lookup)
        latencies, found = [], []
        for query in queries:
            started = time.perf_counter()
            found.append(ann.search(index, info, query[None], ann.RECALL_K, vectors_lookup=lookup)[1][0])
            latencies.append(time.perf_counter() - started)
        results |= {
            f"{name}_p50_ms": 1e3 * float(np.percentile(latencies, 50)),
            f"{name}_p99_ms": 1e3 * float(np.percentile(latencies, 99)),
            f"{name}_recall_at_100": ann.recall_at_k(np.array(found), truth),
        }
    status = proc_status()
    return results | {"search_peak_rss_mb": status["VmHWM"] / 1024, "search_anon_mb": status["RssAnon"] / 1024}


class PeakAnonymousMemory:
    """Peak anonymous RSS while the block runs, sampled every 0.2 s. VmHWM would also count the pages of the
    20 GB memmap that the build reads through, which are page cache, not memory the build needs."""

    def __enter__(self) -> PeakAnonymousMemory:
        self.peak_mb = 0.0
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._sampler.join()

    def _sample(self) -> None:
        while True:
            self.peak_mb = max(self.peak_mb, proc_status()["RssAnon"] / 1024)
            if self._done.wait(0.2):
                return


def proc_status() -> dict[str, int]:
    """The kB figures of /proc/self/status."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            fields[name] = int(value.split()[0])
    return fields


def print_table(rows: list[dict]) -> None:
    print(
        f"\n{'vectors':>10} {'kind':>8} {'nlist':>6} {'nprobe':>6} {'rerank':>6} {'build s':>8} "
        f"{'build MB':>9} {'search MB':>10} {'(anon)':>7} {'queries':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'recall@100':>10}"
    )
    for row in rows:
        params = row["params"]
        for name in ("near", "far"):
            print(
                f"{row['n']:>10} {row['kind']:>8} {params.get('nlist', '-'):>6} {params.get('nprobe', '-'):>6} "
                f"{params.get('rerank_factor', '-'):>6} {row['build_s']:>8.0f} {row['build_peak_anon_mb']:>9.0f} "
                f"{row['search_peak_rss_mb']:>10.0f} {row['search_anon_mb']:>7.0f} {name:>7} "
                f"{row[f'{name}_p50_ms']:>7.1f} {row[f'{name}_p99_ms']:>7.1f} {row[f'{name}_recall_at_100']:>10.3f}"
            )


if __name__ == "__main__":
    main()
