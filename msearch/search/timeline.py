"""A place's timeline: every acquisition of one place in date order, each scored against a text or an example.

The score of an acquisition is the score a query gives that tile: the query's vector (the same encoder and
normalisation, from the same query cache) against the tile's stored vector, searched as a query restricted
to the place's tiles searches (Searcher.search_vector). An acquisition without a vector in the space (an RGB
file, for a multispectral space) is listed with no score. A text beyond English is read by a route
(Searcher.text_vector): rgb, scored in the multilingual RGB space, or bridge, carried into the multispectral
space by the bridge and scored there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import and_, select

from msearch.schema import catalog
from msearch.search.searcher import QueryError, Searcher

CSV_COLUMNS = ("date", "score", "tile_id", "cloud", "nodata", "path", "level")


class UnknownPlace(QueryError):
    """A place id (or a tile, or a point) that names no place of the index."""


@dataclass(frozen=True)
class TimelinePoint:
    tile_id: int
    date: str | None
    score: float | None
    cloud: float | None
    nodata: float | None
    path: str
    level: str | None


@dataclass
class Timeline:
    place_id: int
    query: str
    lang: str | None
    space: str
    route: str | None  # a text beyond English: rgb or bridge (Searcher.text_vector)
    lon: float | None
    lat: float | None
    footprint: dict | None
    acquisitions: list[TimelinePoint] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False, indent=2)


def resolve_place(searcher: Searcher, place: str | int | None = None, *, at: tuple[float, float] | None = None) -> int:
    """The place id named by a place id, `tile:ID` (the place of that tile) or a point (`at`: lon, lat)."""
    if at is not None:
        lon, lat = at
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise QueryError(f"--at {lon},{lat} is not a WGS84 longitude, latitude pair")
        p = catalog.places.c
        with searcher.store.engine.connect() as conn:
            rows = conn.execute(
                select(p.id, p.centre_lon, p.centre_lat).where(
                    and_(p.min_lon <= lon, p.max_lon >= lon, p.min_lat <= lat, p.max_lat >= lat)
                )
            ).all()
        if not rows:
            raise UnknownPlace(f"no place of this index covers {lon},{lat}")
        # Places on other grids may overlap there: the one whose centre is nearest.
        return int(min(rows, key=lambda r: ((r.centre_lon - lon) ** 2 + (r.centre_lat - lat) ** 2, r.id)).id)
    text = str(place).strip()
    is_tile = text.startswith("tile:")
    number = text.removeprefix("tile:")
    if not (number.isascii() and number.isdigit() and len(number) <= 18):
        raise QueryError(f"{text[:40]!r} names no place: give a place id, tile:TILE_ID, or --at LON,LAT")
    found = searcher.store.place_of_tile(int(number)) if is_tile else int(number)
    if found is None or searcher.store.place(found) is None:
        raise UnknownPlace(f"no {'tile' if is_tile else 'place'} with id {number} in this index")
    return int(found)


def place_timeline(
    searcher: Searcher,
    place_id: int,
    text: str | None = None,
    *,
    like: str | None = None,
    lang: str = "auto",
    space: str | None = None,
    route: str | None = None,
) -> Timeline:
    """Every acquisition of the place, by date (then tile id), scored against the text or the example. `route`:
    how a text beyond English is read (Searcher.text_vector: rgb or bridge; left out, the stored route
    comparison's choice, else rgb)."""
    if (text is None) == (like is None):
        raise QueryError("give a query TEXT or --like EXAMPLE (one of them) to score the place's acquisitions")
    if route is not None and like is not None:
        raise QueryError("--route is how a TEXT beyond English is read; --like scores by an example")
    place = searcher.store.place(place_id)
    rows = searcher.store.place_acquisitions(place_id) if place is not None else []
    if not rows:
        raise UnknownPlace(f"no place with id {place_id} in this index")
    if like is not None:
        name, vector, _ = searcher.example_vector(like, space)
        lang_read, route_read, query = None, None, f"like:{like}"
    else:
        read = searcher.text_vector(text, lang, space, route)
        name, vector, lang_read, route_read, query = read.space, read.vector, read.lang, read.route, text
    ids = [int(r["id"]) for r in rows]
    with searcher.store.engine.connect() as conn:
        scored_ids = np.asarray(
            sorted(
                conn.execute(
                    select(catalog.vectors.c.tile_id).where(
                        catalog.vectors.c.space == name, catalog.vectors.c.tile_id.in_(ids)
                    )
                ).scalars()
            ),
            dtype=np.int64,
        )
    # The query's own search, restricted to the place's tiles: the scores a query gives them.
    scores = dict(searcher.search_vector(name, vector, len(scored_ids), scored_ids)) if len(scored_ids) else {}
    return Timeline(
        place_id=int(place_id),
        query=query,
        lang=lang_read,
        space=name,
        route=route_read,
        lon=place["centre_lon"],
        lat=place["centre_lat"],
        footprint=json.loads(place["footprint"]) if place["footprint"] else None,
        acquisitions=[
            TimelinePoint(
                tile_id=int(r["id"]),
                date=r["acquired"],
                score=scores.get(int(r["id"])),
                cloud=r["cloud_cover"],
                nodata=r["nodata_fraction"],
                path=r["key"],
                level=r["level"],
            )
            for r in rows
        ],
    )


def plot_timeline(timeline: Timeline, path: str | Path) -> None:
    """A PNG of score over time: a line through the scored acquisitions, each marked, cloudier ones paler."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise QueryError("--plot draws with matplotlib: pip install 'msearch[plot]'") from None

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    points = [p for p in timeline.acquisitions if p.score is not None and p.date]
    if not points:
        raise QueryError(f"place {timeline.place_id} has no dated acquisition with a vector in {timeline.space!r}")
    dates = np.array([p.date[:10] for p in points], dtype="datetime64[D]").astype("O")
    scores = [p.score for p in points]
    clear = [1.0 - min(p.cloud or 0.0, 100.0) / 125 for p in points]
    figure, axes = plt.subplots(figsize=(8, 3.2), dpi=100)
    try:
        axes.plot(dates, scores, color="#1f6feb", linewidth=1.2, zorder=1)
        axes.scatter(dates, scores, c=[(0.12, 0.43, 0.92, a) for a in clear], edgecolors="#1f3f7a", zorder=2)
        axes.set_ylabel("score")
        axes.set_title(f"place {timeline.place_id}: {timeline.query}"[:90], fontsize=10)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(axes.xaxis.get_major_locator()))
        axes.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)
