"""End-to-end query latency: a cold `msearch query` against the naive path, side by side in one run.

Every measurement is the wall time of a fresh Python process answering one query over the same index (random
full-size weights of the model in its release layout, served from a scratch Hugging Face cache; N synthetic
512-d vectors in its space), median of --repeats runs:

  naive          import everything (open_clip, transformers), build the whole model, load the whole
                 checkpoint, encode, search: what a query cost before the cold path existed
  cold, new      `msearch query "<text never asked>" --json`: the exported numpy text tower, no torch
  cold, repeat   `msearch query` of a text asked before: answered from the query-embedding cache
and, in one process that already holds the text tower, `warm`: a new query's encode + search; and once,
before the others, `first query, exporting`: the index was filled without the indexer (which exports the
text tower), so the first query loads the torch text tower and exports it.

"Cold" is a new process; files' pages may sit in the OS page cache from the previous runs, as they do
for a user who queries more than once a day.

    python bench/query_latency.py                          # Llama3-MS-CLIP, English, 100k vectors, 3 repeats
    python bench/query_latency.py --model rs-m-clip        # RS-M-CLIP's XLM-R tower, Portuguese queries
    python bench/query_latency.py --vectors 1000000
    python bench/query_latency.py --catalogue postgresql+psycopg://USER@HOST/EMPTY_DB   # PostgreSQL beside SQLite
    python bench/query_latency.py --quick [--catalogue URL]   # 20k vectors, 2 repeats: a few minutes

With --catalogue, the same tiles and vectors are also put in that (empty) catalogue, with an index directory
of its own, and the cold and warm queries are timed against it beside the SQLite catalogue.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_throughput import REPO_ROOT, isolate_model_state  # noqa: E402

TARGET_SECONDS = 2.5
TARGET_RATIO = 0.5
# Query texts by model, in a language its space is routed for; "{n}" makes each text new.
QUERIES = {
    "llama3-ms-clip-base": ("fields beside a river, take {n}", "a harbour with ships, take {n}"),
    "rs-m-clip": ("campos ao lado de um rio, vez {n}", "um porto com navios, vez {n}"),
}
NAIVE = """
import sys, time
import open_clip, transformers  # everything, up front
from msearch.search.searcher import Searcher
searcher = Searcher(sys.argv[1], query_cache=None)
encoder = searcher.encoder("{space}")  # the whole model and the whole checkpoint
vector = encoder.encode_texts([sys.argv[2]])[0]
print(searcher.search_vector("{space}", vector, 10, None)[:1])
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(QUERIES), default="llama3-ms-clip-base")
    parser.add_argument("--vectors", type=int, default=100_000, help="vectors in the index's space")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--catalogue", help="an empty catalogue database (e.g. PostgreSQL) to time beside SQLite")
    parser.add_argument("--quick", action="store_true", help="20,000 vectors and 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.vectors, args.repeats = 20_000, 2
    return args


def build_model(model: str, scratch: Path) -> str:
    """A random full-size checkpoint as the hub's cached file; returns its sha256 (the blob name)."""
    import open_clip
    import torch

    from msearch.models import get_card
    from tests.tiny_models import build_msclip, msclip_release_state_dict, put_in_hf_cache, save_tiny_rsmclip

    card = get_card(model)
    cache = Path(os.environ["HF_HUB_CACHE"])
    if model == "rs-m-clip":
        snapshot = save_tiny_rsmclip(cache, full_size=True)
    else:
        checkpoint = scratch / card.weights["file"]
        torch.save(msclip_release_state_dict(build_msclip(open_clip.get_model_config("ViT-B-16"))), checkpoint)
        snapshot = put_in_hf_cache(cache, card.weights["hub"], {card.weights["file"]: checkpoint})
        checkpoint.unlink()
    return Path(os.path.realpath(snapshot / card.weights["file"])).name


def build_index(model: str, index: Path, sha256: str, n: int, catalogue: str | None = None) -> str:
    """N tiles with synthetic clustered unit vectors in the model's space, searched as msearch would."""
    from msearch.schema import catalog
    from msearch.store.index_store import IndexStore, vector_bytes
    from msearch.store.synthetic import ClusteredUnitVectors

    store = IndexStore(index, create=True, catalogue=catalogue)
    store.ensure_space(model, model, sha256, 512)
    generator = ClusteredUnitVectors(512, n_clusters=200, seed=0)
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        vectors = generator.rows(start, stop)
        with store.engine.begin() as conn:
            conn.execute(
                catalog.tiles.insert(),
                [
                    {
                        "id": i + 1,
                        "root": "/archive",
                        "key": f"t{i}.tif",
                        "path": f"t{i}.tif",
                        "reader": "geotiff",
                        "stat_signature": "s",
                        "centre_lon": 0.0,
                        "centre_lat": 0.0,
                    }
                    for i in range(start, stop)
                ],
            )
            conn.execute(
                catalog.vectors.insert(),
                [
                    {"tile_id": i + 1, "space": model, "vector": vector_bytes(vectors[i - start])}
                    for i in range(start, stop)
                ],
            )
    view = store.open_space(model)
    info = store.rebuild_ann(view)
    store.save_space(view)
    return info.describe()


def catalogue_kind(url: str) -> str:
    return url.split(":", 1)[0].split("+", 1)[0]


def timed(command: list[str], env: dict) -> float:
    """Wall seconds of one process."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[:4])} failed: {done.stderr.decode()[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="msearch-bench-") as tmp:
        scratch = Path(tmp)
        isolate_model_state(scratch)
        sys.path.insert(0, str(REPO_ROOT))
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        sha256 = build_model(args.model, scratch)
        # (label, index directory, --catalogue arguments): SQLite in the directory, and the one given
        catalogues = [("sqlite", scratch / "index", [])]
        if args.catalogue:
            catalogues.append((catalogue_kind(args.catalogue), scratch / "index-2", ["--catalogue", args.catalogue]))
        search_index = ""
        for _, index, options in catalogues:
            search_index = build_index(args.model, index, sha256, args.vectors, *options[1:])
        query, warm_query = QUERIES[args.model]
        msearch = [sys.executable, "-m", "msearch", "query"]
        load_before = os.getloadavg()
        # The index was filled without the indexer, so no text tower is exported yet: this first query
        # loads the torch tower and exports it, as a first query on an index built elsewhere would.
        first = timed([*msearch, query.format(n="first"), "--index", str(catalogues[0][1]), "--json"], env)
        rows: dict[str, list[float]] = {"naive": []}
        for label, _, _ in catalogues:
            rows[f"cold, new query ({label})"] = []
            rows[f"cold, repeated ({label})"] = []
        for repeat in range(args.repeats):
            text = query.format(n=repeat)  # never asked before: a cache miss
            rows["naive"].append(
                timed([sys.executable, "-c", NAIVE.format(space=args.model), str(catalogues[0][1]), text], env)
            )
            for label, index, options in catalogues:
                asked = f"{text} ({label})"
                command = [*msearch, asked, "--index", str(index), *options, "--json"]
                rows[f"cold, new query ({label})"].append(timed(command, env))
                rows[f"cold, repeated ({label})"].append(timed(command, env))

        from msearch.search.searcher import Searcher

        warm: dict[str, list[float]] = {}
        for label, index, options in catalogues:
            searcher = Searcher(index, query_cache=None, catalogue=options[1] if options else None)
            searcher.query(warm_query.format(n="warm-up"), top_k=10)
            warm[label] = []
            for repeat in range(args.repeats):
                started = time.perf_counter()
                searcher.query(warm_query.format(n=repeat), top_k=10)
                warm[label].append(time.perf_counter() - started)
            searcher.store.engine.dispose()
        load_after = os.getloadavg()

    medians = {name: statistics.median(runs) for name, runs in rows.items()}
    naive, cold = medians["naive"], medians["cold, new query (sqlite)"]
    print(
        f"model {args.model} (random full-size weights), {args.vectors} vectors searched with {search_index}; "
        f"median of {args.repeats}; cores {os.cpu_count()}"
    )
    print(
        f"load average (1/5/15 min) before {'/'.join(f'{v:.2f}' for v in load_before)}, "
        f"after {'/'.join(f'{v:.2f}' for v in load_after)}"
    )
    print(f"{'measurement':<36}{'seconds':>10}{'vs naive':>10}")
    for name, seconds in medians.items():
        print(f"{name:<36}{seconds:>10.2f}{seconds / naive:>10.2f}")
    for label, runs in warm.items():
        print(f"{f'warm, model held ({label})':<36}{statistics.median(runs):>10.3f}")
    print(f"{'first query, exporting':<36}{first:>10.2f}{first / naive:>10.2f}")
    met = cold < TARGET_SECONDS and cold / naive < TARGET_RATIO
    print(
        f"cold new query: {cold:.2f} s (target < {TARGET_SECONDS} s), {cold / naive:.2f} of naive "
        f"(target < {TARGET_RATIO}): {'ok' if met else 'BELOW TARGET'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
