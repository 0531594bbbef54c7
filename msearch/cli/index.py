"""`msearch index`: embed an archive (local folders, URLs, a STAC search), locally or on Ray."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from msearch.cli.common import (
    CATALOGUE_OPTION,
    INDEX_OPTION,
    band_order_option,
    check_index_folder,
    console,
    err_console,
    fail,
    known_models,
    plural,
    require_paths,
    shown_path,
)


def index(
    # str, not Path: a URL's '//' would not survive Path.
    paths: Optional[List[str]] = typer.Argument(
        None, help="Folders or files of tiles, searched recursively, or URLs of STAC items, collections, catalogues."
    ),
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
    model: Optional[List[str]] = typer.Option(
        None, "--model", "-m", help="Encoder card (repeatable). Default: llama3-ms-clip-base and rs-m-clip."
    ),
    checkpoint: Optional[Path] = typer.Option(None, exists=True, help="Local weights for the (single) --model."),
    batch_size: Optional[int] = typer.Option(
        None, min=1, help="Tiles per encoder forward pass. Default: 256 on CUDA, 32 on the CPU."
    ),
    device: str = typer.Option(
        "auto",
        help="Where the encoders run: auto (the first CUDA device torch sees, else the CPU), cpu, cuda or cuda:N.",
    ),
    precision: Optional[str] = typer.Option(
        None,
        help="fp32 or bf16 (autocast; refused for a model whose bf16 vectors stray from fp32). "
        "Default: bf16 on CUDA, fp32 on the CPU and with --ray (whose actors take this precision).",
    ),
    workers: Optional[int] = typer.Option(
        None,
        min=0,
        help="Reader processes (0: read in the main process). Default: 0 on 2 cores or fewer, else cores - 2, at most 4.",
    ),
    band_order: Optional[str] = typer.Option(
        None, help="Band order of multiband files without band descriptions: l2a, l1c, eurosat or B01,B02,..."
    ),
    offset: Optional[float] = typer.Option(
        None, help="Force the radiometric offset the values carry (e.g. 1000), overriding metadata."
    ),
    chip_size: int = typer.Option(
        224, min=16, help="Scenes larger than a chip are cut into chips of this many 10 m pixels."
    ),
    stride: Optional[int] = typer.Option(None, min=1, help="Chip stride in pixels (default: the chip size)."),
    max_nodata: float = typer.Option(0.5, min=0.0, max=1.0, help="Skip chips with a larger nodata fraction."),
    prune: bool = typer.Option(
        False, "--prune", help="Drop catalogued tiles, and recorded problems, whose files at or beneath PATHS are gone."
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero if any tile failed or was skipped."),
    rebuild_ann: bool = typer.Option(
        False,
        "--rebuild-ann",
        help="Retrain and retune the search index of each space (after indexing PATHS, if given).",
    ),
    target_recall: Optional[float] = typer.Option(
        None,
        min=0.0,
        max=1.0,
        help="Recall@100 against exact search that --rebuild-ann tunes for (default: the space's, 0.95).",
    ),
    ray: Optional[str] = typer.Option(
        None,
        "--ray",
        envvar="MSEARCH_RAY_ADDRESS",
        help="Read and encode on a Ray cluster: local (start one on this machine), auto (the cluster this "
        "machine belongs to) or HOST:PORT. Needs msearch[ray].",
    ),
    ray_actors: Optional[int] = typer.Option(
        None, "--ray-actors", min=1, help="Encoder actors of a --ray run (default: one per GPU, else half the CPUs)."
    ),
    stac_search: Optional[str] = typer.Option(
        None, help="Index the items a STAC API finds (its URL), read in place from their remote assets."
    ),
    collection: Optional[str] = typer.Option(None, help="The collection --stac-search searches (e.g. sentinel-2-l2a)."),
    bbox: Optional[str] = typer.Option(None, help="--stac-search area: minlon,minlat,maxlon,maxlat."),
    datetime: Optional[str] = typer.Option(None, help="--stac-search time range, e.g. 2024-06-01/2024-08-31."),
    max_cloud: Optional[float] = typer.Option(
        None, min=0.0, max=100.0, help="--stac-search: items of at most this cloud cover (eo:cloud_cover, percent)."
    ),
    limit: Optional[int] = typer.Option(None, min=1, help="--stac-search: at most this many items."),
):
    """Embed an archive: incremental (only new or changed tiles), resumable and crash-safe."""
    search = _stac_search(stac_search, collection, bbox, datetime, max_cloud, limit)
    if not paths and not search and not rebuild_ann:
        fail(
            "give the folders or files to index, or --stac-search URL --collection NAME "
            "(or --rebuild-ann alone to retrain the search indexes)"
        )
    if target_recall is not None and not rebuild_ann:
        fail("--target-recall applies to --rebuild-ann")
    require_paths(paths, "to index")
    check_index_folder(index)
    known_models(model)
    if checkpoint and len(model or []) != 1:
        fail("--checkpoint names the weights of one model: give exactly one --model with it")
    order = band_order_option(band_order)
    _device_and_precision(device, precision)

    from msearch.indexer.pipeline import NothingToIndex, RunInterrupted, rebuild_indexes
    from msearch.indexer.tiles import ReadSettings
    from msearch.models import CardError, ModelNotAvailableError
    from msearch.store import SpaceMismatchError

    if ray_actors is not None and not ray:
        fail("--ray-actors applies to --ray")
    if ray:
        _check_ray_available()
    try:
        settings = ReadSettings(
            band_order=order,
            offset=offset,
            chip_size=chip_size,
            stride=stride,
            max_nodata=max_nodata,
        )
    except ValueError as exc:
        fail(str(exc))
    # ConnectionError: a --ray address with no cluster behind it
    from msearch.store.catalogue import CatalogueError, CatalogueUnavailableError

    errors = (
        FileNotFoundError,
        CardError,
        ModelNotAvailableError,
        SpaceMismatchError,
        ValueError,
        ConnectionError,
        CatalogueError,
    )
    failed = False
    if paths or search:
        try:
            summary = _index_with_progress(
                paths or [],
                stac_search=search,
                index=index,
                models=model,
                checkpoint=checkpoint,
                settings=settings,
                batch_size=batch_size,
                workers=workers,
                prune=prune,
                ray_address=ray,
                ray_actors=ray_actors,
                device=device,
                precision=precision,
                catalogue=catalogue,
            )
        except CatalogueUnavailableError as exc:
            fail(str(exc), 1)  # not a usage error: the same command later resumes
        except errors as exc:
            fail(str(exc))
        except NothingToIndex as exc:
            fail(str(exc), code=1)
        except RunInterrupted as exc:
            err_console.print(str(exc))
            raise typer.Exit(130) from None
        _print_summary(summary)
        failed = not summary.ok or (strict and bool(summary.failed or summary.skipped))
    if rebuild_ann:
        settings = {} if target_recall is None else {"target_recall": target_recall}
        checkpoints = {model[0]: checkpoint} if checkpoint and model else None
        try:
            with err_console.status("retraining the search indexes"):
                notes = rebuild_indexes(index, spaces=model, checkpoints=checkpoints, catalogue=catalogue, **settings)
        except errors as exc:
            fail(str(exc))
        for note in notes:
            console.print(note)
    if failed:
        raise typer.Exit(1)


def _check_ray_available() -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.data") is None:
        fail("--ray needs Ray Data on this machine: pip install 'msearch[ray]' (and the same on every node)")


def _stac_search(url, collection, bbox, datetime, max_cloud, limit):
    """The STAC search the options describe, or None without --stac-search; usage errors exit 2."""
    if not url:
        given = [
            name
            for name, value in (
                ("--collection", collection),
                ("--bbox", bbox),
                ("--datetime", datetime),
                ("--max-cloud", max_cloud),
                ("--limit", limit),
            )
            if value is not None
        ]
        if given:
            fail(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to --stac-search URL")
        return None
    if not collection:
        fail("--stac-search needs --collection (e.g. --collection sentinel-2-l2a)")
    from msearch.indexer.stac_search import StacSearch, parse_bbox

    try:
        area = parse_bbox(bbox) if bbox else None
    except ValueError as exc:
        fail(str(exc))
    return StacSearch(url, collection, area, datetime, max_cloud, limit)


def _device_and_precision(device: str, precision: Optional[str]) -> None:
    """The names only (torch-free): whether the device is there is known once torch is imported, which
    index_archive does first, before anything is loaded or written."""
    from msearch.models.device import DeviceError, parse_device, parse_precision

    try:
        parse_device(device)
        if precision is not None:
            parse_precision(precision)
    except DeviceError as exc:
        fail(str(exc))


def _index_with_progress(paths, **options):
    from msearch.indexer.pipeline import index_archive

    columns = (
        TextColumn("[bold]indexing"),
        BarColumn(),
        TextColumn("{task.fields[counts]}"),
        TextColumn("{task.fields[rate]} tiles/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    # Drawn once planning is done, with the total known: a run that fails before (a path that does not
    # exist, nothing to index) ends with its message alone.
    bar = Progress(*columns, console=err_console, transient=False)
    task = bar.add_task("index", total=None, rate="-", counts="")
    first: list[tuple[float, int]] = []  # (time, tiles committed) at the first committed batch

    def report(state) -> None:
        import time

        if not state.total:
            return  # nothing to read: an unchanged re-check ends with its summary alone
        if not bar.live.is_started:
            bar.start()
        # The bar moves half a tile per tile read and half per tile encoded and committed. The rate counts
        # committed tiles from the first committed batch: before it lie the model load and the first read.
        now = time.perf_counter()
        if state.committed:
            first[:] = first or [(now, state.committed)]
        since, done_then = first[0] if first else (now, 0)
        rate = f"{(state.committed - done_then) / (now - since):.1f}" if state.committed > done_then else "-"
        counts = f"read {state.read}/{state.total}, committed {state.committed}/{state.total}"
        bar.update(task, completed=(state.read + state.committed) / 2, total=state.total, rate=rate, counts=counts)

    try:
        return index_archive(paths, progress=report, **options)
    finally:
        if bar.live.is_started:
            bar.stop()


def _print_summary(summary) -> None:
    line = (
        f"indexed {summary.indexed}, unchanged {summary.unchanged}, skipped {len(summary.skipped)}, "
        f"failed {len(summary.failed)}, removed {summary.removed} in {summary.seconds:.1f} s "
        f"(spaces: {', '.join(summary.spaces)})"
    )
    console.print(line)
    if summary.stage_seconds:
        stages = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in summary.stage_seconds.items())
        console.print(f"stages: {stages} (read and encode summed over the cluster's tasks and actors)")
    if summary.precisions:
        precisions = ", ".join(f"{space} {p}" for space, p in summary.precisions.items())
        console.print(f"encoders ran on {summary.device} ({precisions})")
    if summary.missing:
        console.print(
            f"{plural(summary.missing, 'catalogued tile')} {'is' if summary.missing == 1 else 'are'} gone from disk: "
            "run with --prune to drop them"
        )
    if summary.ignored:
        named = ", ".join(shown_path(path) for path in summary.ignored_files)
        more = ", ..." if summary.ignored > len(summary.ignored_files) else ""
        console.print(
            f"{plural(summary.ignored, 'file', 'is not a raster', 'are not rasters')} of a known layout, "
            f"ignored: {named}{more}"
        )
    if summary.duplicates:
        console.print(
            f"{plural(summary.duplicates, 'tile')} reached a second time (through another path or a symbolic link): "
            "indexed once"
        )
    if summary.repaired:
        console.print(
            f"{plural(summary.repaired, 'duplicate catalogue row')} of the same file under another path: dropped"
        )
    for space, n in summary.unfed.items():
        others = [s for s in summary.spaces if s != space]
        console.print(
            f"{plural(n, 'tile')} {'lacks' if n == 1 else 'lack'} the bands {space} needs (RGB-only files): "
            f"indexed into {', '.join(others)} only"
        )
    for folder, why in summary.unreadable_folders:
        console.print(f"could not list {shown_path(folder)}: {why}: not searched")
    for note in summary.notes:
        console.print(note)
    for title, items in (("failed", summary.failed), ("skipped", summary.skipped)):
        if items:
            table = Table(title=f"{len(items)} {title}", title_justify="left")
            table.add_column("tile", overflow="fold")  # the whole path: S2RGB/x.tif and S2L1C/x.tif differ
            table.add_column("reason")
            for location, reason in items[:50]:
                table.add_row(shown_path(location), reason)
            if len(items) > 50:
                table.add_row(f"... and {len(items) - 50} more", "see `msearch info --problems`")
            console.print(table)
