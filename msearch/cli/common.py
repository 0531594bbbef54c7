"""What the commands share: the consoles, the --index and --catalogue options, the checks of arguments and
paths that answer a mistake at once (exit 2, before anything slow is imported), the progress bar and the
ways of printing. Torch-free: anything heavier is imported inside the function that needs it."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

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
from rich.text import Text

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
# The filters of what ranks tiles (query, detect), as msearch.search.searcher.Filters takes them.
BBOX_OPTION = typer.Option(None, help="minlon,minlat,maxlon,maxlat (WGS84): tiles that intersect it.")
DATE_FROM_OPTION = typer.Option(None, help="Acquired on or after YYYY-MM-DD.")
DATE_TO_OPTION = typer.Option(None, help="Acquired on or before YYYY-MM-DD.")
MAX_CLOUD_OPTION = typer.Option(None, help="At most this cloud cover (percent); tiles of unknown cover are excluded.")
# How a text beyond English is read where scores are compared (change, timeline): one space's route.
ONE_SPACE_ROUTE_OPTION = typer.Option(
    None,
    "--route",
    help="Beyond English: rgb (scored in the multilingual RGB space) or bridge (carried into the multispectral "
    "space by `msearch align`'s map); not fuse, which has no scores to compare. Default: the better of the two "
    "in a stored eval, else rgb.",
)
# A path of another kind (s3://, https://, ...): left to the reader that understands it.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def require_paths(paths, what: str) -> None:
    """Every local path must exist (before anything slow is imported or drawn)."""
    for path in paths or []:
        if not _URL.match(str(path)) and not Path(path).exists():
            fail(f"{path} does not exist: give the folders or files {what}")


def space_checkpoints(items: Optional[List[str]]) -> dict[str, str]:
    """--checkpoint SPACE=PATH options (repeatable) as {space: path}; each path must exist."""
    checkpoints = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name:
            fail(f"--checkpoint takes SPACE=PATH, got {item!r}")
        require_paths([path], "of local weights (--checkpoint SPACE=PATH)")
        checkpoints[name] = path
    return checkpoints


def check_output(path: Path, option: str) -> None:
    """An output file must be writable before any work is done, so that a run never ends in a traceback
    after its results, or leaves half a file."""
    if path.is_dir():
        fail(f"{option} {path} is a folder: give a file name")
    folder = path.parent
    if not folder.is_dir():
        fail(f"{option} {path}: the folder {folder} does not exist; create it (mkdir -p {folder}) or choose another")
    if not os.access(folder, os.W_OK):
        fail(f"{option} {path}: cannot write into {folder} (permission denied)")


def check_index_folder(index: Optional[Path]) -> None:
    from msearch.config import index_dir

    folder = index_dir(index)
    if folder.exists() and not folder.is_dir():
        fail(f"the index folder {folder} is a file: give --index a folder (new or an msearch index)")


def check_folder(path: Path, option: str) -> None:
    """An output folder: made now if its parent exists (so that nothing is computed for a folder that cannot
    be), and writable."""
    if path.exists() and not path.is_dir():
        fail(f"{option} {path} is a file: give a folder (new or existing)")
    if not path.exists():
        if not path.parent.is_dir():
            fail(f"{option} {path}: the folder {path.parent} does not exist; create it (mkdir -p {path})")
        path.mkdir()
    if not os.access(path, os.W_OK):
        fail(f"{option} {path}: cannot write into it (permission denied)")


def write_text(path: Path, text: str) -> None:
    """Write a file whole or not at all: a temporary file beside it, then an atomic rename."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    """Write a file whole or not at all: a temporary file beside it, then an atomic rename."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        scratch.write_bytes(data)
        os.replace(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)


def band_order_option(spec: Optional[str]):
    from msearch.schema.bands import parse_band_order

    try:
        return parse_band_order(spec) if spec else None
    except ValueError as exc:
        fail(f"--band-order: {exc}")


def known_models(names) -> None:
    from msearch.models import CardError, get_card

    for name in names or []:
        try:
            get_card(name)
        except CardError as exc:
            fail(f"{exc} (`msearch models` lists them)")


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f} {self.unit}/s" if task.speed else f"- {self.unit}/s")


def search_errors() -> tuple[type[Exception], ...]:
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
def progress(label: str, unit: str):
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


def shown_path(location: str) -> str:
    """A catalogued location as users can find it: relative to the current folder when beneath it."""
    relative = os.path.relpath(location)
    return location if relative.startswith("..") else relative


def plural(n: int, noun: str, verb: str = "", plural_verb: str = "") -> str:
    words = f"{n} {noun}" if n == 1 else f"{n} {noun}s"
    return f"{words} {verb if n == 1 else plural_verb}" if verb else words


def parse_bbox(text: Optional[str]):
    if text is None:
        return None
    return parse_numbers(text, 4, "--bbox must be four numbers minlon,minlat,maxlon,maxlat")


def parse_numbers(text: str, count: int, rule: str) -> tuple[float, ...]:
    """`count` comma-separated numbers, else exit 2 with "RULE, got TEXT"."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        fail(f"{rule}, got {text!r}")
    return values


def echo_formatted(results: list, info: dict, as_json: bool, as_csv: bool, as_geojson: bool, columns=None) -> bool:
    """Print results as JSON, CSV (`columns`: the CSV's, default the query's) or GeoJSON when one was asked for
    (msearch.search.formats); False when none was, and the command prints its table."""
    from msearch.search import formats

    if as_json:
        typer.echo(formats.to_json(results, info))
    elif as_csv:
        typer.echo(formats.to_csv(results, columns or formats.CSV_COLUMNS), nl=False)
    elif as_geojson:
        typer.echo(formats.to_geojson(results, info))
    return as_json or as_csv or as_geojson


def parse_date(text: Optional[str], option: str):
    from datetime import date

    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        fail(f"{option} must be a date as YYYY-MM-DD, got {text!r}")


def prompt_templates(path: Optional[Path]):
    from msearch.models.prompts import TEMPLATES, load_templates

    try:
        return load_templates(path) if path else TEMPLATES
    except (ValueError, OSError) as exc:  # UnicodeDecodeError is a ValueError
        fail(f"--templates: {exc}")


def collection_errors() -> tuple[type[Exception], ...]:
    """What a collection or detect command answers with one line and exit 2: the search errors, and a
    collection or label that cannot be used as given (unknown, of another space, a tile not in the index)."""
    from msearch.store.collections import CollectionError

    return (*search_errors(), CollectionError)


def warn_missing(collection) -> None:
    """Say which labelled tiles are no longer catalogued (pruned): their labels are kept, never dropped silently."""
    if collection.missing:
        names = ", ".join(shown_path(item.name) for item in collection.missing[:5])
        err_console.print(
            f"[yellow]note:[/yellow] {plural(len(collection.missing), 'labelled tile')} no longer in the index "
            f"(kept, left out of the detector; indexed again, they count again): {names}"
        )
