"""Places: the ground a tile covers on its grid, shared by every acquisition of that ground.

Sentinel-2 sees a place again every few days, and every scene of one MGRS tile lies on the same UTM grid, so a
chip window names the same ground in each acquisition. Two tiles are acquisitions of one place when they lie on
the same grid: the same CRS, the same pixel size (x and y), the same size in pixels, and upper-left corners
less than half a pixel apart on each axis. Layout does not matter (a chip of a SAFE product, a per-band folder,
a COG or a STAC item of the same ground are one place), nor does the processing level (an L1C and an L2A of
one date are two acquisitions of one place). A tile without a CRS or a corner is a place of its own.

The key of a place is its corner in whole pixels (`grid_col`, `grid_row`); a tile is matched against the places
whose key is within one of its own, then by distance, so corners that straddle a rounding boundary still meet.

Accessors for the search layer (all take a Connection; `IndexStore` has the same ones on its engine):
- `place_ids_of(conn, tile_ids)`     {tile id: place id}, for grouping search results per place;
- `place_row(conn, place_id)`        the place (grid, geometry), None when unknown;
- `acquisitions(conn, place_id)`     the place's tile rows in date order (acquired, then id);
- `place_of_tile(conn, tile_id)`     the place id of one tile, None when the tile is unknown;
- `acquisitions_by_place(conn, ids, where)`  {place id: [(tile id, acquired) in date order]}, optionally
                                     only those passing a filter clause on the tiles table;
- `place_counts(conn)`               (places, acquisitions): places that have at least one tile, and tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import delete, exists, func, select
from sqlalchemy.engine import Connection

from msearch.schema import catalog

# Pixel sizes are read from files as floats: equal grids agree to far better than this.
PIXEL_SIZE_RTOL = 1e-6
# The largest corner distance, in pixels, at which two tiles are still one place.
SAME_PIXEL = 0.5
GEOMETRY_COLUMNS = ("min_lon", "min_lat", "max_lon", "max_lat", "centre_lon", "centre_lat", "footprint")


@dataclass(frozen=True)
class Grid:
    """Where a tile lies: what makes two tiles one place."""

    crs: str
    pixel_size: float
    pixel_height: float
    width: int
    height: int
    origin_x: float
    origin_y: float

    @property
    def key(self) -> tuple[int, int]:
        return round(self.origin_x / self.pixel_size), round(self.origin_y / self.pixel_height)

    def same_place(self, other: Grid) -> bool:
        return (
            self.crs == other.crs
            and (self.width, self.height) == (other.width, other.height)
            and math.isclose(self.pixel_size, other.pixel_size, rel_tol=PIXEL_SIZE_RTOL)
            and math.isclose(self.pixel_height, other.pixel_height, rel_tol=PIXEL_SIZE_RTOL)
            and abs(self.origin_x - other.origin_x) < SAME_PIXEL * self.pixel_size
            and abs(self.origin_y - other.origin_y) < SAME_PIXEL * self.pixel_height
        )

    def distance(self, other: Grid) -> float:
        return math.hypot(
            (self.origin_x - other.origin_x) / self.pixel_size, (self.origin_y - other.origin_y) / self.pixel_height
        )


def grid_of(row) -> Grid | None:
    """The grid of a tile row (a mapping with the tiles columns), None when it lacks one."""
    values = [row.get(name) for name in ("crs", "pixel_size", "pixel_height", "width", "height", "origin_x")]
    origin_y = row.get("origin_y")
    if any(v is None for v in values) or origin_y is None or not row["pixel_size"] or not row["pixel_height"]:
        return None
    crs, pixel_size, pixel_height, width, height, origin_x = values
    return Grid(crs, float(pixel_size), float(pixel_height), int(width), int(height), float(origin_x), float(origin_y))


class PlaceAssigner:
    """Finds or makes the place of each tile row, inside the caller's transaction. Places made or found are
    remembered for the assigner's life (one batch, one migration): the rows of a batch share places."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self._known: dict[tuple, list[tuple[Grid, int]]] = {}

    def place_for(self, row) -> int:
        grid = grid_of(row)
        if grid is None:
            return self._new_place(None, row)
        col, grid_row = grid.key
        coarse = (grid.crs, grid.width, grid.height)
        candidates = self._places_around(coarse, col, grid_row)
        matching = [(grid.distance(g), place_id) for g, place_id in candidates if grid.same_place(g)]
        if matching:
            return min(matching)[1]
        place_id = self._new_place(grid, row)
        self._known.setdefault((*coarse, col, grid_row), []).append((grid, place_id))
        return place_id

    def _places_around(self, coarse: tuple, col: int, row: int) -> list[tuple[Grid, int]]:
        """The places whose key is within one of (col, row): from memory when all nine cells were read before,
        else in one statement (the nine cells are then remembered, empty ones too)."""
        cells = [(*coarse, col + dc, row + dr) for dc in (-1, 0, 1) for dr in (-1, 0, 1)]
        if any(cell not in self._known for cell in cells):
            p = catalog.places.c
            crs, width, height = coarse
            rows = self.conn.execute(
                select(
                    p.id,
                    p.crs,
                    p.pixel_size,
                    p.pixel_height,
                    p.width,
                    p.height,
                    p.origin_x,
                    p.origin_y,
                    p.grid_col,
                    p.grid_row,
                ).where(
                    p.crs == crs,
                    p.width == width,
                    p.height == height,
                    p.grid_col.between(col - 1, col + 1),
                    p.grid_row.between(row - 1, row + 1),
                )
            ).all()
            for cell in cells:
                self._known[cell] = []
            for r in rows:
                self._known[(*coarse, r.grid_col, r.grid_row)].append((grid_of(r._mapping), r.id))
        return [place for cell in cells for place in self._known[cell]]

    def _new_place(self, grid: Grid | None, row) -> int:
        values = {name: row.get(name) for name in GEOMETRY_COLUMNS}
        if grid is not None:
            values.update(vars(grid))
            values["grid_col"], values["grid_row"] = grid.key
        else:
            values.update({name: row.get(name) for name in ("crs", "pixel_size", "width", "height")})
        return self.conn.execute(catalog.places.insert().values(**values).returning(catalog.places.c.id)).scalar_one()


def delete_empty_places(conn: Connection, place_ids) -> None:
    """Delete those of `place_ids` that no tile belongs to any more (after tiles were deleted or moved)."""
    ids = sorted({int(i) for i in place_ids if i is not None})
    t, p = catalog.tiles.c, catalog.places.c
    for start in range(0, len(ids), 10_000):
        chunk = ids[start : start + 10_000]
        conn.execute(delete(catalog.places).where(p.id.in_(chunk), ~exists().where(t.place_id == p.id)))


# -- accessors for the search layer ---------------------------------------------------------------------


def place_ids_of(conn: Connection, tile_ids) -> dict[int, int | None]:
    """{tile id: place id} for the given tiles (unknown tiles left out; None for a tile without a place)."""
    wanted = sorted({int(i) for i in tile_ids})
    found: dict[int, int | None] = {}
    for start in range(0, len(wanted), 10_000):
        chunk = wanted[start : start + 10_000]
        found.update(
            conn.execute(
                select(catalog.tiles.c.id, catalog.tiles.c.place_id).where(catalog.tiles.c.id.in_(chunk))
            ).all()
        )
    return found


def place_of_tile(conn: Connection, tile_id: int) -> int | None:
    return conn.execute(select(catalog.tiles.c.place_id).where(catalog.tiles.c.id == int(tile_id))).scalar()


def place_row(conn: Connection, place_id: int) -> dict | None:
    """The place's row: its grid and geometry (footprint as GeoJSON text, as tiles store it); None when unknown."""
    row = conn.execute(select(catalog.places).where(catalog.places.c.id == int(place_id))).mappings().first()
    return dict(row) if row is not None else None


def acquisitions(conn: Connection, place_id: int) -> list[dict]:
    """The tile rows of a place in date order (by `acquired`, undated last, then by id)."""
    t = catalog.tiles.c
    rows = conn.execute(
        select(catalog.tiles).where(t.place_id == int(place_id)).order_by(t.acquired.is_(None), t.acquired, t.id)
    ).mappings()
    return [dict(row) for row in rows]


def acquisitions_by_place(conn: Connection, place_ids, where=None) -> dict[int, list[tuple[int, str | None]]]:
    """{place id: [(tile id, acquired), ...] in date order} for the given places; `where` (a clause on the
    tiles table, e.g. a search's filters) keeps only the acquisitions that pass it. Places left without
    acquisitions are left out."""
    wanted = sorted({int(i) for i in place_ids})
    t = catalog.tiles.c
    grouped: dict[int, list[tuple[int, str | None]]] = {}
    for start in range(0, len(wanted), 10_000):
        statement = select(t.place_id, t.id, t.acquired).where(t.place_id.in_(wanted[start : start + 10_000]))
        if where is not None:
            statement = statement.where(where)
        rows = conn.execute(statement.order_by(t.place_id, t.acquired.is_(None), t.acquired, t.id)).all()
        for place_id, tile_id, acquired in rows:
            grouped.setdefault(place_id, []).append((tile_id, acquired))
    return grouped


def place_counts(conn: Connection) -> tuple[int, int]:
    """(places with at least one tile, tiles): how many places the catalogue holds and their acquisitions."""
    t = catalog.tiles.c
    # A tile without a place (written by hand, not by msearch) counts as a place of its own.
    places, unplaced, tiles = conn.execute(
        select(func.count(func.distinct(t.place_id)), func.count() - func.count(t.place_id), func.count()).select_from(
            catalog.tiles
        )
    ).one()
    return int(places) + int(unplaced), int(tiles)
