"""`msearch query`: search an index by text or by example."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from msearch.cli.common import (
    BBOX_OPTION,
    CATALOGUE_OPTION,
    DATE_FROM_OPTION,
    DATE_TO_OPTION,
    INDEX_OPTION,
    MAX_CLOUD_OPTION,
    band_order_option,
    check_folder,
    check_output,
    console,
    echo_formatted,
    err_console,
    fail,
    parse_bbox,
    parse_date,
    search_errors,
    space_checkpoints,
    write_bytes,
    write_text,
)


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
    bbox: Optional[str] = BBOX_OPTION,
    date_from: Optional[str] = DATE_FROM_OPTION,
    date_to: Optional[str] = DATE_TO_OPTION,
    max_cloud: Optional[float] = MAX_CLOUD_OPTION,
    tile_id: Optional[str] = typer.Option(None, help="MGRS tile, e.g. 33NZA."),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
    as_csv: bool = typer.Option(False, "--csv", help="Print results as CSV."),
    as_geojson: bool = typer.Option(
        False, "--geojson", help="Print results as a GeoJSON FeatureCollection of footprints."
    ),
    html: Optional[Path] = typer.Option(
        None, help="Also write one self-contained HTML page with a quicklook per result."
    ),
    heatmaps: Optional[Path] = typer.Option(
        None,
        help="Also write, per result, where in it the query matches: RANK_ID.tif (one float32 score per patch, "
        "georeferenced) and RANK_ID.png (the quicklook with the heat over it), into this folder.",
    ),
    checkpoint: Optional[List[str]] = typer.Option(
        None, help="SPACE=PATH: local weights for a space's encoder (repeatable)."
    ),
    all_acquisitions: bool = typer.Option(
        False,
        "--all-acquisitions",
        help="One result per acquisition (tile), as ranked before places: by default each result is a place, "
        "its best acquisition with the dates of all its acquisitions that pass the filters.",
    ),
):
    """Search an index by text (or by example with --like)."""
    if sum([as_json, as_csv, as_geojson]) > 1:
        fail("choose one of --json, --csv, --geojson")
    if (text is None) == (like is None):
        fail("give a query TEXT or --like EXAMPLE (one of them)")
    if band_order is not None and like is None:
        fail("--band-order tells how to read the file given to --like; a text query reads no files")
    if route is not None and like is not None:
        fail("--route is how a text query beyond English reaches the index; --like searches by example")
    checkpoints = space_checkpoints(checkpoint)
    if text is not None:
        from msearch.search.language import parse_language

        try:
            parse_language(lang)
        except ValueError as exc:
            fail(f"--lang: {exc}")
    elif lang != "auto":
        fail("--lang is the language of a query TEXT; --like searches by example")
    bounds = parse_bbox(bbox)
    dates = parse_date(date_from, "--date-from"), parse_date(date_to, "--date-to")
    order = band_order_option(band_order)
    if html is not None:
        check_output(html, "--html")
    if heatmaps is not None:
        check_folder(heatmaps, "--heatmaps")

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
            answer = searcher.like(like, top_k=top_k, space=space, filters=filters, all_acquisitions=all_acquisitions)
        else:
            answer = searcher.query(
                text,
                top_k=top_k,
                lang=lang,
                space=space,
                fuse=fuse,
                filters=filters,
                route=route,
                all_acquisitions=all_acquisitions,
            )
    except search_errors() as exc:
        fail(str(exc))
    if answer.truncated:
        err_console.print(
            "[yellow]note:[/yellow] the query is longer than the text encoder's 77 tokens and was truncated"
        )
    if len(answer.results) < top_k and answer.matching_tiles is not None:
        places = f" of {len(answer.results)} places" if answer.per_place else ""
        err_console.print(f"only {answer.matching_tiles} tiles{places} match the filters")
    if not echo_formatted(answer.results, answer.info(), as_json, as_csv, as_geojson):
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
        write_text(html, html_page(answer.results, images, answer.info()))
        err_console.print(f"wrote {html}")
    if heatmaps is not None:
        write_heatmaps(searcher, answer, heatmaps, text=text, like=like, lang=lang, space=space)


def write_heatmaps(searcher, answer, folder: Path, **target) -> None:
    """--heatmaps: each result's heat GeoTIFF and overlay PNG; a result whose tile cannot be read again is
    named on stderr and left out."""
    from msearch.search.heatmaps import blend, geotiff_bytes, heat_maps, heat_rgba, heat_target
    from msearch.search.quicklook import png_bytes

    skipped: list[tuple[int, str]] = []
    try:
        maps = heat_maps(searcher, [r.tile_id for r in answer.results], heat_target(searcher, **target), True, skipped)
    except search_errors() as exc:
        fail(str(exc))
    ranks = {result.tile_id: result.rank for result in answer.results}
    for heat_map in maps:
        stem = folder / f"{ranks[heat_map.tile_id]}_{heat_map.tile_id}"
        write_bytes(stem.with_suffix(".tif"), geotiff_bytes(heat_map))
        write_bytes(stem.with_suffix(".png"), png_bytes(blend(heat_map.quicklook, heat_rgba(heat_map))))
    for _, why in skipped:
        err_console.print(f"[yellow]no heat map:[/yellow] {why}")
    err_console.print(f"wrote {len(maps)} heat maps ({maps[0].space if maps else 'none'}) to {folder}")
