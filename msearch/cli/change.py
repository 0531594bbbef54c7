"""`msearch change`: places ranked by how their acquisitions after a split date differ from those before it."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from msearch.cli.common import (
    CATALOGUE_OPTION,
    INDEX_OPTION,
    ONE_SPACE_ROUTE_OPTION,
    console,
    echo_formatted,
    err_console,
    fail,
    parse_bbox,
    parse_date,
    plural,
    search_errors,
    space_checkpoints,
)


def change(
    after: str = typer.Option(..., "--after", help="Split date YYYY-MM-DD: acquisitions on or after it are 'after'."),
    before: Optional[str] = typer.Option(
        None, "--before", help="Acquisitions before this date are 'before' (default: the --after date)."
    ),
    to: Optional[str] = typer.Option(None, "--to", help="Rank by how much more the later acquisitions match TEXT."),
    from_text: Optional[str] = typer.Option(
        None, "--from", help="With --to: and by how much less they match this TEXT."
    ),
    to_like: Optional[str] = typer.Option(
        None, "--to-like", help="Rank by how much more they look like this tile id, catalogued path or raster file."
    ),
    any_change: bool = typer.Option(False, "--any", help="Rank by how far apart the periods' embeddings are."),
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
    top_k: int = typer.Option(10, "--top-k", "-k", min=1, help="Number of places."),
    lang: str = typer.Option("auto", help="The texts' language: auto, en, pt, es, fr, de, nl, it, zh, ko or ru."),
    space: Optional[str] = typer.Option(None, help="Compare in this encoder space instead of the default."),
    route: Optional[str] = ONE_SPACE_ROUTE_OPTION,
    bbox: Optional[str] = typer.Option(None, help="minlon,minlat,maxlon,maxlat (WGS84): places that intersect it."),
    max_cloud: Optional[float] = typer.Option(
        None, help="Use only acquisitions with at most this cloud cover (percent; unknown cover is excluded)."
    ),
    tile_id: Optional[str] = typer.Option(None, help="MGRS tile, e.g. 33NZA."),
    as_json: bool = typer.Option(False, "--json", help="Print the ranked places as JSON."),
    as_csv: bool = typer.Option(False, "--csv", help="Print the ranked places as CSV."),
    as_geojson: bool = typer.Option(False, "--geojson", help="Print a GeoJSON FeatureCollection of footprints."),
    checkpoint: Optional[List[str]] = typer.Option(
        None, help="SPACE=PATH: local weights for a space's encoder (repeatable)."
    ),
):
    """Places ranked by how their acquisitions after a date differ from those before it."""
    if sum([as_json, as_csv, as_geojson]) > 1:
        fail("choose one of --json, --csv, --geojson")
    if sum([to is not None, to_like is not None, any_change]) != 1:
        fail("say what change to look for: one of --to TEXT, --to-like EXAMPLE or --any")
    if from_text is not None and to is None:
        fail("--from TEXT goes with --to TEXT: less like the first, more like the second")
    split, earlier = parse_date(after, "--after"), parse_date(before, "--before")
    bounds = parse_bbox(bbox)
    checkpoints = space_checkpoints(checkpoint)

    from msearch.indexer.readers import ArchivePixels
    from msearch.search.change import CSV_COLUMNS, ChangeFinder
    from msearch.search.searcher import Filters, Searcher

    try:
        filters = Filters(bbox=bounds, max_cloud=max_cloud, tile_id=tile_id)
        searcher = Searcher(index, checkpoints, pixels=ArchivePixels(), catalogue=catalogue)
        answer = ChangeFinder(searcher).find(
            split,
            earlier,
            to=to,
            from_text=from_text,
            to_like=to_like,
            any_change=any_change,
            top_k=top_k,
            lang=lang,
            space=space,
            filters=filters,
            route=route,
        )
    except search_errors() as exc:
        fail(str(exc))
    if answer.left_out:
        err_console.print(
            f"{plural(answer.left_out, 'place')} left out: no acquisition in one of the periods "
            f"({answer.places_compared} compared)"
        )
    if not echo_formatted(answer.results, answer.info(), as_json, as_csv, as_geojson, CSV_COLUMNS):
        read = f"{answer.lang} → " if answer.lang else ""
        via = f", route {answer.route}" if answer.route else ""
        console.print(
            f"[bold]{answer.query}[/bold]: "
            + (
                f"split {answer.after}"
                if answer.before == answer.after
                else f"before {answer.before}, after {answer.after}"
            )
            + " "
            f"(archive {answer.first_date} to {answer.last_date}; {read}{answer.space}{via})"
        )
        console.print(_table(answer.results))


def _table(results):
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold")
    for name in ("#", "change", "place", "lat, lon", "before", "after", "scores", "tiles"):
        table.add_column(name, justify="left" if name in ("lat, lon", "scores") else "right")
    for r in results:
        if r.similarity is not None:
            scores = f"cosine {r.similarity:.4f}"
        else:
            scores = f"{r.before_score:.4f} → {r.after_score:.4f}"
            if r.from_before_score is not None:
                scores += f"; from {r.from_before_score:.4f} → {r.from_after_score:.4f}"
        table.add_row(
            str(r.rank),
            f"{r.change:.4f}",
            str(r.place_id),
            f"{r.lat:.4f}, {r.lon:.4f}" if r.lat is not None else "-",
            f"{r.before_acquisitions} ({r.before_used} used)",
            f"{r.after_acquisitions} ({r.after_used} used)",
            scores,
            f"{r.before_tile_id} → {r.after_tile_id}",
        )
    return table
