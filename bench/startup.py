"""Start-up time of the commands that should answer at once: each row is the wall time of fresh
`python -m msearch ...` processes (median of --repeats), their CPU time (user + system: what the command
costs when it shares the machine with other work, where wall time measures the load), and whether the
process imported torch (a second run under `python -X importtime`, not timed).

Target: `msearch models` and an argument error under 1 s, without torch. The rows run in a scratch folder
with an empty index (a catalogue without spaces), so no weights are needed.

Target: an unchanged re-check of 1,000 tiles (`msearch index` again over an indexed archive) under 2 s,
without torch: it reads no pixels, opens no raster and loads no model. The archive is hard links (copies
where links cannot be made) to the EuroSAT sample tiles, cycled to --recheck-tiles distinct files, indexed
once with the tests' tiny models (not timed) before the timed re-checks.

    python bench/startup.py                  # 5 runs per row, re-check of 1,000 tiles
    python bench/startup.py --repeats 1 --recheck-tiles 100   # quick
    python bench/startup.py --repo ../main   # another checkout's msearch (before a change)
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
EUROSAT = REPO_ROOT.parent / "shared" / "data" / "eurosat-ms"
TARGET_SECONDS = 1.0
RECHECK_TARGET_SECONDS = 2.0
TINY_MODEL_ARGS = ["--model", "tiny-ms-clip", "--model", "rs-m-clip", "--band-order", "eurosat"]
HEAVY_MODULES = ("torch", "open_clip")
# (row, msearch arguments, whether the target applies); "{empty}" is an empty folder, "{index}" an empty index.
ROWS = [
    ("msearch --help", ["--help"], False),
    ("msearch models", ["models"], True),
    ("msearch info (empty index)", ["info", "--index", "{index}"], False),
    ("error: index /nonexistent", ["index", "/nonexistent"], True),
    ("error: index --band-order foo", ["index", "{empty}", "--band-order", "foo"], True),
    ("error: classify with one class", ["classify", "{empty}", "--classes", "forest"], True),
    ("error: query --lang xx", ["query", "river", "--lang", "xx"], True),
    ("error: query --html nodir/r.html", ["query", "river", "--html", "nodir/r.html"], True),
    ("error: eval nosuch.csv", ["eval", "nosuch.csv"], True),
    ("error: export nodir/tiles.parquet", ["export", "nodir/tiles.parquet"], True),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="the checkout whose msearch runs")
    parser.add_argument(
        "--recheck-tiles", type=int, default=1000, help="tiles of the re-checked archive (0: leave the row out)"
    )
    parser.add_argument("--data", type=Path, default=EUROSAT, help=f"EuroSAT tiles to link (default: {EUROSAT})")
    return parser.parse_args(argv)


def make_archive(data: Path, count: int, folder: Path) -> None:
    """`count` distinct files (so distinct tiles): hard links to the sample tiles, cycled."""
    originals = sorted(data.rglob("*.tif"))
    if not originals:
        raise SystemExit(f"no .tif files under {data}")
    for i in range(count):
        original = originals[i % len(originals)]
        target = folder / f"{i // 100:03d}" / f"{i:05d}_{original.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(original, target)
        except OSError:  # another file system
            shutil.copy2(original, target)


def tiny_model_env(env: dict, scratch: Path) -> dict:
    """The tests' tiny models in a scratch Hugging Face cache and card folder, offline."""
    from tests import tiny_models

    state = {
        "HF_HUB_CACHE": scratch / "hf-hub",
        "MSEARCH_CARDS": scratch / "cards",
        "MSEARCH_CACHE": scratch / "msearch-cache",
    }
    for folder in state.values():
        folder.mkdir(parents=True, exist_ok=True)
    tiny_models.tiny_msclip_card(state["MSEARCH_CARDS"])
    tiny_models.save_tiny_msclip(state["HF_HUB_CACHE"])
    tiny_models.save_tiny_rsmclip(state["HF_HUB_CACHE"])
    return {**env, **{name: str(path) for name, path in state.items()}}


def run_msearch(args: list[str], cwd: Path, env: dict, importtime: bool = False) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, stderr) of one fresh process."""
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "msearch", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stderr


def imports_heavy(stderr: str) -> list[str]:
    """The heavy modules named in `python -X importtime` output (its last column is the module)."""
    imported = {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}
    return [name for name in HEAVY_MODULES if name in imported]


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(options.repo.resolve()), "HF_HUB_OFFLINE": "1"}
    failures = 0
    with tempfile.TemporaryDirectory(prefix="msearch-startup-") as scratch:
        scratch = Path(scratch)
        (scratch / "empty").mkdir()
        env["MSEARCH_INDEX"] = str(scratch / "index")
        sys.path.insert(0, str(REPO_ROOT))
        from msearch.store import IndexStore

        IndexStore(scratch / "index", create=True)
        names = {"{empty}": str(scratch / "empty"), "{index}": str(scratch / "index")}
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"{'command':36} {'wall s':>7} {'min s':>6} {'cpu s':>6}  torch  target (wall)")
        for row, args, targeted in ROWS:
            args = [names.get(a, a) for a in args]
            runs = [run_msearch(args, scratch, env) for _ in range(options.repeats)]
            heavy = imports_heavy(run_msearch(args, scratch, env, importtime=True)[2])
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            verdict = ""
            if targeted:
                ok = wall < TARGET_SECONDS and not heavy
                failures += not ok
                verdict = f"< {TARGET_SECONDS:.0f} s, no torch: {'ok' if ok else 'MISSED'}"
            print(
                f"{row:36} {wall:7.2f} {min(r[0] for r in runs):6.2f} {cpu:6.2f}  {'yes' if heavy else 'no':5}  {verdict}"
            )
        if options.recheck_tiles:
            failures += recheck_row(options, scratch, env)
    return 1 if failures else 0


def recheck_row(options: argparse.Namespace, scratch: Path, env: dict) -> int:
    """The unchanged re-check row; 1 when it misses its target."""
    env = tiny_model_env(env, scratch / "tiny")
    archive, index = scratch / "archive", scratch / "recheck-index"
    make_archive(options.data, options.recheck_tiles, archive)
    args = ["index", str(archive), "--index", str(index), *TINY_MODEL_ARGS]
    first = run_msearch(args, scratch, env)
    if not index.exists():
        raise SystemExit(f"indexing the archive failed:\n{first[2][-3000:]}")
    runs = [run_msearch(args, scratch, env) for _ in range(options.repeats)]
    heavy = imports_heavy(run_msearch(args, scratch, env, importtime=True)[2])
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    ok = wall < RECHECK_TARGET_SECONDS and not heavy
    row = f"index: unchanged re-check, {options.recheck_tiles:,} tiles"
    print(
        f"{row:36} {wall:7.2f} {min(r[0] for r in runs):6.2f} {cpu:6.2f}  {'yes' if heavy else 'no':5}  "
        f"< {RECHECK_TARGET_SECONDS:.0f} s, no torch: {'ok' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
