"""`msearch detect`: a detector fitted on a collection's labels, ranking the archive by probability
(msearch.search.detect)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from msearch.cli.common import (
    BBOX_OPTION,
    CATALOGUE_OPTION,
    DATE_FROM_OPTION,
    DATE_TO_OPTION,
    INDEX_OPTION,
    MAX_CLOUD_OPTION,
    check_output,
    collection_errors,
    console,
    err_console,
    fail,
    parse_bbox,
    parse_date,
    plural,
    warn_missing,
    write_text,
)


def detect(
    name: str = typer.Argument(..., help="The collection whose examples the detector is fitted on."),
    index: Optional[Path] = INDEX_OPTION,
    catalogue: Optional[str] = CATALOGUE_OPTION,
    top_k: Optional[int] = typer.Option(
        None, "--top-k", "-k", min=1, help="Number of detections (default 100, or all above --threshold)."
    ),
    threshold: Optional[float] = typer.Option(None, help="Only tiles with at least this probability (0-1)."),
    space: Optional[str] = typer.Option(None, help="Check that the collection is of this space."),
    bbox: Optional[str] = BBOX_OPTION,
    date_from: Optional[str] = DATE_FROM_OPTION,
    date_to: Optional[str] = DATE_TO_OPTION,
    max_cloud: Optional[float] = MAX_CLOUD_OPTION,
    exhaustive: bool = typer.Option(
        False, "--exhaustive", help="Score every stored vector (chunked) instead of the search index's candidates."
    ),
    per_place: bool = typer.Option(
        False, "--per-place", help="Rank places (each by its most probable acquisition) instead of tiles."
    ),
    suggest: Optional[int] = typer.Option(
        None, min=1, help="List the N unlabelled tiles the detector is least sure of (probability nearest 0.5)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print detections as JSON."),
    as_csv: bool = typer.Option(False, "--csv", help="Print detections as CSV."),
    as_geojson: bool = typer.Option(False, "--geojson", help="Print detections as a GeoJSON FeatureCollection."),
    out: Optional[Path] = typer.Option(
        None, help="Also write the detections to FILE.parquet (GeoParquet) or FILE.geojson, with `probability`."
    ),
):
    """Fit a detector (logistic regression) on a collection's examples and rank the archive by probability."""
    if sum([as_json, as_csv, as_geojson]) > 1:
        fail("choose one of --json, --csv, --geojson")
    if threshold is not None and not 0 < threshold < 1:
        fail(f"--threshold is a probability between 0 and 1 (exclusive), got {threshold}")
    if suggest is not None and (top_k is not None or threshold is not None or exhaustive or per_place):
        fail("--suggest lists the tiles to label next: leave out --top-k, --threshold, --exhaustive and --per-place")
    if out is not None:
        if out.suffix.lower() not in (".parquet", ".geojson"):
            fail(f"--out writes FILE.parquet (GeoParquet) or FILE.geojson, not {out.name!r}")
        check_output(out, "--out")
    bounds = parse_bbox(bbox)
    dates = parse_date(date_from, "--date-from"), parse_date(date_to, "--date-to")
    from msearch.search import formats
    from msearch.search.detect import DETECTION_CSV_COLUMNS, Detector, write_geoparquet
    from msearch.search.searcher import Filters, Searcher

    try:
        filters = Filters(bbox=bounds, date_from=dates[0], date_to=dates[1], max_cloud=max_cloud)
        searcher = Searcher(index, catalogue=catalogue)
        detector = Detector(searcher, name, space)
        if suggest is not None:
            answer = detector.suggest(suggest, filters)
        else:
            answer = detector.detect(top_k, threshold, filters, exhaustive, per_place)
    except collection_errors() as exc:
        fail(str(exc))
    warn_missing(answer.collection)
    probe = answer.probe
    cv = probe.cv
    fitted = (
        f"fitted on {plural(probe.positives, 'positive')} and {plural(probe.negatives, 'negative')}"
        + (f" + {probe.background} unlabelled tiles drawn as negatives" if probe.background else "")
        + (
            f"; cross-validated ({cv['folds']} folds): precision {cv['precision']:.3f}, recall {cv['recall']:.3f}, "
            f"average precision {cv['average_precision']:.3f}"
            if "precision" in cv
            else "; too few examples to cross-validate"
        )
    )
    err_console.print(fitted)
    if answer.truncated:
        err_console.print("[yellow]note:[/yellow] the candidate search stopped at its depth limit: use --exhaustive")
    if as_json:
        typer.echo(formats.to_json(answer.results, answer.info()))
    elif as_csv:
        typer.echo(formats.to_csv(answer.results, DETECTION_CSV_COLUMNS), nl=False)
    elif as_geojson:
        typer.echo(formats.to_geojson(answer.results, answer.info()))
    else:
        what = "label these next" if answer.suggestions else plural(len(answer.results), "detection")
        if answer.per_place:
            what += ", one per place"
        console.print(f"[bold]{name}[/bold]  ({what}, space {answer.collection.space})")
        console.print(formats.results_table(answer.results, probability=True))
    if out is not None:
        if out.suffix.lower() == ".parquet":
            write_geoparquet(searcher.store, answer, out)
        else:
            write_text(out, formats.to_geojson(answer.results, answer.info()))
        err_console.print(f"wrote {len(answer.results)} detections to {out}")
