"""One hit of a text search, as every output format (table, JSON, CSV, GeoJSON, HTML) reads it."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SearchResult:
    """A tile that matched a query.

    `path` is the file as indexed, relative to `root` (the archive folder it was indexed under); `lon`/`lat`
    are the tile's centre in WGS84 degrees; `date` is the acquisition date or time in ISO 8601; `tile` is the
    Sentinel-2 MGRS tile ("32UPU"); `cloud` is cloud cover in percent; `space` names the encoder whose
    embedding space was searched; `footprint` is a GeoJSON Polygon geometry in WGS84 (lon, lat order);
    `place_id` is the place the tile is an acquisition of (msearch.store.places).

    Numbers are stored as plain Python int/float, so NumPy scalars from a nearest-neighbour search may be
    passed in. A footprint is checked and normalised on the way in: coordinates within WGS84 bounds (which
    catches projected metres and swapped axes past +-90), rings closed, exterior ring counter-clockwise and
    holes clockwise (RFC 7946's right-hand rule).
    """

    rank: int
    score: float
    tile_id: int
    path: str
    root: str
    space: str
    lon: float | None = None
    lat: float | None = None
    date: str | None = None
    tile: str | None = None
    cloud: float | None = None
    footprint: dict | None = None
    place_id: int | None = None
    # Per place (the default search): how many of the place's acquisitions pass the filters, and the dates
    # (acquisition times) of at most 20 of them, best first, with the tile id of each; None per acquisition.
    acquisitions: int | None = None
    dates: list[str | None] | None = None
    date_tile_ids: list[int] | None = None

    def __post_init__(self):
        object.__setattr__(self, "rank", int(self.rank))
        object.__setattr__(self, "score", float(self.score))
        object.__setattr__(self, "tile_id", int(self.tile_id))
        object.__setattr__(self, "path", str(self.path))
        object.__setattr__(self, "root", str(self.root))
        for name in ("lon", "lat", "cloud"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(value))
        if (self.lon is None) != (self.lat is None):
            raise ValueError(f"tile {self.tile_id}: lon and lat must both be given or both be None")
        if self.lon is not None:
            _check_lon_lat(self.lon, self.lat, f"tile {self.tile_id} centre")
        if self.footprint is not None:
            object.__setattr__(self, "footprint", _normalised_polygon(self.footprint, f"tile {self.tile_id}"))


def _normalised_polygon(geometry: dict, what: str) -> dict:
    """A GeoJSON Polygon in WGS84 with closed rings, exterior counter-clockwise and holes clockwise."""
    if not isinstance(geometry, dict) or geometry.get("type") != "Polygon":
        raise ValueError(f"{what}: footprint must be a GeoJSON Polygon geometry, got {geometry!r:.80}")
    rings = []
    for index, ring in enumerate(geometry.get("coordinates") or []):
        points = [[float(x), float(y)] for x, y, *_ in ring]
        for lon, lat in points:
            _check_lon_lat(lon, lat, f"{what} footprint")
        if points and points[0] != points[-1]:
            points.append(list(points[0]))
        if len(points) < 4:
            raise ValueError(f"{what}: footprint ring {index} has fewer than 3 distinct corners")
        exterior = index == 0
        if (_signed_area(points) > 0) != exterior:
            points.reverse()
        rings.append(points)
    if not rings:
        raise ValueError(f"{what}: footprint polygon has no rings")
    return {"type": "Polygon", "coordinates": rings}


def _check_lon_lat(lon: float, lat: float, what: str) -> None:
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        raise ValueError(f"{what}: ({lon}, {lat}) is not a WGS84 longitude, latitude pair")


def _signed_area(ring: list[list[float]]) -> float:
    """Shoelace formula: positive for a counter-clockwise ring."""
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:])) / 2
