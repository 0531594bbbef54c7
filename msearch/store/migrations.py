"""The catalogue's schema version, and the ordered steps that bring an older catalogue up to it.

Every open checks the version before anything is read: a new database is created at the current version
with a new catalogue id; an older catalogue is migrated in one transaction (all steps or none; SQLite and
PostgreSQL alike), holding the schema lock so that two processes opening it at once migrate it once; a
newer one (written by a later msearch) is refused, since reading it could misread it.
"""

from __future__ import annotations

import json
import uuid
from typing import Callable

import numpy as np
from sqlalchemy import bindparam, inspect, select, text, update
from sqlalchemy.engine import Connection, Engine

from msearch.schema import catalog
from msearch.schema.bands import canonical_order
from msearch.schema.catalog import SCHEMA_VERSION, normal_time
from msearch.store import vector_codec
from msearch.store.catalogue import SCHEMA_LOCK_KEY, CatalogueError, backend, display_url, has_tables, meta_value
from msearch.store.places import GEOMETRY_COLUMNS, PlaceAssigner

CATALOGUE_ID, VERSION = "catalogue_id", "schema_version"


def _add_catalogue_meta(conn: Connection) -> None:
    """1 -> 2: the catalogue gets its id and version (a catalogue of version 1 has no `catalogue_meta`); one
    written before the normal form of `bands` and `acquired` is brought to it first."""
    _tiles_in_normal_form(conn)
    catalog.catalogue_meta.create(conn)
    conn.execute(catalog.catalogue_meta.insert().values(key=CATALOGUE_ID, value=uuid.uuid4().hex))
    conn.execute(catalog.catalogue_meta.insert().values(key=VERSION, value="1"))


def _vectors_to_int8(conn: Connection) -> None:
    """2 -> 3: vectors from float32 to int8 codes with a scale (msearch.store.vector_codec), chunk by chunk
    (seq order). Every blob must be exactly a float32 vector of its space's dimension, else nothing is
    converted: a catalogue is never guessed at. Seqs and the spaces' generations stay, so the FAISS files
    (built from the float32 vectors) remain valid views. SQLite keeps the freed pages until `VACUUM`."""
    vectors, spaces = catalog.vectors.c, catalog.spaces.c
    dims = dict(conn.execute(select(spaces.name, spaces.dim)).all())
    update = catalog.vectors.update().where(vectors.seq == bindparam("at_seq")).values(vector=bindparam("stored"))
    last = 0
    while True:
        rows = conn.execute(
            select(vectors.seq, vectors.space, vectors.vector)
            .where(vectors.seq > last)
            .order_by(vectors.seq)
            .limit(MIGRATION_CHUNK)
        ).all()
        if not rows:
            return
        changed = []
        for seq, space, blob in rows:
            if len(blob) != 4 * dims[space]:
                raise CatalogueError(
                    f"cannot migrate the catalogue's vectors: vector #{seq} of {space} has {len(blob)} bytes, "
                    f"not {dims[space]} float32 values; nothing was changed"
                )
            changed.append({"at_seq": seq, "stored": vector_codec.encode(np.frombuffer(blob, dtype="<f4"))[0]})
        conn.execute(update, changed)
        last = rows[-1][0]


MIGRATION_CHUNK = 10_000
PLACE_COLUMNS = ("origin_x", "origin_y", "pixel_height", "place_id")


def _add_places(conn: Connection) -> None:
    """4 -> 5: places (msearch.store.places). Every tile gets its grid corner and y pixel size, computed from
    what the catalogue already stores, with no raster read and nothing re-embedded: its footprint is its grid's
    corners carried to WGS84 (west-south, east-south, east-north, west-north), so the west-north and
    west-south corners carried back to the tile's CRS give the corner and, over `height` pixels, the pixel
    height (to well under a millimetre on UTM grids). A tile without a CRS or whose footprint is not that ring
    (e.g. cut at the antimeridian) becomes a place of its own. Then every tile is assigned its place."""
    tiles = catalog.tiles
    catalog.places.create(conn)
    for name in PLACE_COLUMNS:
        column_type = tiles.c[name].type.compile(conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE tiles ADD COLUMN {name} {column_type}")
    next(index for index in tiles.indexes if index.name == "ix_tiles_place").create(conn)
    assigner = PlaceAssigner(conn)
    columns = [tiles.c[name] for name in ("id", "crs", "pixel_size", "width", "height", "footprint", *GEOMETRY_COLUMNS)]
    set_place = (
        update(tiles)
        .where(tiles.c.id == bindparam("tile_id"))
        .values({name: bindparam(f"new_{name}") for name in PLACE_COLUMNS})
    )
    last = 0
    while True:
        rows = (
            conn.execute(
                select(*dict.fromkeys(columns)).where(tiles.c.id > last).order_by(tiles.c.id).limit(MIGRATION_CHUNK)
            )
            .mappings()
            .all()
        )
        if not rows:
            return
        changes = []
        for row, grid in zip(rows, _grids_from_footprints(rows)):
            values = dict(row, **grid)
            values["place_id"] = assigner.place_for(values)
            changes.append({"tile_id": row["id"], **{f"new_{name}": values[name] for name in PLACE_COLUMNS}})
        conn.execute(set_place, changes)
        last = rows[-1]["id"]


def _grids_from_footprints(rows) -> list[dict]:
    """Per tile row: origin_x, origin_y and pixel_height from its WGS84 footprint (all None when unknown)."""
    from rasterio.warp import transform

    found = [{"origin_x": None, "origin_y": None, "pixel_height": None} for _ in rows]
    corners_by_crs: dict[str, list[tuple[int, float, float, float, float]]] = {}
    for i, row in enumerate(rows):
        ring = _footprint_ring(row["footprint"])
        if row["crs"] and ring and row["height"]:
            (west_lon, south_lat), (north_west_lon, north_lat) = ring[0], ring[3]
            corners_by_crs.setdefault(row["crs"], []).append((i, west_lon, south_lat, north_west_lon, north_lat))
    for crs, corners in corners_by_crs.items():
        xs = [c[1] for c in corners] + [c[3] for c in corners]
        ys = [c[2] for c in corners] + [c[4] for c in corners]
        try:
            east, north = transform("EPSG:4326", crs, xs, ys)
        except Exception:  # a CRS that PROJ cannot read today: those tiles stay places of their own
            continue
        n = len(corners)
        for j, (i, *_) in enumerate(corners):
            south_y, origin_x, origin_y = north[j], east[n + j], north[n + j]
            found[i] = {
                "origin_x": float(origin_x),
                "origin_y": float(origin_y),
                "pixel_height": float(abs(origin_y - south_y)) / rows[i]["height"],
            }
    return found


def _footprint_ring(footprint: str | None) -> list | None:
    """The ring of a footprint as the indexer writes it (a Polygon of five points), else None."""
    if not footprint:
        return None
    try:
        geometry = json.loads(footprint)
    except ValueError:
        return None
    if geometry.get("type") != "Polygon" or len(geometry["coordinates"][0]) != 5:
        return None
    return geometry["coordinates"][0]


def _add_collections(conn: Connection) -> None:
    """3 -> 4: collections of labelled examples (empty)."""
    catalog.collections.create(conn)
    catalog.collection_labels.create(conn)


def _tiles_in_normal_form(conn: Connection) -> None:
    """Bands in canonical order, with a multiband file's own order kept in `file_band_order` (which such
    catalogues lack, and which marks them), and acquisition times as `normal_time` writes them."""
    if "file_band_order" in {column["name"] for column in inspect(conn).get_columns("tiles")}:
        return
    tiles = catalog.tiles
    conn.exec_driver_sql("ALTER TABLE tiles ADD COLUMN file_band_order TEXT")
    rows = conn.execute(select(tiles.c.id, tiles.c.reader, tiles.c.bands, tiles.c.acquired)).all()
    changes = [
        {
            "tile_id": row.id,
            "bands": ",".join(canonical_order(row.bands.split(","))) if row.bands else row.bands,
            "file_band_order": row.bands if row.reader == "geotiff" else None,
            "acquired": normal_time(row.acquired),
        }
        for row in rows
    ]
    if changes:
        conn.execute(
            update(tiles)
            .where(tiles.c.id == bindparam("tile_id"))
            .values(bands=bindparam("bands"), file_band_order=bindparam("file_band_order"))
            .values(acquired=bindparam("acquired")),
            changes,
        )


# from version -> the step to the next version
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: _add_catalogue_meta,
    2: _vectors_to_int8,
    3: _add_collections,
    4: _add_places,
}


def schema_version(conn: Connection, tables: set[str]) -> int | None:
    """The catalogue's version: None for a database without msearch's tables, 1 before versions existed."""
    if "catalogue_meta" in tables:
        value = meta_value(conn, VERSION)
        if value is None or not value.isdigit():
            raise CatalogueError(f"the catalogue's schema version is unreadable ({value!r}): this is not a catalogue")
        return int(value)
    return 1 if "tiles" in tables else None


def prepare_catalogue(engine: Engine, url: str, create: bool) -> str:
    """Check, create or migrate the catalogue's schema; returns the catalogue id."""
    with engine.connect() as conn:
        version = schema_version(conn, has_tables(conn))
        if version == SCHEMA_VERSION:
            return meta_value(conn, CATALOGUE_ID)
    if version is None and not create:
        raise CatalogueError(
            f"{display_url(url)} holds no msearch catalogue: run `msearch index PATHS --catalogue URL` to fill it"
        )
    _refuse_newer(version, url)
    with engine.connect() as conn, conn.begin():
        lock_schema(conn)
        version = schema_version(conn, has_tables(conn))  # again, now that no one else changes it
        _refuse_newer(version, url)
        if version is None:
            return create_schema(conn)
        while version is not None and version < SCHEMA_VERSION:
            MIGRATIONS[version](conn)
            version += 1
            conn.execute(
                catalog.catalogue_meta.update()
                .where(catalog.catalogue_meta.c.key == VERSION)
                .values(value=str(version))
            )
        return meta_value(conn, CATALOGUE_ID)


def create_schema(conn: Connection) -> str:
    """The tables of the current version in an empty database, with a new catalogue id (returned)."""
    catalogue_id = uuid.uuid4().hex
    catalog.metadata.create_all(conn)
    conn.execute(catalog.catalogue_meta.insert().values(key=CATALOGUE_ID, value=catalogue_id))
    conn.execute(catalog.catalogue_meta.insert().values(key=VERSION, value=str(SCHEMA_VERSION)))
    return catalogue_id


def lock_schema(conn: Connection) -> None:
    """Serialise schema changes until the transaction ends."""
    if backend(conn) == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the database's write lock, taken before reading the version
    else:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})


def _refuse_newer(version: int | None, url: str) -> None:
    if version is not None and version > SCHEMA_VERSION:
        raise CatalogueError(
            f"the catalogue {display_url(url)} has schema version {version}, written by a newer msearch; this "
            f"one reads up to version {SCHEMA_VERSION}: upgrade msearch (pip install -U msearch) to open it"
        )
