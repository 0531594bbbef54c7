"""`msearch timeline`: every acquisition of one place in date order, scored against a text or an example."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from msearch.cli.common import (
    CATALOGUE_OPTION,
    INDEX_OPTION,
    ONE_SPACE_ROUTE_OPTION,
    check_output,
    console,
    err_console,
    fail,
    parse_numbers,
    search_errors,
    space_checkpoints,
)


def timeline(
    place_and_text: Optional[List[str]] = typer.Argument(
        None,
        metavar="[PLACE] [TEXT]",
        help="PLACE: a place id, or tile:ID for the place of a tile (leave it out with --at); TEXT: what to score.",
    ),
    at: Optional[str] = typer.Option(None, "--at", help="LON,LAT: the place that covers this point (WGS84)."),
    like: Optional[str] = typer.Option(
        None, help="Score by likeness to this tile id, catalogued path or raster file instead of a TEXT."
    ),
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
    lang: str = typer.Option("auto", help="The TEXT's language: auto, en, pt, es, fr, de, nl, it, zh, ko or ru."),
    space: Optional[str] = typer.Option(None, help="Score in this encoder space instead of the language's default."),
    route: Optional[str] = ONE_SPACE_ROUTE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the timeline as JSON."),
    as_csv: bool = typer.Option(False, "--csv", help="Print one CSV row per acquisition."),
    plot: Optional[Path] = typer.Option(None, help="Also write a PNG chart of score over time (e.g. timeline.png)."),
    checkpoint: Optional[List[str]] = typer.Option(
        None, help="SPACE=PATH: local weights for a space's encoder (repeatable)."
    ),
):
    """Every acquisition of a place in date order, scored as a query scores it, with cloud and nodata."""
    if as_json and as_csv:
        fail("choose one of --json, --csv")
    args = list(place_and_text or [])
    place = None if at is not None else (args.pop(0) if args else None)
    if at is None and place is None:
        fail("give a PLACE (a place id, or tile:ID) or --at LON,LAT")
    if len(args) > 1:
        fail(f"too many arguments: {' '.join(args)!r}; give [PLACE] TEXT, quoting a TEXT of several words")
    text = args[0] if args else None
    if (text is None) == (like is None):
        fail("give a TEXT or --like EXAMPLE (one of them) to score the place's acquisitions")
    point = parse_numbers(at, 2, "--at takes LON,LAT (two numbers)") if at is not None else None
    if plot is not None:
        check_output(plot, "--plot")
    checkpoints = space_checkpoints(checkpoint)

    from msearch.indexer.readers import ArchivePixels
    from msearch.search import formats
    from msearch.search.searcher import Searcher
    from msearch.search.timeline import CSV_COLUMNS, place_timeline, plot_timeline, resolve_place

    try:
        searcher = Searcher(index, checkpoints, pixels=ArchivePixels(), catalogue=catalogue)
        place_id = resolve_place(searcher, place, at=point)
        found = place_timeline(searcher, place_id, text, like=like, lang=lang, space=space, route=route)
        if plot is not None:
            plot_timeline(found, plot)
    except search_errors() as exc:
        fail(str(exc))
    if as_json:
        typer.echo(found.to_json())
    elif as_csv:
        typer.echo(formats.to_csv(found.acquisitions, CSV_COLUMNS), nl=False)
    else:
        via = f", route {found.route}" if found.route else ""
        console.print(
            f"[bold]place {found.place_id}[/bold]: {len(found.acquisitions)} acquisitions, scored for "
            f"[bold]{found.query}[/bold] ({found.lang or 'image'} → {found.space}{via})"
        )
        console.print(_table(found.acquisitions))
    if plot is not None:
        err_console.print(f"wrote {plot}")


def _table(points):
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold")
    for name, justify in (("date", "left"), ("score", "right"), ("cloud %", "right"), ("nodata", "right")):
        table.add_column(name, justify=justify)
    table.add_column("tile id", justify="right")
    table.add_column("file", overflow="fold")
    for p in points:
        table.add_row(
            p.date or "-",
            "-" if p.score is None else f"{p.score:.4f}",
            "-" if p.cloud is None else f"{p.cloud:.1f}",
            "-" if p.nodata is None else f"{p.nodata:.2f}",
            str(p.tile_id),
            p.path,
        )
    return table
