"""The catalogue's tables: one row per tile, its vectors per encoder space, runs and per-file problems,
and the catalogue's own identity and schema version.

Vectors are stored here, in the same transaction as their tile, so that the catalogue is the durable
truth: a FAISS file is a derived, rebuildable view of the `vectors` table (see msearch.store). The same
tables live in SQLite (the default, one file in the index directory) or PostgreSQL (a team's shared
catalogue); `SCHEMA_VERSION` changes with every change of these tables or of what their values mean, and
msearch.store.migrations brings an older catalogue up to it.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

CATALOGUE_FILE = "catalogue.sqlite"
# 1: the catalogue before it carried a version (no `catalogue_meta` table); 2: `catalogue_meta` with the
# catalogue's id and version; 3: vectors stored as int8 codes with a scale (float32 before); 4: collections of
# labelled examples (`collections`, `collection_labels`); 5: places (a grid key per tile:
# `tiles.origin_x/origin_y/pixel_height`, and `tiles.place_id` naming a row of `places`).
SCHEMA_VERSION = 5
metadata = MetaData()

# Paths and keys are compared as ranges of code points (`key >= 'a/' AND key < 'a0'` finds what lies under
# a/): PostgreSQL's default collation orders by language rules that ignore punctuation, so these columns
# are compared byte by byte there, as SQLite always does.
PathText = Text().with_variant(Text(collation="C"), "postgresql")

catalogue_meta = Table(
    "catalogue_meta",
    metadata,
    Column("key", String(64), primary_key=True),  # 'catalogue_id' (uuid4 hex, made once), 'schema_version'
    Column("value", Text, nullable=False),
)

# A place: ground that acquisitions cover on one grid (msearch.store.places). Tiles of the same CRS, pixel
# size and size whose upper-left corners lie within half a pixel of each other are acquisitions of one place;
# its grid and geometry are those of the first acquisition that made it. `grid_col`/`grid_row` (the corner in
# whole pixels) are the lookup key; a tile without a CRS or a corner is a place of its own (crs None).
places = Table(
    "places",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("crs", Text),
    Column("pixel_size", Float),  # x, CRS units
    Column("pixel_height", Float),  # y, CRS units (not always the x size: EPSG:4326 grids)
    Column("width", Integer),
    Column("height", Integer),
    Column("origin_x", Float),  # upper-left corner, CRS units
    Column("origin_y", Float),
    Column("grid_col", Integer),  # round(origin_x / pixel_size)
    Column("grid_row", Integer),  # round(origin_y / pixel_height)
    Column("min_lon", Float),
    Column("min_lat", Float),
    Column("max_lon", Float),
    Column("max_lat", Float),
    Column("centre_lon", Float),
    Column("centre_lat", Float),
    Column("footprint", Text),  # GeoJSON Polygon, WGS84
)
Index("ix_places_grid", places.c.crs, places.c.width, places.c.height, places.c.grid_col, places.c.grid_row)

tiles = Table(
    "tiles",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("root", PathText, nullable=False),  # the folder given to `msearch index`, absolute
    Column("key", PathText, nullable=False),  # relative path (+ '#col,row,width,height' for chips)
    Column("path", PathText, nullable=False),  # relative path of the file or folder
    Column("reader", String(32), nullable=False),
    Column("stat_signature", String(40), nullable=False),  # size+mtime of every file: cheap change check
    Column("size", Integer),  # bytes, all files together
    Column("mtime", Float),  # latest modification time of its files (POSIX seconds)
    Column("digest", String(64)),  # sha256 over the contents of its files
    Column("crs", Text),
    Column("width", Integer),
    Column("height", Integer),
    Column("pixel_size", Float),
    Column("min_lon", Float),
    Column("min_lat", Float),
    Column("max_lon", Float),
    Column("max_lat", Float),
    Column("centre_lon", Float),
    Column("centre_lat", Float),
    Column("footprint", Text),  # GeoJSON Polygon, WGS84
    Column("bands", Text),  # comma-separated canonical band names present, in canonical order (B8A after B08)
    # Multiband files: the band in each of the file's planes, in file order (a re-read of a file that does not
    # name its bands needs it: EuroSAT puts B8A last); None for layouts whose files name their bands.
    Column("file_band_order", Text),
    Column("offset", Float),  # radiometric offset the stored values carry (removed before encoding)
    Column("level", String(8)),
    Column("acquired", String(32)),  # ISO 8601 UTC, whole seconds, 'Z' ('2022-07-06T08:56:11Z'): normal_time
    Column("product", Text),
    Column("mgrs_tile", String(8)),
    Column("processing_baseline", String(8)),
    Column("cloud_cover", Float),  # percent
    Column("nodata_fraction", Float),
    Column("scene", Text),  # chips: the scene they were cut from
    Column("window", Text),  # chips: 'col,row,width,height' on the 10 m grid
    # The tile's own grid: its upper-left corner (CRS units) and y pixel size; with crs, width, height and
    # pixel_size they name its place.
    Column("origin_x", Float),
    Column("origin_y", Float),
    Column("pixel_height", Float),
    # A row of `places`, without a foreign key: msearch deletes a place only once no tile names it, and the
    # column is added by ALTER TABLE alike on SQLite and PostgreSQL.
    Column("place_id", Integer),
    Column("run_id", Integer),
    Column("indexed_at", String(32)),
    UniqueConstraint("root", "key", name="uq_tiles_root_key"),
)
Index("ix_tiles_acquired", tiles.c.acquired)
Index("ix_tiles_mgrs", tiles.c.mgrs_tile)
Index("ix_tiles_lon_lat", tiles.c.centre_lon, tiles.c.centre_lat)
Index("ix_tiles_place", tiles.c.place_id, tiles.c.acquired)

spaces = Table(
    "spaces",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("card", String(128), nullable=False),
    Column("weights_sha256", String(64), nullable=False),
    Column("dim", Integer, nullable=False),
    Column("metric", String(16), nullable=False),
    # Bumped whenever vectors are replaced or deleted: a FAISS file built at another generation cannot be
    # brought up to date by appending, and is rebuilt from the vectors.
    Column("generation", Integer, nullable=False, default=0),
)

vectors = Table(
    "vectors",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # order of insertion: FAISS catch-up point
    Column("tile_id", Integer, ForeignKey("tiles.id", ondelete="CASCADE"), nullable=False),
    Column("space", String(128), ForeignKey("spaces.name"), nullable=False),
    # an L2-normalised vector as msearch.store.vector_codec stores it (int8 codes and a float32 scale)
    Column("vector", LargeBinary, nullable=False),
    UniqueConstraint("tile_id", "space", name="uq_vectors_tile_space"),
)
Index("ix_vectors_space_seq", vectors.c.space, vectors.c.seq)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", String(32), nullable=False),
    Column("finished_at", String(32)),
    # running | finished | failed | interrupted (Ctrl-C); a crash leaves 'running'
    Column("status", String(16), nullable=False),
    Column("paths", Text),
    Column("spaces", Text),
    Column("summary", Text),  # JSON counts
)

problems = Table(
    "problems",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, nullable=False),
    Column("root", PathText, nullable=False),
    Column("key", PathText, nullable=False),
    Column("kind", String(16), nullable=False),  # error (unreadable, bad) | skipped (e.g. all nodata)
    Column("reason", Text, nullable=False),
    UniqueConstraint("root", "key", name="uq_problems_root_key"),
)

# A named set of labelled examples in one encoder space (msearch.store.collections), which a detector is fitted on.
collections = Table(
    "collections",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("space", String(128), nullable=False),
    Column("note", Text),
    Column("created_by", String(128)),
    Column("created_at", String(32), nullable=False),
)

# One labelled example. A catalogued tile is named by its identity (root, key), not its row id: index runs keep
# a tile's row, but a pruned and re-indexed tile gets a new one, and the label must follow the tile. A file given
# by path keeps its embedding here (`vector`, as msearch.store.vector_codec stores it) with `root`/`key` null.
collection_labels = Table(
    "collection_labels",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("collection_id", Integer, ForeignKey("collections.id", ondelete="CASCADE"), nullable=False),
    Column("label", String(16), nullable=False),  # positive | negative
    Column("root", PathText),
    Column("key", PathText),
    Column("file", PathText),  # an example given as a file: its absolute path when it was embedded
    Column("vector", LargeBinary),
    Column("note", Text),
    Column("added_by", String(128)),
    Column("added_at", String(32), nullable=False),
    UniqueConstraint("collection_id", "root", "key", name="uq_collection_labels_tile"),
    UniqueConstraint("collection_id", "file", name="uq_collection_labels_file"),
)


def normal_time(value: str | datetime | None) -> str | None:
    """An acquisition time in the catalogue's one form: ISO 8601 UTC to the second with a 'Z'
    ('2022-07-06T08:56:11.024Z', '2022-07-06 08:56:11' and datetime(2022, 7, 6, 8, 56, 11) all give
    '2022-07-06T08:56:11Z'), so that the same product compares equal whatever layout it came in. Times
    without a zone are UTC (Sentinel-2 names and metadata state UTC); a bare date stays a date. Text that is
    not a time is kept as it is."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if len(text) == 10:
            return text
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
        except ValueError:
            return text
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.replace(microsecond=0).isoformat() + "Z"
