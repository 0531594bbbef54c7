"""The `msearch` command: thin typer commands that call the library and format its answers.

Each command checks its arguments and paths before importing what does the work (torch, open_clip, FAISS,
rasterio: seconds), so that a mistake is answered at once; `models` and `info` never import torch.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import List, Literal, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

# Paragraphs are single lines: the help keeps line breaks as written and wraps to the terminal itself.
APP_HELP = """Search archives of Sentinel-2 imagery by text, in ten languages.

Index a folder of tiles once, then search it; re-indexing adds only new or changed tiles.

  msearch index ./tiles              embed every tile of an archive
  msearch query "flooded farmland"   the tiles that match a sentence best
  msearch eval queries.csv           mAP@100 of the search on labelled queries

The index is ./msearch-index, or --index DIR, or $MSEARCH_INDEX. `msearch info` shows what it holds, `msearch models` the encoders and their weights, `msearch COMMAND --help` a command's options.
"""


class _Commands(TyperGroup):
    """Flags take no value, so their help shows no value type (typer would print `<bool>` beside each,
    --help included). Applied to every command as it is looked up, whoever declares it."""

    def get_params(self, ctx):
        return _without_flag_types(super().get_params(ctx))

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None:
            _without_flag_types(command.get_params(ctx))
        return command


def _without_flag_types(params):
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


app = typer.Typer(cls=_Commands, no_args_is_help=True, add_completion=False, help=APP_HELP)
console = Console()
err_console = Console(stderr=True)

INDEX_OPTION = typer.Option(None, "--index", help="Index directory (default: $MSEARCH_INDEX or ./msearch-index).")
CATALOGUE_OPTION = typer.Option(
    None,
    "--catalogue",
    envvar="MSEARCH_CATALOGUE",
    help="Catalogue database URL: sqlite:///PATH or postgresql+psycopg://USER@HOST/DB "
    "(default: catalogue.sqlite in the index directory).",
)
# A path of another kind (s3://, https://, ...): left to the reader that understands it.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _require_paths(paths, what: str) -> None:
    """Every local path must exist (before anything slow is imported or drawn)."""
    for path in paths or []:
        if not _URL.match(str(path)) and not Path(path).exists():
            _fail(f"{path} does not exist: give the folders or files {what}")


def _space_checkpoints(items: Optional[List[str]]) -> dict[str, str]:
    """--checkpoint SPACE=PATH options (repeatable) as {space: path}; each path must exist."""
    checkpoints = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name:
            _fail(f"--checkpoint takes SPACE=PATH, got {item!r}")
        _require_paths([path], "of local weights (--checkpoint SPACE=PATH)")
        checkpoints[name] = path
    return checkpoints


def _check_output(path: Path, option: str) -> None:
    """An output file must be writable before any work is done, so that a run never ends in a traceback
    after its results, or leaves half a file."""
    if path.is_dir():
        _fail(f"{option} {path} is a folder: give a file name")
    folder = path.parent
    if not folder.is_dir():
        _fail(f"{option} {path}: the folder {folder} does not exist; create it (mkdir -p {folder}) or choose another")
    if not os.access(folder, os.W_OK):
        _fail(f"{option} {path}: cannot write into {folder} (permission denied)")


def _check_index_folder(index: Optional[Path]) -> None:
    from msearch.config import index_dir

    folder = index_dir(index)
    if folder.exists() and not folder.is_dir():
        _fail(f"the index folder {folder} is a file: give --index a folder (new or an msearch index)")


def _write_text(path: Path, text: str) -> None:
    """Write a file whole or not at all: a temporary file beside it, then an atomic rename."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        scratch.write_text(text, encoding="utf-8")
        os.replace(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)


def _band_order(spec: Optional[str]):
    from msearch.schema.bands import parse_band_order

    try:
        return parse_band_order(spec) if spec else None
    except ValueError as exc:
        _fail(f"--band-order: {exc}")


def _known_models(names) -> None:
    from msearch.models import CardError, get_card

    for name in names or []:
        try:
            get_card(name)
        except CardError as exc:
            _fail(f"{exc} (`msearch models` lists them)")


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f} {self.unit}/s" if task.speed else f"- {self.unit}/s")


def _search_errors() -> tuple[type[Exception], ...]:
    """What a search, eval or route comparison answers with a one-line message and exit 2: the user's input
    (query, query set, weights, index, catalogue) is what has to change. Imported late: they live in the
    library layers, which load only once the arguments are checked."""
    from msearch.models import CardError, ModelNotAvailableError
    from msearch.search.querysets import QuerySetError
    from msearch.search.searcher import QueryError
    from msearch.store import SpaceMismatchError
    from msearch.store.catalogue import CatalogueError

    return (
        QueryError,
        QuerySetError,
        FileNotFoundError,
        CardError,
        ModelNotAvailableError,
        SpaceMismatchError,
        CatalogueError,
    )


@contextmanager
def _progress(label: str, unit: str):
    """A progress bar on stderr with the rate and the time left; yields `report(done, total)`. It appears at
    the first report, when the total is known (an error before that is its message alone), and goes away
    when the work is done (the results follow on stdout)."""
    columns = (
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    bar = Progress(*columns, console=err_console, transient=True)
    task = bar.add_task(label, total=None)

    def report(done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        yield report
    finally:
        if bar.live.is_started:
            bar.stop()


@app.command()
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
        _fail(
            "give the folders or files to index, or --stac-search URL --collection NAME "
            "(or --rebuild-ann alone to retrain the search indexes)"
        )
    if target_recall is not None and not rebuild_ann:
        _fail("--target-recall applies to --rebuild-ann")
    _require_paths(paths, "to index")
    _check_index_folder(index)
    _known_models(model)
    if checkpoint and len(model or []) != 1:
        _fail("--checkpoint names the weights of one model: give exactly one --model with it")
    order = _band_order(band_order)
    _device_and_precision(device, precision)

    from msearch.indexer.pipeline import NothingToIndex, RunInterrupted, rebuild_indexes
    from msearch.indexer.tiles import ReadSettings
    from msearch.models import CardError, ModelNotAvailableError
    from msearch.store import SpaceMismatchError

    if ray_actors is not None and not ray:
        _fail("--ray-actors applies to --ray")
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
        _fail(str(exc))
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
            _fail(str(exc), 1)  # not a usage error: the same command later resumes
        except errors as exc:
            _fail(str(exc))
        except NothingToIndex as exc:
            _fail(str(exc), code=1)
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
            _fail(str(exc))
        for note in notes:
            console.print(note)
    if failed:
        raise typer.Exit(1)


def _check_ray_available() -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.data") is None:
        _fail("--ray needs Ray Data on this machine: pip install 'msearch[ray]' (and the same on every node)")


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
            _fail(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to --stac-search URL")
        return None
    if not collection:
        _fail("--stac-search needs --collection (e.g. --collection sentinel-2-l2a)")
    from msearch.indexer.stac_search import StacSearch, parse_bbox

    try:
        area = parse_bbox(bbox) if bbox else None
    except ValueError as exc:
        _fail(str(exc))
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
        _fail(str(exc))


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


def _shown_path(location: str) -> str:
    """A catalogued location as users can find it: relative to the current folder when beneath it."""
    import os

    relative = os.path.relpath(location)
    return location if relative.startswith("..") else relative


def _plural(n: int, noun: str, verb: str = "", plural_verb: str = "") -> str:
    words = f"{n} {noun}" if n == 1 else f"{n} {noun}s"
    return f"{words} {verb if n == 1 else plural_verb}" if verb else words


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
            f"{_plural(summary.missing, 'catalogued tile')} {'is' if summary.missing == 1 else 'are'} gone from disk: "
            "run with --prune to drop them"
        )
    if summary.ignored:
        named = ", ".join(_shown_path(path) for path in summary.ignored_files)
        more = ", ..." if summary.ignored > len(summary.ignored_files) else ""
        console.print(
            f"{_plural(summary.ignored, 'file', 'is not a raster', 'are not rasters')} of a known layout, "
            f"ignored: {named}{more}"
        )
    if summary.duplicates:
        console.print(
            f"{_plural(summary.duplicates, 'tile')} reached a second time (through another path or a symbolic link): "
            "indexed once"
        )
    if summary.repaired:
        console.print(
            f"{_plural(summary.repaired, 'duplicate catalogue row')} of the same file under another path: dropped"
        )
    for space, n in summary.unfed.items():
        others = [s for s in summary.spaces if s != space]
        console.print(
            f"{_plural(n, 'tile')} {'lacks' if n == 1 else 'lack'} the bands {space} needs (RGB-only files): "
            f"indexed into {', '.join(others)} only"
        )
    for folder, why in summary.unreadable_folders:
        console.print(f"could not list {_shown_path(folder)}: {why}: not searched")
    for note in summary.notes:
        console.print(note)
    for title, items in (("failed", summary.failed), ("skipped", summary.skipped)):
        if items:
            table = Table(title=f"{len(items)} {title}", title_justify="left")
            table.add_column("tile", overflow="fold")  # the whole path: S2RGB/x.tif and S2L1C/x.tif differ
            table.add_column("reason")
            for location, reason in items[:50]:
                table.add_row(_shown_path(location), reason)
            if len(items) > 50:
                table.add_row(f"... and {len(items) - 50} more", "see `msearch info --problems`")
            console.print(table)


@app.command()
def info(
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
    problems: bool = typer.Option(False, "--problems", help="List every tile that failed or was skipped."),
):
    """What an index holds: tiles, encoder spaces, index types, sizes on disk, last run, problems."""
    from msearch.store.catalogue import CatalogueError
    from msearch.store.report import index_report

    try:
        report = index_report(index, with_problems=problems, catalogue=catalogue)
    except (FileNotFoundError, CatalogueError) as exc:
        _fail(str(exc))
    if as_json:
        console.print_json(json.dumps(report))
        return
    console.print(f"[bold]{report['directory']}[/bold]: {report['tiles']} tiles, {report['size_mb']:.1f} MB on disk")
    console.print(f"catalogue {report['catalogue']} (id {report['catalogue_id']})")
    table = Table("space", "encoder", "dim", "vectors", "search index", "text tower")
    for space in report["spaces"]:
        table.add_row(
            space["space"],
            space["identity"],
            str(space["dim"]),
            str(space["vectors"]),
            space["search"],
            space["text_tower"],
        )
    console.print(table)
    if report["spaces"]:
        written = ", ".join(f"{space['space']} {'+'.join(space['precisions'])}" for space in report["spaces"])
        console.print(f"vectors written in: {written}")
    for space in report["spaces"]:
        if space["text_tower"] == "torch":
            console.print(
                f"{space['space']}: its text tower is not exported to numpy on this machine, so the next "
                f"query loads torch (seconds) and exports it"
            )
        if space["retrain_advised"]:
            console.print(
                f"{space['space']}: trained on {space['index']['trained_on']} vectors, holds "
                f"{space['vectors']} now: `msearch index --rebuild-ann` would retrain it"
            )
    if report["last_run"]:
        run = report["last_run"]
        counts = run["summary"] or {}
        done = ", ".join(
            f"{name} {counts[name]}"
            for name in ("indexed", "unchanged", "skipped", "failed", "removed")
            if name in counts
        )
        console.print(
            f"last run #{run['id']} ({run['status']}), started {run['started_at']}"
            + (f": {done} in {counts.get('seconds', 0):.1f} s" if done else "")
        )
        if counts.get("precisions"):
            precisions = ", ".join(f"{space} {p}" for space, p in counts["precisions"].items())
            console.print(f"  its encoders ran on {counts['device']} ({precisions})")
    for bridge in report["bridges"]:
        quality = bridge["quality"]
        console.print(
            f"bridge {bridge['from']} -> {bridge['to']} ({bridge['method']}, held-out cosine "
            f"{max(quality['ridge_cosine'], quality['procrustes_cosine']):.3f})"
            + (f": [red]stale[/red]: {bridge['stale']}" if bridge["stale"] else "")
        )
        for lang, choice in bridge["routes"].items():
            console.print(f"  {lang}: {choice['route']} ({choice['why']})")
    console.print(f"problems: {report['problem_counts']}")
    for item in report.get("problems", []):
        console.print(f"  {item['kind']}: {_shown_path(str(Path(item['root']) / item['key']))}: {item['reason']}")


def _parse_bbox(text: Optional[str]):
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        _fail(f"--bbox must be four numbers minlon,minlat,maxlon,maxlat, got {text!r}")
    return values


def _parse_date(text: Optional[str], option: str):
    from datetime import date

    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        _fail(f"{option} must be a date as YYYY-MM-DD, got {text!r}")


@app.command()
def query(
    text: Optional[str] = typer.Argument(None, help="What to look for, in any of the ten languages."),
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
    top_k: int = typer.Option(10, "--top-k", "-k", min=1, help="Number of results."),
    lang: str = typer.Option(
        "auto", help="auto, en, pt, es, fr, de, nl, it, zh, ko or ru (auto refuses scripts of other languages)."
    ),
    space: Optional[str] = typer.Option(None, help="Search this encoder space instead of the language's default."),
    fuse: bool = typer.Option(
        False, "--fuse", help="Merge the rankings of every space that understands the query (RRF)."
    ),
    route: Optional[str] = typer.Option(
        None,
        help="Beyond English: rgb (the multilingual RGB space), bridge (carried into the multispectral space by "
        "`msearch align`'s map) or fuse (both, RRF). Default: the route a stored eval found best, else rgb.",
    ),
    like: Optional[str] = typer.Option(
        None, help="Find tiles that look like this tile id, catalogued path or raster file."
    ),
    band_order: Optional[str] = typer.Option(
        None,
        help="With --like FILE: band order of a multiband file without band descriptions (l2a, l1c, eurosat or "
        "B01,B02,...). Default: the order the file was catalogued with.",
    ),
    bbox: Optional[str] = typer.Option(None, help="minlon,minlat,maxlon,maxlat (WGS84): tiles that intersect it."),
    date_from: Optional[str] = typer.Option(None, help="Acquired on or after YYYY-MM-DD."),
    date_to: Optional[str] = typer.Option(None, help="Acquired on or before YYYY-MM-DD."),
    max_cloud: Optional[float] = typer.Option(
        None, help="At most this cloud cover (percent); tiles of unknown cover are excluded."
    ),
    tile_id: Optional[str] = typer.Option(None, help="MGRS tile, e.g. 33NZA."),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
    as_csv: bool = typer.Option(False, "--csv", help="Print results as CSV."),
    as_geojson: bool = typer.Option(
        False, "--geojson", help="Print results as a GeoJSON FeatureCollection of footprints."
    ),
    html: Optional[Path] = typer.Option(
        None, help="Also write one self-contained HTML page with a quicklook per result."
    ),
    checkpoint: Optional[List[str]] = typer.Option(
        None, help="SPACE=PATH: local weights for a space's encoder (repeatable)."
    ),
):
    """Search an index by text (or by example with --like)."""
    if sum([as_json, as_csv, as_geojson]) > 1:
        _fail("choose one of --json, --csv, --geojson")
    if (text is None) == (like is None):
        _fail("give a query TEXT or --like EXAMPLE (one of them)")
    if band_order is not None and like is None:
        _fail("--band-order tells how to read the file given to --like; a text query reads no files")
    if route is not None and like is not None:
        _fail("--route is how a text query beyond English reaches the index; --like searches by example")
    checkpoints = _space_checkpoints(checkpoint)
    if text is not None:
        from msearch.search.language import parse_language

        try:
            parse_language(lang)
        except ValueError as exc:
            _fail(f"--lang: {exc}")
    elif lang != "auto":
        _fail("--lang is the language of a query TEXT; --like searches by example")
    bounds = _parse_bbox(bbox)
    dates = _parse_date(date_from, "--date-from"), _parse_date(date_to, "--date-to")
    order = _band_order(band_order)
    if html is not None:
        _check_output(html, "--html")

    from msearch.indexer.readers import ArchivePixels
    from msearch.indexer.tiles import ReadSettings
    from msearch.search import formats
    from msearch.search.searcher import Filters, Searcher

    try:
        filters = Filters(bbox=bounds, date_from=dates[0], date_to=dates[1], max_cloud=max_cloud, tile_id=tile_id)
        searcher = Searcher(
            index, checkpoints, pixels=ArchivePixels(ReadSettings(band_order=order)), catalogue=catalogue
        )
        if like is not None:
            answer = searcher.like(like, top_k=top_k, space=space, filters=filters)
        else:
            answer = searcher.query(text, top_k=top_k, lang=lang, space=space, fuse=fuse, filters=filters, route=route)
    except _search_errors() as exc:
        _fail(str(exc))
    if answer.truncated:
        err_console.print(
            "[yellow]note:[/yellow] the query is longer than the text encoder's 77 tokens and was truncated"
        )
    if len(answer.results) < top_k and answer.matching_tiles is not None:
        err_console.print(f"only {answer.matching_tiles} tiles match the filters")
    if as_json:
        typer.echo(formats.to_json(answer.results, answer.info()))
    elif as_csv:
        typer.echo(formats.to_csv(answer.results), nl=False)
    elif as_geojson:
        typer.echo(formats.to_geojson(answer.results, answer.info()))
    else:
        via = f", route {answer.route}" if answer.route else ""
        console.print(f"[bold]{answer.query}[/bold]  ({answer.lang or 'image'} → {', '.join(answer.spaces)}{via})")
        console.print(formats.results_table(answer.results))
    if html is not None:
        from msearch.search.quicklook import html_page, png_bytes, true_colour

        images = []
        for result in answer.results:
            try:
                images.append(png_bytes(true_colour(searcher.tile_pixels(result.tile_id))))
            except Exception:  # a tile that moved or broke since indexing gets a placeholder, not a crash
                images.append(None)
        _write_text(html, html_page(answer.results, images, answer.info()))
        err_console.print(f"wrote {html}")


def _templates(path: Optional[Path]):
    from msearch.models.prompts import TEMPLATES, load_templates

    try:
        return load_templates(path) if path else TEMPLATES
    except (ValueError, OSError) as exc:  # UnicodeDecodeError is a ValueError
        _fail(f"--templates: {exc}")


@app.command("eval")
def evaluate(
    queryset: Path = typer.Argument(
        ...,
        exists=True,
        dir_okay=False,
        help="Query set (CSV/JSONL: query,lang,relevant) or a labels file (file,label).",
    ),
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
    space: Optional[str] = typer.Option(None, help="Answer every query in this space."),
    k: int = typer.Option(100, "--k", min=1, help="Cut-off for mAP@k."),
    task: Literal["retrieval", "classify"] = typer.Option(
        "retrieval", help="retrieval, or classify (zero-shot accuracy on a labels file)."
    ),
    templates: Optional[Path] = typer.Option(
        None, exists=True, dir_okay=False, help="Prompt templates, one per line with {c} (default: the paper's 50)."
    ),
    label_column: Optional[str] = typer.Option(None, help="Label column of a labels file (default: label or labels)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    out: Optional[Path] = typer.Option(
        None, help="Save the report as OUT.json, OUT.csv (per query) and OUT.means.csv."
    ),
    routes: bool = typer.Option(
        False, "--routes", help="Compare mAP@k per language of the routes beyond English (rgb, bridge, fuse)."
    ),
    save_routes: bool = typer.Option(
        False, "--save-routes", help="With --routes: store the comparison, so queries take each language's best route."
    ),
):
    """Score retrieval with mAP@100 as the paper computes it (and friends), or zero-shot classification."""
    if save_routes and not routes:
        _fail("--save-routes stores the comparison that --routes makes: pass both")
    if out is not None:
        _check_output(out.with_suffix(".json"), "--out")
    prompts = _templates(templates)

    from msearch.search.evaluate import evaluate_classification, evaluate_retrieval
    from msearch.search.searcher import Searcher

    if routes:
        return _evaluate_routes(queryset, index, k, as_json, save_routes, catalogue)
    try:
        searcher = Searcher(index, catalogue=catalogue)
        if task == "classify":
            result = evaluate_classification(searcher, queryset, space, prompts, label_column)
        else:
            with _progress("evaluating", "queries") as report:
                result = evaluate_retrieval(searcher, queryset, space, k, prompts, label_column, progress=report)
    except _search_errors() as exc:
        _fail(str(exc))
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}")
    if task == "classify":
        data = {
            "accuracy": result.accuracy,
            "mean_class_recall": result.mean_class_recall,
            "per_class_recall": result.per_class_recall,
            "tiles": result.n_tiles,
        }
        if as_json:
            typer.echo(json.dumps(data, indent=2))
        else:
            table = Table("class", "recall")
            for name, value in result.per_class_recall.items():
                table.add_row(name, f"{value:.3f}")
            console.print(table)
            console.print(
                f"top-1 accuracy {result.accuracy:.3f}, mean per-class recall {result.mean_class_recall:.3f} "
                f"over {result.n_tiles} tiles"
            )
        if out:
            _write_text(out.with_suffix(".json"), json.dumps(data, indent=2))
        return
    report = result.report
    data = report.as_dict()
    data["index_recall_at_k"] = {"mean": result.mean_index_recall, "per_query": result.index_recall}
    data["spaces"] = result.spaces
    if out:
        _write_text(out.with_suffix(".json"), json.dumps(data, indent=2, ensure_ascii=False))
        report.write_queries_csv(out.with_suffix(".csv"))
        report.write_means_csv(out.with_suffix(".means.csv"))
    if as_json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    table = Table("query", "lang", "space", f"mAP@{k}", f"AP/min({k},R)", "R@1", "R@5", "R@10", "P@10", "index R@k")
    for row in report.queries:
        table.add_row(
            row.query,
            row.lang,
            result.spaces[row.query],
            f"{row.average_precision:.3f}",
            f"{row.average_precision_normalised_by_relevant:.3f}",
            f"{row.recall_at_1:.2f}",
            f"{row.recall_at_5:.2f}",
            f"{row.recall_at_10:.2f}",
            f"{row.precision_at_10:.2f}",
            f"{result.index_recall[row.query]:.3f}",
        )
    console.print(table)
    means = Table("scope", "queries", f"mAP@{k} (paper)", f"mAP normalised by min({k},R)", "R@1", "R@5", "R@10", "P@10")
    for m in [report.overall, *report.by_lang.values()]:
        means.add_row(
            m.lang or "all",
            str(m.n_queries),
            f"{m.mean_average_precision:.4f}",
            f"{m.mean_average_precision_normalised_by_relevant:.4f}",
            f"{m.recall_at_1:.3f}",
            f"{m.recall_at_5:.3f}",
            f"{m.recall_at_10:.3f}",
            f"{m.precision_at_10:.3f}",
        )
    console.print(means)
    console.print(f"index recall@{k} against exact search: {result.mean_index_recall:.4f}")


def _evaluate_routes(
    queryset: Path, index: Optional[Path], k: int, as_json: bool, save: bool, catalogue: Optional[str] = None
) -> None:
    from msearch.search.evaluate import evaluate_routes
    from msearch.search.searcher import Searcher
    from msearch.store.bridges import ROUTES, save_routes

    try:
        searcher = Searcher(index, catalogue=catalogue)
        comparison = evaluate_routes(searcher, queryset, k)
    except _search_errors() as exc:
        _fail(str(exc))
    for warning in comparison.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}")
    if save:
        for bridge in searcher.bridges():
            save_routes(searcher.store.directory, bridge, comparison.as_dict())
    if as_json:
        typer.echo(json.dumps(comparison.as_dict(), indent=2))
    else:
        table = Table("lang", "queries", *(f"{route} mAP@{k}" for route in (*ROUTES, "direct")), "best")
        for lang, entry in comparison.languages.items():
            cells = [f"{entry[r]:.4f}" if r in entry else "" for r in (*ROUTES, "direct")]
            table.add_row(lang, str(entry["queries"]), *cells, entry["chosen"])
        console.print(table)
    if save:
        err_console.print("stored: queries in each language now take its best route by default (see `msearch info`)")


@app.command()
def align(
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
    from_space: Optional[str] = typer.Option(None, "--from", help="Space of the multilingual text tower (rs-m-clip)."),
    to_space: Optional[str] = typer.Option(None, "--to", help="Multispectral space (llama3-ms-clip-base)."),
    texts: Optional[Path] = typer.Option(
        None,
        exists=True,
        dir_okay=False,
        help="English texts to fit on, one per line (default: the paper's templates over benchmark classes).",
    ),
):
    """Fit a text bridge so that queries in the nine languages beyond English can search the multispectral space."""
    from msearch.search.bridge import align as fit_bridge
    from msearch.search.bridge import corpus_from_file
    from msearch.search.searcher import QueryError, Searcher
    from msearch.store.catalogue import CatalogueError

    try:
        corpus = corpus_from_file(texts) if texts else None
        searcher = Searcher(index, query_cache=None, catalogue=catalogue)
        columns = (TextColumn("[bold]encoding texts"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err_console) as bar:
            task = bar.add_task("align", total=None)
            fit = fit_bridge(
                searcher,
                from_space,
                to_space,
                corpus,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except (QueryError, FileNotFoundError, CatalogueError) as exc:
        _fail(str(exc))
    bridge = fit.bridge
    console.print(
        f"bridge {bridge.from_space} -> {bridge.to_space}: {fit.corpus_size} texts, "
        f"{fit.held_out_texts} held out (whole classes)"
    )
    table = Table("method", "held-out cosine", "")
    table.add_row("ridge", f"{fit.ridge_cosine:.4f}", f"lambda {fit.ridge_lambda:g}")
    table.add_row("orthogonal Procrustes", f"{fit.procrustes_cosine:.4f}", "")
    console.print(table)
    console.print(f"stored: {bridge.method} (the higher held-out cosine), refitted on every text")
    if fit.translations:
        console.print(
            "translations in the shipped query set, mapped vs the English original's target embedding: "
            + ", ".join(f"{lang} {cos:.3f}" for lang, cos in fit.translations.items())
        )
    console.print("next: `msearch eval QUERIES --routes --save-routes` measures which route each language should take")


@app.command()
def classify(
    paths: List[Path] = typer.Argument(..., exists=True, help="Tiles (files or folders), indexed or not."),
    classes: Optional[List[str]] = typer.Option(None, "--classes", help="A class name (repeatable)."),
    classes_file: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help="Class names, one per line."),
    model: str = typer.Option("llama3-ms-clip-base", "--model", "-m", help="Encoder card."),
    checkpoint: Optional[Path] = typer.Option(None, exists=True, help="Local weights for the model."),
    templates: Optional[Path] = typer.Option(
        None, exists=True, dir_okay=False, help="Prompt templates, one per line with {c}."
    ),
    band_order: Optional[str] = typer.Option(None, help="Band order of multiband files without band descriptions."),
    as_csv: bool = typer.Option(False, "--csv", help="Print probabilities as CSV."),
):
    """Zero-shot classification: per-class probabilities (softmax of 100 x cosine) for each tile."""
    import csv
    import io

    names = [name.strip() for name in classes or [] if name.strip()]
    if classes_file:
        try:
            names += [line.strip() for line in classes_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            _fail(f"--classes-file: {exc}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        _fail(f"class {repeated[0]!r} is given twice: each class once")
    if len(names) < 2:
        _fail(f"give at least two classes to choose between (--classes, --classes-file); got {len(names)}")
    _known_models([model])
    order = _band_order(band_order)
    prompts = _templates(templates)

    from msearch.indexer.classify import classify_files
    from msearch.models import CardError, ModelNotAvailableError

    try:
        with _progress("classifying", "tiles") as report:
            keys, probabilities, failures = classify_files(
                paths, names, model, checkpoint, prompts, order, progress=report
            )
    except (ValueError, CardError, ModelNotAvailableError) as exc:
        _fail(str(exc))
    for key, reason in failures:
        err_console.print(f"[yellow]skipped[/yellow] {key}: {reason}")
    if as_csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["tile", "predicted", *names])
        for key, row in zip(keys, probabilities):
            writer.writerow([key, names[int(row.argmax())], *(f"{p:.6f}" for p in row)])
        typer.echo(buffer.getvalue(), nl=False)
    else:
        table = Table("tile", "predicted", *names)
        for key, row in zip(keys, probabilities):
            table.add_row(key, names[int(row.argmax())], *(f"{p:.3f}" for p in row))
        console.print(table)
    if failures and not keys:
        raise typer.Exit(1)


@app.callback()
def main() -> None:
    # An explicit callback keeps the commands subcommands: typer runs a lone command as the app itself.
    pass


@app.command()
def models(
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
    download: str | None = typer.Option(
        None,
        "--download",
        metavar="NAME",
        help="Download a model's weights into the Hugging Face cache, to use offline later.",
    ),
) -> None:
    """List the encoders (model cards) and whether their weights are cached; or pre-fetch one's weights."""
    from msearch.models import CardError, ModelNotAvailableError, get_card
    from msearch.models.catalog import model_catalog
    from msearch.models.loading import download_weights

    if download:
        _known_models([download])
    try:
        if download:
            paths = download_weights(get_card(download))
            if as_json:
                print(json.dumps({"model": download, "files": [str(p) for p in paths]}, indent=2))
            else:
                console.print(f"[green]{download}[/green]: weights cached")
                for path in paths:
                    console.print(f"  {path}")
            return
        entries = model_catalog()
    except (CardError, ModelNotAvailableError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps([entry.to_dict() for entry in entries], indent=2))
        return
    status_style = {"cached": "green", "not downloaded": "yellow", "local only": "cyan"}
    table = Table()
    table.add_column("model", no_wrap=True)
    table.add_column("languages")
    table.add_column("bands")
    table.add_column("weights", overflow="fold")
    table.add_column("status", no_wrap=True)
    for entry in entries:
        table.add_row(
            entry.name,
            " ".join(entry.languages),
            " ".join(entry.bands),
            entry.weights_source,
            f"[{status_style[entry.status]}]{entry.status}[/]",
        )
    console.print(table)


@app.command()
def export(
    out: Path = typer.Argument(..., help="GeoParquet file to write (replaced atomically if it exists)."),
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
    space: Optional[List[str]] = typer.Option(
        None, "--space", "-s", help="Encoder space to export (repeatable). Default: all."
    ),
):
    """Write the index as GeoParquet: one row per tile, its footprint, catalogue fields and embeddings."""
    _check_output(out, "export to")
    from msearch.store import SpaceMismatchError
    from msearch.store.catalogue import CatalogueError
    from msearch.store.export import export_geoparquet

    try:
        rows = export_geoparquet(index, out, spaces=space, catalogue=catalogue)
    except (FileNotFoundError, SpaceMismatchError, CatalogueError) as exc:
        _fail(str(exc))
    console.print(f"wrote {rows} rows to {out}")


@app.command()
def serve(
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
    host: str = typer.Option("127.0.0.1", help="Address to listen on; any but loopback needs --token."),
    port: int = typer.Option(8765, min=0, max=65535, help="Port to listen on."),
    token: Optional[str] = typer.Option(
        None, envvar="MSEARCH_TOKEN", help="Require `Authorization: Bearer TOKEN` on every /api request."
    ),
    checkpoint: Optional[List[str]] = typer.Option(
        None, help="SPACE=PATH: local weights for a space's encoder (repeatable)."
    ),
):
    """Serve the search API and the map page (http://127.0.0.1:8765/), keeping the searcher warm."""
    try:
        import uvicorn

        from msearch.search.server import LOOPBACK_NAMES, check_bind, create_app, is_loopback, one_thread_per_request
    except ImportError as exc:
        _fail(f"`msearch serve` needs the serve extra: pip install 'msearch[serve]' ({exc})")
    try:
        check_bind(host, token)
    except ValueError as exc:
        _fail(str(exc))
    checkpoints = _space_checkpoints(checkpoint)
    from msearch.indexer.readers import ArchivePixels
    from msearch.search.searcher import Searcher
    from msearch.store.catalogue import CatalogueError

    try:
        searcher = Searcher(index, checkpoints, pixels=ArchivePixels(), catalogue=catalogue)
    except (FileNotFoundError, CatalogueError) as exc:
        _fail(str(exc))
    # Without a token only loopback Host headers are answered: a page elsewhere cannot reach the API by DNS rebinding.
    hosts = None if token else list(LOOPBACK_NAMES)
    err_console.print(
        f"serving {searcher.store.directory} at http://{host}:{port}/"
        + ("" if is_loopback(host) else " (every /api request needs the token)")
    )
    one_thread_per_request()
    application = create_app(searcher, token=token, allowed_hosts=hosts)
    uvicorn.run(application, host=host, port=port, log_level="warning")


catalogue_app = typer.Typer(no_args_is_help=True, help="Move an index's catalogue between SQLite and PostgreSQL.")
app.add_typer(catalogue_app, name="catalogue")


@catalogue_app.command("copy")
def catalogue_copy(
    src: str = typer.Argument(..., help="Source catalogue: URL, SQLite file, or index directory."),
    dst: str = typer.Argument(..., help="Destination: URL of an empty database (or a new SQLite file)."),
    index: Optional[Path] = typer.Option(
        None, "--index", help="Also point this index directory's FAISS files at the copy (they were built from SRC)."
    ),
):
    """Copy a catalogue, vectors included, verified by row counts and a checksum before it is kept."""
    from msearch.store.catalogue import CatalogueError, CatalogueUnavailableError
    from msearch.store.copy import copy_catalogue

    try:
        report = copy_catalogue(src, dst, index=index)
    except CatalogueUnavailableError as exc:
        _fail(str(exc), 1)
    except (FileNotFoundError, CatalogueError) as exc:
        _fail(str(exc))
    counts = ", ".join(f"{name} {count}" for name, count in report.rows.items())
    console.print(f"copied {report.source} to {report.destination}: {counts}")
    console.print(f"verified: checksum {report.checksum} on both sides; the copy is catalogue {report.destination_id}")
    if report.rebound_spaces:
        console.print(f"{index}: spaces {', '.join(report.rebound_spaces)} now belong to the copy")
