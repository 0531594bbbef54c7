"""Opening the catalogue: the SQL database that holds the tables of msearch.schema.catalog."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import bindparam, create_engine, event, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from msearch.schema.bands import canonical_order
from msearch.schema.catalog import CATALOGUE_FILE, metadata, normal_time, tiles


def catalogue_engine(index_dir: Path, create: bool = True) -> Engine:
    """The catalogue of an index directory, in WAL mode so that readers see a consistent snapshot while
    an indexing run writes."""
    path = Path(index_dir) / CATALOGUE_FILE
    if not create and not path.exists():
        raise FileNotFoundError(f"no msearch index at {index_dir} ({path} does not exist); run `msearch index` first")
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses no commit
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    if create:
        metadata.create_all(engine)
    _normal_form(engine)
    return engine


def _normal_form(engine: Engine) -> None:
    """Bring a catalogue written before the normal form of `bands` and `acquired` to it, once: bands in
    canonical order, with a multiband file's own order kept in `file_band_order` (which such catalogues
    lack, and which marks them), and acquisition times as `normal_time` writes them."""
    try:
        _rewrite_to_normal_form(engine)
    except OperationalError:
        # another process opening the same old catalogue did it first (or holds it): fine once it is done
        if not _lacks_normal_form(engine):
            return
        raise


def _lacks_normal_form(engine: Engine) -> bool:
    with engine.connect() as conn:
        columns = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(tiles)")}
    return bool(columns) and "file_band_order" not in columns


def _rewrite_to_normal_form(engine: Engine) -> None:
    if not _lacks_normal_form(engine):
        return
    with engine.begin() as conn:
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
