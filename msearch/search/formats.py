"""Search results as the terminal table, JSON, CSV and GeoJSON.

`query_info` describes the search: it must hold "query" (the text as typed), "lang" (the language code the
query was read as) and "space" (the embedding space searched); any further keys (such as "k") are kept.

JSON schema (`to_json`):

    {"query": str, "lang": str, "space": str, ...further query_info keys...,
     "results": [{"rank": int, "score": float, "tile_id": int, "path": str, "root": str, "space": str,
                  "lon": float|null, "lat": float|null, "date": str|null, "tile": str|null,
                  "cloud": float|null, "footprint": GeoJSON Polygon|null, "place_id": int|null,
                  "acquisitions": int|null, "dates": [str|null, ...]|null, "date_tile_ids": [int, ...]|null},
                 ...]}

Per place (the default search) each result is a place: its best acquisition's fields, `acquisitions` (how many
of the place's acquisitions pass the filters) and `dates` (their acquisition times, best first, at most 20)
with `date_tile_ids` (the tile of each); one result per acquisition (--all-acquisitions) leaves those null. CSV
writes a list as one cell, its values joined by ";".

GeoJSON (`to_geojson`, RFC 7946): a FeatureCollection with one Feature per result, best first. Its geometry
is the footprint Polygon, or a Point at the centre when there is no footprint, or null when neither is
known; its properties are the result's other fields. The query_info entries are foreign members of the
FeatureCollection, which GIS software ignores.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict

from rich.table import Table

from msearch.search.results import SearchResult

QUERY_INFO_KEYS = ("query", "lang", "space")
CSV_COLUMNS = (
    "rank",
    "score",
    "path",
    "lat",
    "lon",
    "date",
    "tile",
    "cloud",
    "space",
    "tile_id",
    "root",
    "place_id",
    "acquisitions",
    "dates",
)
# A cell of a list (a place's dates, best first) joins its values with this.
CSV_LIST_SEPARATOR = ";"


def to_json(results: list[SearchResult], query_info: dict) -> str:
    document = {**_checked_query_info(query_info), "results": [asdict(result) for result in results]}
    # allow_nan=False: NaN is not JSON, and a NaN score would be a bug upstream worth failing on.
    return json.dumps(document, ensure_ascii=False, allow_nan=False, indent=2)


def to_csv(results: list, columns: tuple[str, ...] = CSV_COLUMNS) -> str:
    """One row per result (a SearchResult, or another record: a changed place, a timeline's acquisition) in
    `columns` order, with a header; unknown values are empty cells, lists are joined by CSV_LIST_SEPARATOR."""
    buffer = io.StringIO()
    # "\n" rather than csv's default "\r\n": the text goes to a terminal or a redirect, not a Windows tool.
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for result in results:
        writer.writerow([_csv_cell(getattr(result, column)) for column in columns])
    return buffer.getvalue()


def _csv_cell(value) -> object:
    if value is None:
        return ""
    if isinstance(value, list):
        return CSV_LIST_SEPARATOR.join("" if v is None else str(v) for v in value)
    return value


def to_geojson(results: list[SearchResult], query_info: dict) -> str:
    return json.dumps(geojson_collection(results, query_info), ensure_ascii=False, allow_nan=False, indent=2)


def geojson_collection(results: list[SearchResult], query_info: dict) -> dict:
    """The FeatureCollection of to_geojson, as a dict (for a caller that serialises it itself)."""
    features = []
    for result in results:
        properties = asdict(result)
        del properties["footprint"]
        if result.footprint is not None:
            geometry = result.footprint
        elif result.lon is not None:
            geometry = {"type": "Point", "coordinates": [result.lon, result.lat]}
        else:
            geometry = None
        features.append({"type": "Feature", "geometry": geometry, "properties": properties})
    return {"type": "FeatureCollection", **_checked_query_info(query_info), "features": features}


def results_table(results: list[SearchResult], probability: bool = False) -> Table:
    """The default terminal output: one row per result, best first; a detector's results (`probability`) show
    their probability and label instead of the score."""
    table = Table(show_edge=False, header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("probability" if probability else "score", justify="right")
    table.add_column("file", overflow="fold")
    table.add_column("lat, lon", justify="right")
    table.add_column("date")
    table.add_column("tile")
    table.add_column("id", justify="right")
    per_place = any(result.acquisitions is not None for result in results)
    if per_place:
        table.add_column("place", justify="right")
        table.add_column("dates", justify="right")
    for result in results:
        place = f"{result.lat:.4f}, {result.lon:.4f}" if result.lat is not None else "-"
        value = f"{result.probability:.3f}" + (f" ({result.label})" if result.label else "") if probability else None
        table.add_row(
            str(result.rank),
            value or f"{result.score:.3f}",
            result.path,
            place,
            result.date or "-",
            result.tile or "-",
            str(result.tile_id),
            *(
                [str(result.place_id) if result.place_id is not None else "-", str(result.acquisitions)]
                if per_place
                else []
            ),
        )
    return table


def _checked_query_info(query_info: dict) -> dict:
    missing = [key for key in QUERY_INFO_KEYS if key not in query_info]
    if missing:
        raise ValueError(f"query_info lacks {', '.join(missing)} (it needs {', '.join(QUERY_INFO_KEYS)})")
    if "results" in query_info or "features" in query_info or "type" in query_info:
        raise ValueError("query_info must not hold 'results', 'features' or 'type': they are the output's own")
    return dict(query_info)
