"""Benchmark of detectors (msearch.search.detect) at archive scale: fit a probe on five planted positives and
score the archive to a ranked top-1000, through the search index's candidates and exhaustively.

For each size: clustered synthetic 512-d unit vectors as bench/ann.py makes them, with a planted cluster of
PLANTED vectors around one random direction (cosine ~0.86 to it) at random rows. They are kept as the catalogue
keeps them, int8 codes (msearch.store.vector_codec), written chunk by chunk to a file that is memory-mapped and
decoded as read (vector_codec.UnitCodes): 5.1 GB at 10M vectors, where float32 would be 20 GB, so the archive
stays in the page cache of a 24 GiB machine. The search index (msearch.store.ann's choice for the size: IVF-PQ
past 500k) is built from those codes, as `msearch index` builds it from the catalogue's, once, and kept;
building it is indexing, not detection, and is timed apart. Then, timed:

- fit: the probe on 5 planted positives and BACKGROUND_NEGATIVES rows drawn as negatives (as a collection
  with no labelled negatives gets), with its cross-validation;
- candidates: the index searched with the probe's direction (the detector's candidate_probabilities, deeper
  until the top-1000 is reached), rescored exactly from the stored vectors;
- exhaustive: every vector scored in chunks (exhaustive_probabilities).

With `--catalogue N`, the same is measured through the command's own path on a real catalogue: the first N
vectors (the planted ones among them) written into an SQLite index (`msearch index`'s search index for that
size), a collection of five planted positives, then `Detector` (its fit draws the negatives from the
catalogue), `detect(top_k=1000)` and `detect(top_k=1000, exhaustive=True)`, which reads every vector from the
catalogue.

Reported: seconds, recall@1000 of the planted tiles (the unlabelled ones found in the top 1000, over how many
the exhaustive top 1000 holds), the overlap of both top-1000 lists, and memory (peak anonymous RSS; the code
file's pages are page cache).

    python bench/detect.py --sizes 1000000,10000000 --workdir /tmp/msearch-detect-bench [--catalogue 100000]
"""

from __future__ import annotations

import argparse
import json
import logging
import mmap
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ann import DIM, GENERATION_CHUNK, N_CLUSTERS, PeakAnonymousMemory, proc_status  # noqa: E402 (bench/ann.py)

from msearch.search import detect  # noqa: E402
from msearch.store import ann  # noqa: E402
from msearch.store.synthetic import ClusteredUnitVectors  # noqa: E402
from msearch.store.vector_codec import UnitCodes, quantise  # noqa: E402

SPACE = "llama3-ms-clip-base"  # the multispectral card, so that the searcher can describe the space (no model loads)
PLANTED = 200
POSITIVES = 5
TOP = 1000
PLANTED_NOISE = 0.6  # isotropic noise of this norm on the direction: cosine ~0.86 to it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/msearch-detect-bench"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--nprobe-scales", default="", help="also the top-1000 overlap with exhaustive at these scales (4,16,64)"
    )
    parser.add_argument("--catalogue", type=int, default=0, metavar="N", help="also measure N vectors in a catalogue")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    for n in (int(size) for size in args.sizes.split(",")):
        print(json.dumps(measure(args.workdir, n, args.repeats)), flush=True)
        for scale in (int(value) for value in args.nprobe_scales.split(",") if value):
            print(json.dumps(measure_scale(args.workdir, n, scale)), flush=True)
        if args.catalogue:
            print(json.dumps(measure_catalogue(args.workdir, n, args.catalogue)), flush=True)


def measure_scale(workdir: Path, n: int, scale: int) -> dict:
    """How much of the exhaustive top-1000 the candidate search finds when it probes `scale` x the tuned lists."""
    vectors, planted = planted_archive(workdir, n)
    index, info, _ = built_index(workdir, vectors)
    probe, lookup = _fitted(vectors, planted)
    ids, _ = detect.exhaustive_probabilities(probe, _chunks(vectors), TOP, None)
    started = time.perf_counter()
    _, found = ann.search(
        index, info, probe.direction[None], 2 * (TOP + POSITIVES), vectors_lookup=lookup, nprobe_scale=scale
    )
    found = found[0][found[0] >= 0]
    top = found[np.argsort(-probe.probability(lookup(found)), kind="stable")[:TOP]]
    seconds = time.perf_counter() - started
    return {
        "n": n,
        "nprobe_scale": scale,
        "seconds": seconds,
        "top_overlap": len(set(top.tolist()) & set(ids.tolist())) / TOP,
    }


def _chunks(vectors: UnitCodes):
    """(row ids, rows) of the archive, CHUNK_ROWS at a time."""
    for start in range(0, len(vectors), ann.CHUNK_ROWS):
        rows = np.asarray(vectors[start : start + ann.CHUNK_ROWS])
        yield np.arange(start, start + len(rows)), rows


def _fitted(vectors: UnitCodes, planted: np.ndarray):
    """A probe on the first planted rows and drawn background rows (as the detector draws them: seed
    BACKGROUND_SEED), and the row lookup."""

    def lookup(ids: np.ndarray) -> np.ndarray:
        return vectors[np.asarray(ids)]

    rng = np.random.default_rng(detect.BACKGROUND_SEED)
    drawn = np.setdiff1d(rng.choice(len(vectors), size=detect.BACKGROUND_NEGATIVES + POSITIVES, replace=False), planted)
    positives = lookup(planted[:POSITIVES])
    return detect.fit_probe(
        positives, np.empty((0, DIM), np.float32), lookup(drawn[: detect.BACKGROUND_NEGATIVES])
    ), lookup


def measure_catalogue(workdir: Path, n: int, size: int) -> dict:
    """The command's path (catalogue, search index, Detector) over `size` of the archive's vectors."""
    from msearch.schema import catalog
    from msearch.search.searcher import Searcher
    from msearch.store.collections import add_labels, create_collection
    from msearch.store.index_store import IndexStore, vector_bytes

    vectors, planted = planted_archive(workdir, n)
    rows = np.concatenate([np.setdiff1d(np.arange(size), planted)[: size - PLANTED], planted])
    directory = workdir / f"catalogue-{size}"
    started = time.perf_counter()
    if not (directory / "complete").exists():
        shutil.rmtree(directory, ignore_errors=True)
        store = IndexStore(directory, create=True)
        store.ensure_space(SPACE, SPACE, "0" * 64, DIM)
        with store.engine.begin() as conn:
            for start in range(0, size, GENERATION_CHUNK):
                part = rows[start : start + GENERATION_CHUNK]
                chunk = np.asarray(vectors[part])
                conn.execute(
                    catalog.tiles.insert(),
                    [
                        {"id": start + i + 1, "root": "/bench", "key": f"{row}", "path": f"{row}", "reader": "geotiff",
                         "stat_signature": "s"}
                        for i, row in enumerate(part.tolist())
                    ],
                )  # fmt: skip
                conn.execute(
                    catalog.vectors.insert(),
                    [
                        {"tile_id": start + i + 1, "space": SPACE, "vector": vector_bytes(v)}
                        for i, v in enumerate(chunk)
                    ],
                )
        view = store.open_space(SPACE, fill=False)  # built here, as `msearch index` builds it at this size
        store.rebuild_ann(view)
        store.save_space(view)
        create_collection(store, "planted", SPACE)
        add_labels(store, "planted", positive=list(range(size - PLANTED + 1, size - PLANTED + 1 + POSITIVES)))
        (directory / "complete").touch()
    build_s = time.perf_counter() - started
    planted_ids = set(range(size - PLANTED + 1 + POSITIVES, size + 1))
    searcher = Searcher(directory)
    searcher.view(SPACE)  # the server keeps its views loaded: opening one is not detection
    with PeakAnonymousMemory() as memory:
        started = time.perf_counter()
        detector = detect.Detector(searcher, "planted")
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        fast = detector.detect(top_k=TOP)
        candidates_s = time.perf_counter() - started
        started = time.perf_counter()
        full = detector.detect(top_k=TOP, exhaustive=True)
        exhaustive_s = time.perf_counter() - started
    fast_ids, full_ids = {r.tile_id for r in fast.results}, {r.tile_id for r in full.results}
    return {
        "catalogue_vectors": size,
        "kind": searcher.view(SPACE).ann.kind,
        "build_s": build_s,
        "fit_s": fit_s,
        "candidates_s": candidates_s,
        "fit_and_score_s": fit_s + candidates_s,
        "exhaustive_s": exhaustive_s,
        "planted_in_top_candidates": len(planted_ids & fast_ids),
        "planted_in_top_exhaustive": len(planted_ids & full_ids),
        "top_overlap": len(fast_ids & full_ids) / TOP,
        "peak_anon_mb": memory.peak_mb,
    }


def planted_archive(workdir: Path, n: int) -> tuple[UnitCodes, np.ndarray]:
    """The vectors (int8 codes in a memory-mapped file, decoded as read) and the rows of the planted cluster."""
    rng = np.random.default_rng(7)
    rows = np.sort(rng.choice(n, size=PLANTED, replace=False))
    path = workdir / f"codes-{n}.i8"
    if not path.exists() or path.stat().st_size != n * DIM:
        generator = ClusteredUnitVectors(DIM, N_CLUSTERS, seed=0)
        started = time.perf_counter()
        with open(path, "wb") as out:
            for start in range(0, n, GENERATION_CHUNK):
                out.write(quantise(generator.rows(start, min(n, start + GENERATION_CHUNK)))[1].tobytes())
        codes = np.memmap(path, dtype=np.int8, mode="r+", shape=(n, DIM))
        direction = rng.standard_normal(DIM).astype(np.float32)
        direction /= np.linalg.norm(direction)
        noise = rng.standard_normal((PLANTED, DIM)).astype(np.float32)
        noise *= PLANTED_NOISE / np.linalg.norm(noise, axis=1, keepdims=True)
        planted = direction + noise
        codes[rows] = quantise(planted / np.linalg.norm(planted, axis=1, keepdims=True))[1]
        codes.flush()
        logging.info(f"{n}: wrote {path} with {PLANTED} planted vectors in {time.perf_counter() - started:.0f} s")
    return UnitCodes(np.memmap(path, dtype=np.int8, mode="r", shape=(n, DIM))), rows


def built_index(workdir: Path, vectors: UnitCodes) -> tuple[object, ann.AnnInfo, float | None]:
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
    vectors.codes._mmap.madvise(mmap.MADV_RANDOM)  # candidates read scattered rows
    others = set(planted[POSITIVES:].tolist())

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
            probe, lookup = _fitted(vectors, planted)
            timings["fit_s"].append(time.perf_counter() - started)

            started = time.perf_counter()
            ids, p, _ = detect.candidate_probabilities(
                probe, search, lookup, enough, max(detect.FIRST_DEPTH, 2 * (TOP + POSITIVES)), n
            )
            fast = ids[np.argsort(-p, kind="stable")[:TOP]]
            timings["candidates_s"].append(time.perf_counter() - started)

        started = time.perf_counter()
        ids, p = detect.exhaustive_probabilities(probe, _chunks(vectors), TOP, None)
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
        "first_fit_s": timings["fit_s"][0],  # the process's first also imports scikit-learn
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
