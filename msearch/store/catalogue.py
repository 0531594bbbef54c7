"""Opening the catalogue: the SQL database that holds the tables of msearch.schema.catalog."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from msearch.schema.catalog import CATALOGUE_FILE, metadata


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
    return engine
