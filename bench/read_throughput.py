"""Reading scenes cut into chips: chips/s per archive layout, window by window against scene by scene.

Builds one real-format Sentinel-2 L2A scene from the sample data (`tests/indexer/safe_products.py`: the 1068 px
Major TOM cell of NE Thailand mirrored out to --size px at 10 m, lossless JPEG 2000 in 1024 px tiles, each band
at its native resolution, SCL at 20 m) and copies of it in other layouts. For each layout (a row of LAYOUTS):
  - window by window: each chip read as its own window (`read_tile`), on the first --window-chips chips;
  - one reader: every chip of the scene read together (`read_scene`: each block decoded once), with the
    reader process's peak RSS;
  - N readers: N copies of the scene read at once by N reader processes (the pipeline gives each reader whole
    scenes), total chips over the wall time.
Then the target: `index_archive` of the JP2 scene with a tiny encoder against decoding each file of the scene
once with rasterio (every band and the SCL: what indexing reads), side by side (target: at most 1.5x).
The two alternate for --rounds rounds and the median ratio is the figure (a shared machine's speed drifts).
Every measurement runs in a fresh process, so that no GDAL block cache carries decoded blocks from one to
the next.

    python bench/read_throughput.py --quick
    python bench/read_throughput.py --remote [--quick]    # remote COGs over loopback HTTP (remote_http)
    python bench/read_throughput.py --size 5490 --readers 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import numpy as np
from index_throughput import peak_memory_mib  # VmHWM: a spawned process's own peak, not its parent's

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # msearch without installing, and tests.indexer.safe_products
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
TARGET_RATIO = 1.5
TINY_MODEL = "tiny-ms-clip"


# -- layouts: each a named row, built from the JP2 SAFE product -------------------------------------------


def jp2_safe(safe: Path, folder: Path) -> Path:
    return safe


def cog(safe: Path, folder: Path) -> Path:
    """One 12-band cloud-optimised GeoTIFF on the 10 m grid (DEFLATE, 512 px blocks, band descriptions)."""
    import rasterio
    from rasterio.shutil import copy as copy_raster

    from msearch.indexer.readers import discover, read_tile
    from msearch.indexer.tiles import ReadSettings

    (source,) = discover([safe], ReadSettings(chip_size=1 << 20)).sources  # the whole granule as one tile
    tile = read_tile(source, ReadSettings(chip_size=1 << 20))
    with rasterio.open(source.option("bands")[1].path) as b02:
        crs, transform = b02.crs, b02.transform
    stacked = folder / "stack.tif"
    count, height, width = tile.pixels.data.shape
    profile = dict(driver="GTiff", count=count, height=height, width=width, dtype="uint16", crs=crs)
    with rasterio.open(stacked, "w", transform=transform, **profile) as out:
        out.write(tile.pixels.data)
        for index, band in enumerate(tile.pixels.bands, start=1):
            out.set_band_description(index, band)
    target = folder / "scene_cog.tif"
    copy_raster(stacked, target, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512)
    stacked.unlink()
    return target


def per_band(safe: Path, folder: Path) -> Path:
    """One tiled GeoTIFF per band at its native resolution, as Major TOM ships them (DEFLATE, 512 px blocks)."""
    import rasterio

    product = folder / safe.name.removesuffix(".SAFE")
    product.mkdir()
    for jp2 in sorted(safe.rglob("*.jp2")):
        band = jp2.stem.split("_")[-2]
        with rasterio.open(jp2) as source:
            profile = dict(source.profile, driver="GTiff", compress="deflate", tiled=True)
            profile.update(blockxsize=512, blockysize=512)
            for option in ("QUALITY", "REVERSIBLE", "BLOCKXSIZE", "BLOCKYSIZE"):
                profile.pop(option, None)
            with rasterio.open(product / f"{band}.tif", "w", **profile) as out:
                out.write(source.read())
    return product


def tiled_per_band(shared_data: Path, folder: Path, size: int) -> Path:
    """A whole per-band L2A scene of `size` px at 10 m in 1024 px tiles (as real products are tiled), written
    fast (DEFLATE level 1): the Major TOM cell mirrored out to the size, every band at its native resolution."""
    import rasterio

    from tests.indexer.safe_products import MAJORTOM_N9999, NATIVE

    product = folder / MAJORTOM_N9999.rsplit("/", 1)[1]
    product.mkdir(parents=True)
    for band, resolution in NATIVE.items():
        with rasterio.open(shared_data / MAJORTOM_N9999 / f"{band}.tif") as source:
            data, profile = source.read(1), dict(source.profile)
        own = round(size * 10 / resolution)
        data = np.pad(data, [(0, max(0, own - data.shape[0])), (0, max(0, own - data.shape[1]))], "symmetric")
        profile.update(width=own, height=own, tiled=True, blockxsize=1024, blockysize=1024, compress="deflate")
        with rasterio.open(product / f"{band}.tif", "w", ZLEVEL=1, **profile) as out:
            out.write(data[:own, :own], 1)
    return product


@dataclass(frozen=True)
class Layout:
    name: str
    build: Callable[[Path, Path], Path]  # (the JP2 SAFE product, a folder of its own) -> the scene to read
    what: str


LAYOUTS: list[Layout] = [
    Layout("jp2-safe", jp2_safe, "SAFE L2A, lossless JPEG 2000 in 1024 px tiles"),
    Layout("cog", cog, "one 12-band COG on the 10 m grid, DEFLATE, 512 px blocks"),
    Layout("per-band", per_band, "one GeoTIFF per band at native resolution, DEFLATE, 512 px tiles"),
]


# -- measurements, each in a fresh process -------------------------------------------------------------------


def _sources(path: str):
    from msearch.indexer.readers import discover
    from msearch.indexer.tiles import ReadSettings

    return [s for s in discover([Path(path)], ReadSettings()).sources], ReadSettings()


def read_windows(path: str, limit: int) -> tuple[int, float]:
    from msearch.indexer.readers import read_tile

    sources, settings = _sources(path)
    started = time.perf_counter()
    for source in sources[:limit]:
        read_tile(source, settings)
    return min(limit, len(sources)), time.perf_counter() - started


def read_whole_scene(path: str) -> tuple[int, float, float]:
    """(chips read, seconds, this process's peak RSS in MiB)."""
    from msearch.indexer.readers import read_scene

    sources, settings = _sources(path)
    started = time.perf_counter()
    chips = 0
    for _, tile in read_scene(sources, settings):
        if isinstance(tile, Exception):
            raise tile
        chips += 1
    seconds = time.perf_counter() - started
    return chips, seconds, peak_memory_mib()[0]


def decode_once(paths: list[str]) -> float:
    import rasterio

    started = time.perf_counter()
    for path in paths:
        with rasterio.open(path) as raster:
            raster.read()
    return time.perf_counter() - started


def index_scene(path: str, index: str, workers: int | None, torch_threads: int | None) -> tuple[int, float]:
    """`index_archive` of the scene with the tiny encoder, loaded beforehand (not timed)."""
    import torch

    from msearch.indexer.pipeline import index_archive
    from msearch.models import load_encoder

    if torch_threads:
        torch.set_num_threads(torch_threads)
    encoder = load_encoder(TINY_MODEL)
    started = time.perf_counter()
    summary = index_archive([Path(path)], index=Path(index), encoders={TINY_MODEL: encoder}, workers=workers)
    seconds = time.perf_counter() - started
    if summary.failed or summary.skipped:
        raise RuntimeError(f"indexing failed: {summary.failed[:2]} {summary.skipped[:2]}")
    return summary.indexed, seconds


def _ready() -> None:
    import msearch.indexer.readers  # noqa: F401 - imported before the clock starts


def in_fresh_process(function, *args):
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def read_in_parallel(paths: list[str]) -> tuple[int, float]:
    """Each path by its own reader process, all at once: (chips, wall seconds once every reader is up)."""
    with ProcessPoolExecutor(len(paths), mp_context=get_context("spawn")) as pool:
        for ready in [pool.submit(_ready) for _ in paths]:  # every process up, msearch imported
            ready.result()
        started = time.perf_counter()
        results = list(pool.map(read_whole_scene, paths))
        return sum(r[0] for r in results), time.perf_counter() - started


# -- the run -------------------------------------------------------------------------------------------------


def _read_all(sources, settings) -> float:
    """Seconds to read every source."""
    from msearch.indexer.readers import read_tile

    started = time.perf_counter()
    for source in sources:
        read_tile(source, settings)
    return time.perf_counter() - started


def remote_http(data: Path, rounds: int) -> None:
    """The remote row (--remote): the 1068 px Major TOM scene as COGs (DEFLATE, 256 px blocks, its ten 10/20 m
    bands) behind a STAC item, read chip by chip over loopback HTTP by range requests against the same COGs
    read from the local disk: chips/s of both, and bytes fetched per chip (all 25 chips of the scene, then
    one chip alone on a fresh server, as a first chip of a scene costs). Loopback has no network latency:
    the figure is GDAL's request overhead, a ceiling for real object storage."""
    import json

    import pystac

    from msearch.indexer.readers import STAC_READER, discover
    from msearch.indexer.tiles import ReadSettings
    from tests.indexer.remote_servers import RangeServer, stac_item, write_cogs

    settings = ReadSettings()
    with tempfile.TemporaryDirectory() as folder:
        cogs = write_cogs(data, Path(folder) / "cogs", size=None, blocksize=256)
        scene_bytes = sum(path.stat().st_size for path in cogs.values())
        item = stac_item("S2B_48QUD_20200115_0_L2A", {b: f"./{b}.tif" for b in cogs}, None)
        (Path(folder) / "cogs" / "item.json").write_text(json.dumps(item))
        local_sources = discover([Path(folder) / "cogs"], settings).sources
        local_rates, remote_rates, per_chip, first_chip = [], [], [], []
        for _ in range(rounds):
            local_rates.append(len(local_sources) / _read_all(local_sources, settings))
            with RangeServer() as server:  # a new port: nothing in GDAL's per-process cache of remote blocks
                hrefs = {band: server.add_file(f"/cogs/{band}.tif", path) for band, path in cogs.items()}
                side = 1068
                remote = stac_item("S2B_48QUD_20200115_0_L2A", hrefs, (side, side))
                sources = STAC_READER.item_sources(server.url, "item", pystac.Item.from_dict(remote), settings)
                remote_rates.append(len(sources) / _read_all(sources, settings))
                per_chip.append(server.tif_bytes() / len(sources))
            with RangeServer() as server:
                hrefs = {band: server.add_file(f"/cogs/{band}.tif", path) for band, path in cogs.items()}
                remote = stac_item("S2B_48QUD_20200115_0_L2A", hrefs, (side, side))
                sources = STAC_READER.item_sources(server.url, "item", pystac.Item.from_dict(remote), settings)
                _read_all(sources[:1], settings)
                first_chip.append(server.tif_bytes())
    local, over_http = statistics.median(local_rates), statistics.median(remote_rates)
    print(
        f"remote-http: {len(sources)} chips of 224 px x 10 bands; local COG {local:.1f} chips/s, "
        f"loopback HTTP {over_http:.1f} chips/s ({over_http / local:.2f} of local); "
        f"{statistics.median(per_chip) / 1024:.0f} KiB fetched per chip reading the whole scene "
        f"(scene files {scene_bytes / 1024:.0f} KiB), {statistics.median(first_chip) / 1024:.0f} KiB "
        f"for a first chip alone ({statistics.median(first_chip) / scene_bytes:.1%} of the files); "
        f"median of {rounds} round(s)"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"the sample data (default: {DEFAULT_DATA})")
    parser.add_argument("--size", type=int, default=4480, help="scene size in 10 m pixels (default: 4480)")
    parser.add_argument("--readers", type=int, default=os.cpu_count() or 1, help="N of the N-reader column")
    parser.add_argument("--window-chips", type=int, default=10, help="chips read window by window, per layout")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of decode once / index")
    parser.add_argument(
        "--index-workers",
        type=int,
        default=None,
        help="reader processes of index_archive (default: msearch's, by the number of cores: 0 on 2 cores)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch threads of the indexing process (default: torch's; 1 avoids threads waiting on each other "
        "on a machine busy with other jobs)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a 2240 px scene, 2 readers, 3 chips window by window (minutes)"
    )
    parser.add_argument(
        "--memory-size",
        type=int,
        default=None,
        help="only measure one reader's peak RSS on a per-band scene of this many px in 1024 px tiles (10980: a "
        "whole L2A tile)",
    )
    parser.add_argument(
        "--remote", action="store_true", help="only the remote row: COGs over loopback HTTP against local files"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.readers, args.window_chips, args.rounds = 2240, 2, 3, 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.remote:
        remote_http(args.data, 1 if args.quick else 3)
        return 0
    with tempfile.TemporaryDirectory(prefix="msearch-read-bench-") as tmp:
        scratch = Path(tmp)
        for name, folder in (("HF_HUB_CACHE", "hf-hub"), ("MSEARCH_CARDS", "cards"), ("MSEARCH_CACHE", "cache")):
            os.environ[name] = str(scratch / folder)  # inherited by every measuring process
            (scratch / folder).mkdir()
        os.environ["HF_HUB_OFFLINE"] = "1"
        from tests import tiny_models
        from tests.indexer.safe_products import build_scene_safe

        if args.memory_size:
            scene = tiled_per_band(args.data, scratch / "memory", args.memory_size)
            chips, seconds, rss_mib = in_fresh_process(read_whole_scene, str(scene))
            print(
                f"one reader, {args.memory_size} px per-band scene in 1024 px tiles: {chips} chips in {seconds:.0f} s, "
                f"peak RSS {rss_mib:.0f} MiB (whole scene decoded: "
                f"{_decoded_mib(scene):.0f} MiB)"
            )
            return 0
        tiny_models.tiny_msclip_card(scratch / "cards")
        tiny_models.save_tiny_msclip(scratch / "hf-hub")

        started = time.perf_counter()
        safe = build_scene_safe(args.data, scratch / "jp2-safe", args.size, block=1024)
        print(f"built a {args.size} px JP2 SAFE scene in {time.perf_counter() - started:.0f} s")
        rows = []
        for layout in LAYOUTS:
            folder = scratch / layout.name
            folder.mkdir(exist_ok=True)
            scene = layout.build(safe, folder)
            copies = [scene]
            for n in range(1, args.readers):  # the same files under other names: N scenes for N readers
                copy = scratch / f"{layout.name}-copy{n}" / scene.name
                copy.parent.mkdir()
                copy.symlink_to(scene, target_is_directory=scene.is_dir())
                copies.append(copy)
            window_chips, window_s = in_fresh_process(read_windows, str(scene), args.window_chips)
            chips, scene_s, rss_mib = in_fresh_process(read_whole_scene, str(scene))
            parallel_chips, parallel_s = read_in_parallel([str(c) for c in copies])
            rows.append(
                dict(
                    layout=layout.name,
                    what=layout.what,
                    chips=chips,
                    window=window_chips / window_s,
                    window_chips=window_chips,
                    one=chips / scene_s,
                    n=parallel_chips / parallel_s,
                    rss=rss_mib,
                )
            )
            print(f"measured {layout.name}", flush=True)

        files = sorted(str(p) for p in safe.rglob("*.jp2"))
        load_before = os.getloadavg()
        rounds = []
        for round_ in range(args.rounds):
            decode_s = in_fresh_process(decode_once, files)
            indexed, index_s = in_fresh_process(
                index_scene, str(safe), str(scratch / f"index-{round_}"), args.index_workers, args.torch_threads
            )
            rounds.append((decode_s, index_s))
        load_after = os.getloadavg()
        pixels = sum(int(np.prod(_shape(f))) for f in files)

    print(f"\nscene: {args.size} x {args.size} px at 10 m, {rows[0]['chips']} chips of 224 px; cores {os.cpu_count()}")
    header = (
        f"{'layout':<10}{'window by window':>18}{'one reader':>13}{f'{args.readers} readers':>13}{'reader RSS':>12}"
    )
    print(header + "   (chips/s; peak RSS of the one reader)")
    for row in rows:
        print(
            f"{row['layout']:<10}{row['window']:>12.2f} ({row['window_chips']}){row['one']:>13.1f}{row['n']:>13.1f}"
            f"{row['rss']:>8.0f} MiB   {row['what']}"
        )
    print(
        f"\ndecode each file of the JP2 scene once (rasterio, {len(files)} files, {pixels / 1e6:.1f} Mpx) against "
        f"index_archive of the scene ({TINY_MODEL}, {indexed} chips, workers {'default' if args.index_workers is None else args.index_workers}, torch threads {args.torch_threads or 'default'}), {args.rounds} alternating rounds:"
    )
    for round_, (decode_s, index_s) in enumerate(rounds, start=1):
        print(f"round {round_}: decode once {decode_s:.1f} s, index {index_s:.1f} s, ratio {index_s / decode_s:.2f}")
    ratio = statistics.median(index_s / decode_s for decode_s, index_s in rounds)
    verdict = "ok" if ratio <= TARGET_RATIO else "ABOVE TARGET"
    print(f"median ratio index / decode once (target <= {TARGET_RATIO}): {ratio:.2f}  {verdict}")
    print(
        f"load average (1/5/15 min) before {'/'.join(f'{v:.2f}' for v in load_before)}, "
        f"after {'/'.join(f'{v:.2f}' for v in load_after)}"
    )
    return 0


def _decoded_mib(folder: Path) -> float:
    return sum(int(np.prod(_shape(str(p)))) * 2 for p in folder.glob("*.tif")) / 2**20


def _shape(path: str) -> tuple[int, int]:
    import rasterio

    with rasterio.open(path) as raster:
        return raster.height, raster.width


if __name__ == "__main__":
    sys.exit(main())
