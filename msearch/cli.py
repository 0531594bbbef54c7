"""The `msearch` command: thin typer commands that call the library and format its answers."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
console = Console()
err_console = Console(stderr=True)

import json
from pathlib import Path
from typing import List, Optional

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

INDEX_OPTION = typer.Option(None, "--index", help="Index directory (default: $MSEARCH_INDEX or ./msearch-index).")


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


@app.command()
def index(
    paths: List[Path] = typer.Argument(..., help="Folders or files of tiles, searched recursively."),
    index: Optional[Path] = INDEX_OPTION,
    model: Optional[List[str]] = typer.Option(None, "--model", "-m", help="Encoder card (repeatable). Default: llama3-ms-clip-base and rs-m-clip."),
    checkpoint: Optional[Path] = typer.Option(None, help="Local weights for the (single) --model."),
    batch_size: int = typer.Option(32, min=1, help="Tiles per encoder forward pass."),
    workers: int = typer.Option(1, min=0, help="Reader processes (0: read in the main process)."),
    band_order: Optional[str] = typer.Option(None, help="Band order of multiband files without band descriptions: l2a, l1c, eurosat or B01,B02,..."),
    offset: Optional[float] = typer.Option(None, help="Force the radiometric offset the values carry (e.g. 1000), overriding metadata."),
    chip_size: int = typer.Option(224, min=16, help="Scenes larger than a chip are cut into chips of this many 10 m pixels."),
    stride: Optional[int] = typer.Option(None, min=1, help="Chip stride in pixels (default: the chip size)."),
    max_nodata: float = typer.Option(0.5, min=0.0, max=1.0, help="Skip chips with a larger nodata fraction."),
    prune: bool = typer.Option(False, help="Drop catalogued tiles whose files are gone."),
    strict: bool = typer.Option(False, help="Exit non-zero if any tile failed or was skipped."),
):
    """Embed an archive: incremental (only new or changed tiles), resumable and crash-safe."""
    from msearch.indexer.pipeline import index_archive
    from msearch.indexer.tiles import ReadSettings
    from msearch.models import CardError, ModelNotAvailableError
    from msearch.indexer.store import SpaceMismatchError
    from msearch.schema.bands import parse_band_order

    try:
        settings = ReadSettings(
            band_order=parse_band_order(band_order) if band_order else None, offset=offset,
            chip_size=chip_size, stride=stride, max_nodata=max_nodata,
        )
    except ValueError as exc:
        _fail(str(exc))
    columns = (TextColumn("[bold]indexing"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]} tiles/s"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=False) as bar:
        task = bar.add_task("index", total=None, rate="-")
        started = [None]

        def report(done: int, total: int) -> None:
            import time

            started[0] = started[0] or time.perf_counter()
            elapsed = max(time.perf_counter() - started[0], 1e-9)
            bar.update(task, completed=done, total=total, rate=f"{done / elapsed:.1f}")

        try:
            summary = index_archive(paths, index=index, models=model, checkpoint=checkpoint, settings=settings,
                                    batch_size=batch_size, workers=workers, prune=prune, progress=report)
        except (FileNotFoundError, CardError, ModelNotAvailableError, SpaceMismatchError, ValueError) as exc:
            bar.stop()
            _fail(str(exc))
    _print_summary(summary)
    if not summary.ok or (strict and (summary.failed or summary.skipped)):
        raise typer.Exit(1)


def _print_summary(summary) -> None:
    line = (f"indexed {summary.indexed}, unchanged {summary.unchanged}, skipped {len(summary.skipped)}, "
            f"failed {len(summary.failed)}, removed {summary.removed} in {summary.seconds:.1f} s "
            f"(spaces: {', '.join(summary.spaces)})")
    console.print(line)
    if summary.missing:
        console.print(f"{summary.missing} catalogued tiles are gone from disk: run with --prune to drop them")
    if summary.ignored:
        console.print(f"{summary.ignored} files are not rasters of a known layout and were ignored")
    for title, items in (("failed", summary.failed), ("skipped", summary.skipped)):
        if items:
            table = Table(title=f"{len(items)} {title}", title_justify="left")
            table.add_column("tile")
            table.add_column("reason")
            for key, reason in items[:50]:
                table.add_row(key, reason)
            if len(items) > 50:
                table.add_row(f"... and {len(items) - 50} more", "see `msearch info --problems`")
            console.print(table)


@app.command()
def info(
    index: Optional[Path] = INDEX_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
    problems: bool = typer.Option(False, help="List every tile that failed or was skipped."),
):
    """What an index holds: tiles, encoder spaces, index types, sizes on disk, last run, problems."""
    from msearch.indexer.report import index_report

    try:
        report = index_report(index, with_problems=problems)
    except FileNotFoundError as exc:
        _fail(str(exc))
    if as_json:
        console.print_json(json.dumps(report))
        return
    console.print(f"[bold]{report['directory']}[/bold]: {report['tiles']} tiles, {report['size_mb']:.1f} MB on disk")
    table = Table("space", "encoder", "dim", "index", "vectors")
    for space in report["spaces"]:
        table.add_row(space["space"], space["identity"], str(space["dim"]), space["index"]["kind"], str(space["vectors"]))
    console.print(table)
    if report["last_run"]:
        run = report["last_run"]
        console.print(f"last run #{run['id']} ({run['status']}), started {run['started_at']}: {run['summary']}")
    console.print(f"problems: {report['problem_counts']}")
    for item in report.get("problems", []):
        console.print(f"  {item['kind']}: {item['key']}: {item['reason']}")


@app.command()
def export(
    out: Path = typer.Argument(..., help="GeoParquet file to write (replaced atomically if it exists)."),
    index: Optional[Path] = INDEX_OPTION,
    space: Optional[List[str]] = typer.Option(None, "--space", "-s", help="Encoder space to export (repeatable). Default: all."),
):
    """Write the index as GeoParquet: one row per tile, its footprint, catalogue fields and embeddings."""
    from msearch.indexer.export import export_geoparquet
    from msearch.indexer.store import SpaceMismatchError

    try:
        rows = export_geoparquet(index, out, spaces=space)
    except (FileNotFoundError, SpaceMismatchError) as exc:
        _fail(str(exc))
    console.print(f"wrote {rows} rows to {out}")
