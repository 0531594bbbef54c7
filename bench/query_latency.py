"""End-to-end query latency: a cold `msearch query` against the naive path, side by side in one run.

Every measurement is the wall time of a fresh Python process answering one English query over the same
index (a random full-size Llama3-MS-CLIP-Base checkpoint in the release layout, served from a scratch
Hugging Face cache; N synthetic 512-d vectors in its space), median of --repeats runs:

  naive          import everything (open_clip, transformers), build the whole model, load the whole
                 checkpoint, encode, search: what a query cost before the cold path existed
  cold, new      `msearch query "<text never asked>" --json`: the text tower only, lazy imports
  cold, repeat   `msearch query` of a text asked before: answered from the query-embedding cache
and, in one process that already holds the text tower, `warm`: a new query's encode + search.

"Cold" is a new process; the checkpoint's pages may sit in the OS page cache from the previous runs,
as they do for a user who queries more than once a day.

    python bench/query_latency.py                 # 100k vectors, 3 repeats
    python bench/query_latency.py --vectors 1000000
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

MODEL = "llama3-ms-clip-base"
TARGET_SECONDS = 2.5
TARGET_RATIO = 0.5
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
    parser.add_argument("--vectors", type=int, default=100_000, help="vectors in the index's space")
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args(argv)


def build_model(scratch: Path) -> str:
    """A random full-size checkpoint as the hub's cached file; returns its sha256 (the blob name)."""
    import open_clip
    import torch

    from msearch.models import get_card
    from tests.tiny_models import build_msclip, msclip_release_state_dict, put_in_hf_cache

    card = get_card(MODEL)
    checkpoint = scratch / card.weights["file"]
    torch.save(msclip_release_state_dict(build_msclip(open_clip.get_model_config("ViT-B-16"))), checkpoint)
    snapshot = put_in_hf_cache(Path(os.environ["HF_HUB_CACHE"]), card.weights["hub"], {card.weights["file"]: checkpoint})
    checkpoint.unlink()
    return Path(os.path.realpath(snapshot / card.weights["file"])).name


def build_index(index: Path, sha256: str, n: int) -> str:
    """N tiles with synthetic clustered unit vectors in the model's space, searched as msearch would."""
    from msearch.indexer.store import IndexStore
    from msearch.indexer.synthetic import ClusteredUnitVectors
    from msearch.schema import catalog

    store = IndexStore(index, create=True)
    store.ensure_space(MODEL, MODEL, sha256, 512)
    generator = ClusteredUnitVectors(512, n_clusters=200, seed=0)
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        vectors = generator.rows(start, stop)
        with store.engine.begin() as conn:
            conn.execute(catalog.tiles.insert(), [
                {"id": i + 1, "root": "/archive", "key": f"t{i}.tif", "path": f"t{i}.tif", "reader": "geotiff",
                 "stat_signature": "s", "centre_lon": 0.0, "centre_lat": 0.0} for i in range(start, stop)])
            conn.execute(catalog.vectors.insert(), [
                {"tile_id": i + 1, "space": MODEL, "vector": vectors[i - start].astype("<f4").tobytes()}
                for i in range(start, stop)])
    view = store.open_space(MODEL)
    info = store.rebuild_ann(view)
    store.save_space(view)
    return info.describe()


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
        sha256 = build_model(scratch)
        index = scratch / "index"
        search_index = build_index(index, sha256, args.vectors)
        msearch = [sys.executable, "-m", "msearch", "query"]
        rows: dict[str, list[float]] = {"naive": [], "cold, new query": [], "cold, repeated query": []}
        load_before = os.getloadavg()
        for repeat in range(args.repeats):
            text = f"fields beside a river, take {repeat}"  # never asked before: a cache miss
            rows["naive"].append(timed([sys.executable, "-c", NAIVE.format(space=MODEL), str(index), text], env))
            rows["cold, new query"].append(timed([*msearch, text, "--index", str(index), "--json"], env))
            rows["cold, repeated query"].append(timed([*msearch, text, "--index", str(index), "--json"], env))

        from msearch.search.searcher import Searcher

        searcher = Searcher(index, query_cache=None)
        searcher.query("warm up", top_k=10)
        warm = []
        for repeat in range(args.repeats):
            started = time.perf_counter()
            searcher.query(f"a harbour with ships, take {repeat}", top_k=10)
            warm.append(time.perf_counter() - started)
        load_after = os.getloadavg()

    medians = {name: statistics.median(runs) for name, runs in rows.items()}
    naive, cold = medians["naive"], medians["cold, new query"]
    print(f"model {MODEL} (random full-size weights), {args.vectors} vectors searched with {search_index}; "
          f"median of {args.repeats}; cores {os.cpu_count()}")
    print(f"load average (1/5/15 min) before {'/'.join(f'{v:.2f}' for v in load_before)}, "
          f"after {'/'.join(f'{v:.2f}' for v in load_after)}")
    print(f"{'measurement':<26}{'seconds':>10}{'vs naive':>10}")
    for name, seconds in medians.items():
        print(f"{name:<26}{seconds:>10.2f}{seconds / naive:>10.2f}")
    print(f"{'warm (model held)':<26}{statistics.median(warm):>10.3f}")
    met = cold < TARGET_SECONDS and cold / naive < TARGET_RATIO
    print(f"cold new query: {cold:.2f} s (target < {TARGET_SECONDS} s), {cold / naive:.2f} of naive "
          f"(target < {TARGET_RATIO}): {'ok' if met else 'BELOW TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
