"""What heat maps cost: `msearch query --heatmaps` for the top 10 results, warm, on this machine.

A random full-size checkpoint of the model in its release layout (Llama3-MS-CLIP: open_clip ViT-B/16 with a
10-band patch embedding; RS-M-CLIP: ViT-B/32 with the XLM-R text tower), served from a scratch Hugging Face
cache, indexes 25 chips of a real scene (Major TOM cell 199U_1099R, 1068 x 1068 px, from ../shared/data).
Then, in one process holding the warm searcher (vision tower loaded, the query's text embedding cached), the
heat maps of 10 of the chips are made --repeats times, as `query --heatmaps` makes them: the tiles read again
from the archive, one batch through the vision tower, each map written as a GeoTIFF and an overlay PNG (in
memory). Printed: seconds for the 10 and per chip (median), the process's CPU time (which a busy machine
does not inflate), and the split between reading and the forward pass. Random weights cost exactly what the real ones do; the maps they draw mean nothing.

    python bench/heatmaps.py                       # Llama3-MS-CLIP ViT-B/16, 3 repeats
    python bench/heatmaps.py --model rs-m-clip     # RS-M-CLIP ViT-B/32
    python bench/heatmaps.py --threads 1           # torch on one core
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_throughput import REPO_ROOT, isolate_model_state  # noqa: E402
from query_latency import build_model  # noqa: E402

TARGET_SECONDS = 3.0  # heat maps of the top 10 results, warm
RESULTS = 10
QUERY = "fields beside a river"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["llama3-ms-clip-base", "rs-m-clip"], default="llama3-ms-clip-base")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args(argv)
    shared = REPO_ROOT.parent / "shared" / "data"
    if not shared.is_dir():
        shared = next(p / "shared" / "data" for p in REPO_ROOT.parents if (p / "shared" / "data").is_dir())
    with tempfile.TemporaryDirectory(prefix="msearch-bench-") as tmp:
        scratch = Path(tmp)
        isolate_model_state(scratch)
        sys.path.insert(0, str(REPO_ROOT))
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        build_model(args.model, scratch)
        index = build_index(args.model, scratch, shared)
        run(args, index)
    return 0


def build_index(model: str, scratch: Path, shared: Path) -> Path:
    from msearch.indexer.pipeline import index_archive
    from msearch.indexer.tiles import ReadSettings
    from msearch.schema.bands import BAND_LAYOUTS
    from tests.scenes import majortom_scene, write_scene

    values, crs, transform = majortom_scene(shared)
    (scratch / "archive").mkdir()
    write_scene(scratch / "archive" / "scene.tif", values, crs, transform)
    started = time.perf_counter()
    summary = index_archive(
        [scratch / "archive"],
        index=scratch / "index",
        models=[model],
        settings=ReadSettings(band_order=BAND_LAYOUTS["l2a"]),
        workers=0,
    )
    print(f"indexed {summary.indexed} chips of a 1068 px scene in {time.perf_counter() - started:.1f} s")
    return scratch / "index"


def run(args: argparse.Namespace, index: Path) -> None:
    import torch

    from msearch.indexer.readers import ArchivePixels
    from msearch.models.dense import dense_embeddings
    from msearch.search.heatmaps import blend, geotiff_bytes, heat_maps, heat_rgba, heat_target
    from msearch.search.quicklook import png_bytes
    from msearch.search.searcher import Searcher

    searcher = Searcher(index, pixels=ArchivePixels())
    answer = searcher.query(QUERY, top_k=RESULTS)
    ids = [result.tile_id for result in answer.results]
    target = heat_target(searcher, text=QUERY)
    started = time.perf_counter()
    heat_maps(searcher, ids[:1], target)  # loads the vision tower
    print(f"first heat map, loading the vision tower: {time.perf_counter() - started:.1f} s")
    rows = searcher.store.tiles_by_id(ids)
    encoder = searcher.encoder(target.space)
    totals, cpu, reads, forwards = [], [], [], []
    for _ in range(args.repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        for heat_map in heat_maps(searcher, ids, target, quicklooks=True):
            geotiff_bytes(heat_map)
            png_bytes(blend(heat_map.quicklook, heat_rgba(heat_map)))
        totals.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
        # The same work in its two parts: reading the tiles again, and the recipe + forward pass.
        started = time.perf_counter()
        placed = [searcher.pixels.placed(rows[i]) for i in ids]
        reads.append(time.perf_counter() - started)
        started = time.perf_counter()
        dense_embeddings(encoder, encoder.prepare([tile.pixels for tile in placed])).heat(target.vector)
        forwards.append(time.perf_counter() - started)
    total = statistics.median(totals)
    print(
        f"\n{args.model}, random full-size weights, torch {torch.__version__} on the CPU "
        f"({torch.get_num_threads()} threads), {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"  heat maps of the top {RESULTS} results, warm (median of {args.repeats}): {total:.2f} s")
    print(f"  per chip: {total / RESULTS:.3f} s")
    # CPU seconds are the work itself: on a machine shared with other jobs the wall time is longer than it
    # would be alone, while the CPU time of this process stays about the same.
    threads = torch.get_num_threads()
    print(
        f"  CPU time of the process: {statistics.median(cpu):.2f} s for the {RESULTS} "
        f"(/ {threads} threads = {statistics.median(cpu) / threads:.2f} s: the wall time with the cores to itself)"
    )
    print(f"    reading the tiles again: {statistics.median(reads) / RESULTS:.3f} s per chip")
    print(f"    recipe + vision tower + scores: {statistics.median(forwards) / RESULTS:.3f} s per chip")
    verdict = "met" if total <= TARGET_SECONDS else "NOT met"
    print(f"  target: {RESULTS} heat maps within {TARGET_SECONDS:.0f} s warm: {verdict}")
    print("  no GPU on this machine: none measured")


if __name__ == "__main__":
    sys.exit(main())
