"""`msearch locate`: where in a tile a text matches, as outlines of its best-scoring patches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from msearch.cli.common import (
    CATALOGUE_OPTION,
    INDEX_OPTION,
    check_output,
    console,
    err_console,
    fail,
    search_errors,
    space_checkpoints,
    write_text,
)


def locate(
    tile: str = typer.Argument(..., help="The tile: its id, or its catalogued key or path."),
    text: str = typer.Argument(..., help="What to look for in it, in any of the ten languages."),
    threshold: Optional[float] = typer.Option(
        None, help="Outline patches scoring at least this. Default: Otsu's threshold of the tile's patch scores."
    ),
    geojson: Optional[Path] = typer.Option(
        None, "--geojson", help="Also write the outlines as a GeoJSON FeatureCollection (WGS84) to this file."
    ),
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
    lang: str = typer.Option("auto", help="The text's language (auto, en, pt, es, fr, de, nl, it, zh, ko or ru)."),
    space: Optional[str] = typer.Option(None, help="Score in this encoder space instead of the language's default."),
    checkpoint: Optional[List[str]] = typer.Option(
        None, help="SPACE=PATH: local weights for a space's encoder (repeatable)."
    ),
):
    """Outline the patches of TILE where TEXT matches (per-patch scores, SegEarth-OV's method), in WGS84."""
    if not text.strip():
        fail("the query TEXT is empty: give some words to look for in the tile")
    checkpoints = space_checkpoints(checkpoint)
    if geojson is not None:
        check_output(geojson, "--geojson")

    from msearch.indexer.readers import ArchivePixels
    from msearch.search.heatmaps import heat_maps, heat_target, outline
    from msearch.search.searcher import Searcher

    try:
        searcher = Searcher(index, checkpoints, pixels=ArchivePixels(), catalogue=catalogue)
        tile_id = searcher.catalogued_tile_id(tile)
        target = heat_target(searcher, text=text, lang=lang, space=space)
        [heat_map] = heat_maps(searcher, [tile_id], target)
        collection = outline(heat_map, threshold)
    except search_errors() as exc:
        fail(str(exc))
    about = collection["properties"]
    how = "Otsu's threshold of its patch scores" if about["threshold_method"] == "otsu" else "given"
    console.print(
        f"[bold]{text.strip()}[/bold] in tile {tile_id} ({target.space}): {len(collection['features'])} outline"
        f"{'' if len(collection['features']) == 1 else 's'} of patches scoring at least {about['threshold']:.4f} ({how})"
    )
    for number, feature in enumerate(collection["features"], start=1):
        props = feature["properties"]
        ring = feature["geometry"]["coordinates"][0]
        lon = sum(p[0] for p in ring[:-1]) / (len(ring) - 1)
        lat = sum(p[1] for p in ring[:-1]) / (len(ring) - 1)
        console.print(
            f"  {number}. mean score {props['mean_score']:.4f}, highest {props['max_score']:.4f}, "
            f"{props['patches']} patch{'' if props['patches'] == 1 else 'es'}, around {lat:.5f}, {lon:.5f}"
        )
    if geojson is not None:
        write_text(geojson, json.dumps(collection))
        err_console.print(f"wrote {geojson}")
