"""Indexing throughput against the bare encoder: how much of the encoder's speed `index_archive` keeps.

In one run, on the same tiles, with the same loaded encoder and batch size, on --device:
  1. `index_archive` into a fresh index in a temporary folder (reading, the input recipe on the device,
     encoding in --precision, catalogue writes and the FAISS save: everything a user waits for once the
     model is loaded);
  2. `encoder.encode_images` alone, in fp32 and in bf16, on batches prepared beforehand from the same tiles
     and already on the device.
The ratio of the pipeline's rate to the bare encoder's in the same precision is the pipeline's efficiency
(target >= 0.9: reading and writing should hide behind the encoder). The measurements alternate for
--rounds rounds, each round's ratio taken from back-to-back runs, so that a shared machine's drifting speed
does not favour either; the median ratio is the figure. Peak memory is the main process's VmHWM and the
largest reader process's max RSS.

    python bench/index_throughput.py --random-full-size --limit 64
    python bench/index_throughput.py --tiny --limit 64 --ray local     # on Ray against the local pipeline
    python bench/index_throughput.py --random-full-size --device cuda --limit 2048 --workers 8
    python bench/index_throughput.py --tiny --data ../shared/data/terramesh-examples/S2L2A --band-order l2a
    python bench/index_throughput.py --random-full-size --jp2-scene 1120      # a JPEG 2000 SAFE scene, 25 chips
    python bench/index_throughput.py --random-full-size --device cuda --jp2-scene 10980 --workers 8

--jp2-scene SIZE builds a real-format L2A SAFE product of SIZE x SIZE px at 10 m (lossless JPEG 2000 in 1024 px
tiles, each band at its native resolution: `tests/indexer/safe_products.build_scene_safe`) and indexes it cut
into 224 px chips, as `msearch index` does a scene: every block decoded once, the 20 m bands resampled on
the encoder's device. Its bare-encoder batches are read the same way, outside the timings.

--random-full-size measures the real Llama3-MS-CLIP ViT-B/16 cost without downloadable weights: a randomly
initialised 10-band model in the release's checkpoint layout, loaded through the normal strict loader.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "eurosat-ms"
FULL_SIZE_MODEL = "llama3-ms-clip-base"
TINY_MODEL = "tiny-ms-clip"
TARGET_RATIO = 0.9
PRECISIONS = ("fp32", "bf16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"folder of tiles (default: {DEFAULT_DATA})")
    parser.add_argument(
        "--band-order",
        default="eurosat",
        help="band order of files without band descriptions (default: eurosat, the default data's)",
    )
    parser.add_argument(
        "--model", default=None, help=f"encoder card (default: {FULL_SIZE_MODEL}; {TINY_MODEL} with --tiny)"
    )
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--tiny", action="store_true", help="the tests' tiny models, built into a temporary cache")
    weights.add_argument(
        "--random-full-size",
        action="store_true",
        help=f"a randomly initialised full-size {FULL_SIZE_MODEL} checkpoint (ViT-B/16, 10 bands)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (as `msearch index --device`)")
    parser.add_argument(
        "--precision", default=None, help="of the pipeline run: fp32 or bf16 (default: bf16 on CUDA, fp32 on the CPU)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: the device's, as `msearch index` (256 CUDA, 32 CPU)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="reader processes of index_archive (default: msearch's, by the number of cores)",
    )
    parser.add_argument("--limit", type=int, default=None, help="index only the first N tiles")
    parser.add_argument(
        "--jp2-scene",
        type=int,
        metavar="SIZE",
        default=None,
        help="instead of --data: a JPEG 2000 SAFE scene of SIZE px at 10 m, built here, cut into 224 px chips "
        "(10980: a whole Sentinel-2 granule, 2401 chips)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternate the two measurements this many times (a shared machine's speed drifts)",
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        default=None,
        help="instead: index_archive on a Ray cluster (local, auto or HOST:PORT) against the local pipeline, "
        "both on the same tiles; the cluster is joined or started once, outside the timings",
    )
    parser.add_argument("--ray-actors", type=int, default=None, help="encoder actors of the Ray runs")
    args = parser.parse_args(argv)
    if args.jp2_scene and args.limit:
        parser.error("--limit takes the first tiles of --data; size a --jp2-scene by its SIZE instead")
    if args.random_full_size and args.model not in (None, FULL_SIZE_MODEL):
        parser.error(f"--random-full-size builds a {FULL_SIZE_MODEL} checkpoint; it cannot stand in for {args.model}")
    return args


def isolate_model_state(scratch: Path) -> None:
    """Offline, with caches and cards in the scratch folder: set before msearch or huggingface_hub is
    imported, since huggingface_hub reads these variables at import."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_CACHE"] = str(scratch / "hf-hub")
    os.environ["MSEARCH_CARDS"] = str(scratch / "cards")
    os.environ["MSEARCH_CACHE"] = str(scratch / "msearch-cache")


def model_and_checkpoint(args: argparse.Namespace, scratch: Path) -> tuple[str, Path | None]:
    if args.tiny:
        from tests import tiny_models

        for folder in (Path(os.environ["HF_HUB_CACHE"]), Path(os.environ["MSEARCH_CARDS"])):
            folder.mkdir(parents=True, exist_ok=True)
        tiny_models.tiny_msclip_card(Path(os.environ["MSEARCH_CARDS"]))
        tiny_models.save_tiny_msclip(Path(os.environ["HF_HUB_CACHE"]))
        tiny_models.save_tiny_rsmclip(Path(os.environ["HF_HUB_CACHE"]))
        return args.model or TINY_MODEL, None
    if args.random_full_size:
        import open_clip
        import torch

        from tests.tiny_models import build_msclip, msclip_release_state_dict

        checkpoint = scratch / "random-llama3-ms-clip-base.pt"
        torch.save(msclip_release_state_dict(build_msclip(open_clip.get_model_config("ViT-B-16"))), checkpoint)
        return FULL_SIZE_MODEL, checkpoint
    return args.model or FULL_SIZE_MODEL, None


def link_tiles(data: Path, settings, limit: int | None, folder: Path) -> list:
    """Symlink the files of the first `limit` tiles under `folder` (same relative paths), and return the
    tiles discovered there: both measurements run on exactly these."""
    from msearch.indexer.readers import discover

    for source in discover([data], settings).sources[:limit]:
        for path in source.files:
            link = folder / path.relative_to(source.root)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
    return discover([folder], settings).sources


def read_pixels(sources: list, settings) -> list:
    """Every tile's pixels as indexing reads them: the chips of a scene together, each block decoded once."""
    from msearch.indexer.readers import read_scene

    units: dict[object, list] = {}
    for source in sources:
        units.setdefault(source.scene if source.window else source.key, []).append(source)
    pixels = []
    for unit in units.values():
        for _, tile in read_scene(unit, settings):
            if isinstance(tile, Exception):
                raise tile
            pixels.append(tile.pixels)
    return pixels


def peak_memory_mib() -> tuple[float, float]:
    """(this process's peak RSS from VmHWM, the largest waited-for child's peak RSS), in MiB."""
    status = Path("/proc/self/status").read_text()
    hwm_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return hwm_kib / 1024, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # ru_maxrss: KiB on Linux


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="msearch-bench-") as tmp:
        scratch = Path(tmp)
        if args.tiny or args.random_full_size:
            isolate_model_state(scratch)
        sys.path.insert(0, str(REPO_ROOT))  # msearch without installing, and tests.tiny_models
        import torch

        from msearch.indexer.pipeline import index_archive
        from msearch.indexer.reading import default_workers
        from msearch.indexer.tiles import ReadSettings
        from msearch.models import load_encoder
        from msearch.models.device import default_batch_size, describe_device, resolve_device
        from msearch.schema.bands import parse_band_order

        device = resolve_device(args.device)  # before building anything: cuda where there is none is an error
        batch_size = args.batch_size = args.batch_size or default_batch_size(device)
        model, checkpoint = model_and_checkpoint(args, scratch)
        if args.jp2_scene:
            from msearch.indexer.readers import discover
            from tests.indexer.safe_products import build_scene_safe

            tiles_dir = scratch / "scene"  # the product is built here: both measurements read it
            args.data = build_scene_safe(DEFAULT_DATA.parent, tiles_dir, args.jp2_scene, block=1024)
            settings = ReadSettings()  # a SAFE product names its bands
            sources = discover([tiles_dir], settings).sources
        else:
            settings = ReadSettings(band_order=parse_band_order(args.band_order) if args.band_order else None)
            tiles_dir = scratch / "tiles"
            sources = link_tiles(args.data.resolve(), settings, args.limit, tiles_dir)
        if not sources:
            print(f"no tiles under {args.data}", file=sys.stderr)
            return 2
        encoder = load_encoder(model, checkpoint, device, args.precision)  # bf16 is checked against fp32 here
        pixels = read_pixels(sources, settings)
        batches = [encoder.prepare(pixels[i : i + batch_size]).to(device) for i in range(0, len(pixels), batch_size)]
        del pixels
        for precision in PRECISIONS:  # first-call setup (allocator, kernels) is in no timing
            encoder.encode_images(batches[0][:2], precision)
        if args.ray:
            return compare_with_ray(args, scratch, tiles_dir, len(sources), model, encoder, checkpoint, settings)
        load_before = os.getloadavg()
        pipeline_times, encoder_times = [], {precision: [] for precision in PRECISIONS}
        for round_ in range(args.rounds):
            started = time.perf_counter()
            summary = index_archive(
                [tiles_dir],
                index=scratch / f"index-{round_}",
                encoders={model: encoder},
                settings=settings,
                batch_size=batch_size,
                workers=args.workers,
            )
            pipeline_times.append(time.perf_counter() - started)
            if summary.indexed != len(sources):
                print(
                    f"index_archive indexed {summary.indexed} of {len(sources)} tiles "
                    f"(failed: {summary.failed[:3]}, skipped: {summary.skipped[:3]})",
                    file=sys.stderr,
                )
                return 1
            for precision in PRECISIONS:
                started = time.perf_counter()
                for batch in batches:
                    encoder.encode_images(batch, precision)  # waits for the device: the vectors come back
                encoder_times[precision].append(time.perf_counter() - started)
        load_after = os.getloadavg()

    tiles = len(sources)
    same = encoder_times[encoder.precision]
    ratios = [encoder_s / pipeline_s for pipeline_s, encoder_s in zip(pipeline_times, same)]
    ratio = statistics.median(ratios)
    main_mib, child_mib = peak_memory_mib()
    weights = "random full-size" if args.random_full_size else ("tiny" if args.tiny else "released")
    what = (
        f"a {args.jp2_scene} px JPEG 2000 SAFE scene in {tiles} chips"
        if args.jp2_scene
        else f"{tiles} tiles from {args.data}"
    )
    print(
        f"model {model} ({weights} weights), {what}, device {describe_device(device)}, "
        f"pipeline in {encoder.precision}, batch {batch_size}, "
        f"workers {default_workers() if args.workers is None else args.workers}, torch threads {torch.get_num_threads()}, cores {os.cpu_count()}, "
        f"{args.rounds} alternating rounds"
    )
    print(
        f"load average (1/5/15 min) before {'/'.join(f'{v:.2f}' for v in load_before)}, "
        f"after {'/'.join(f'{v:.2f}' for v in load_after)}"
    )
    print(
        f"{'round':<8}{'index_archive img/s':>22}{'encoder fp32 img/s':>22}{'encoder bf16 img/s':>22}"
        f"{'ratio (' + encoder.precision + ')':>14}"
    )
    for round_, r in enumerate(ratios):
        rates = [tiles / encoder_times[precision][round_] for precision in PRECISIONS]
        print(f"{round_ + 1:<8}{tiles / pipeline_times[round_]:>22.2f}{rates[0]:>22.2f}{rates[1]:>22.2f}{r:>14.3f}")
    medians = [statistics.median(tiles / t for t in times) for times in (pipeline_times, *encoder_times.values())]
    print(f"{'median':<8}{medians[0]:>22.2f}{medians[1]:>22.2f}{medians[2]:>22.2f}{ratio:>14.3f}")
    print(f"{'median ratio (target >= 0.9)':<48}{ratio:>16.3f}  {'ok' if ratio >= TARGET_RATIO else 'BELOW TARGET'}")
    print(f"{'peak RSS, main process':<28}{main_mib:>23.0f} MiB")
    print(f"{'peak RSS, largest child':<28}{child_mib:>23.0f} MiB")
    return 0


def compare_with_ray(args, scratch: Path, tiles_dir: Path, tiles: int, model, encoder, checkpoint, settings) -> int:
    """Alternating rounds of the local pipeline and the Ray pipeline into fresh indexes; a Ray round counts
    from the plan to the last merged shard, so it includes starting the encoder actors and their model loads."""
    from msearch.indexer import distributed
    from msearch.indexer.pipeline import index_archive

    # Workers of a cluster started here import this checkout's msearch, as this process does.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO_ROOT), os.environ.get("PYTHONPATH"))))
    started = time.perf_counter()
    started_cluster = distributed.connect(args.ray)
    connect_s = time.perf_counter() - started
    import ray

    resources = ray.cluster_resources()
    times: dict[str, list[float]] = {"local": [], "ray": []}
    stages = []
    load_before = os.getloadavg()
    try:
        for round_ in range(args.rounds):
            for kind in ("local", "ray"):
                started = time.perf_counter()
                summary = index_archive(
                    [tiles_dir],
                    index=scratch / f"index-{kind}-{round_}",
                    encoders={model: encoder},
                    checkpoint=checkpoint,
                    settings=settings,
                    batch_size=args.batch_size,
                    workers=args.workers,
                    ray_address=args.ray if kind == "ray" else None,
                    ray_actors=args.ray_actors,
                )
                times[kind].append(time.perf_counter() - started)
                if summary.indexed != tiles:
                    print(f"{kind}: indexed {summary.indexed} of {tiles} tiles", file=sys.stderr)
                    return 1
                if kind == "ray":
                    stages.append(summary.stage_seconds)
    finally:
        if started_cluster:
            ray.shutdown()
    load_after = os.getloadavg()
    ratios = [local_s / ray_s for local_s, ray_s in zip(times["local"], times["ray"])]
    print(
        f"model {model}, {tiles} tiles from {args.data}, batch {args.batch_size}, cores {os.cpu_count()}; "
        f"Ray cluster {args.ray}: {resources.get('CPU', 0):.0f} CPUs, {resources.get('GPU', 0):.0f} GPUs, "
        f"{'started' if started_cluster else 'joined'} in {connect_s:.1f} s (not in the timings)"
    )
    print(
        f"load average (1/5/15 min) before {'/'.join(f'{v:.2f}' for v in load_before)}, "
        f"after {'/'.join(f'{v:.2f}' for v in load_after)}"
    )
    print(f"{'round':<8}{'local tiles/s':>16}{'ray tiles/s':>16}{'ray / local':>14}   ray stages (s)")
    for round_, (local_s, ray_s, ratio, stage) in enumerate(zip(times["local"], times["ray"], ratios, stages), 1):
        stage_text = ", ".join(f"{k} {v:.1f}" for k, v in stage.items())
        print(f"{round_:<8}{tiles / local_s:>16.2f}{tiles / ray_s:>16.2f}{ratio:>14.3f}   {stage_text}")
    print(f"{'median ray / local':<40}{statistics.median(ratios):>14.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
