"""Opening the catalogue: the SQL database that holds the tables of msearch.schema.catalog, in SQLite (the
default: `catalogue.sqlite` in the index directory) or PostgreSQL (a catalogue a team shares), by URL.

What both backends guarantee the store:
- a read snapshot (`snapshot`): every statement of it sees one committed state while a run writes (SQLite:
  a WAL read transaction; PostgreSQL: REPEATABLE READ);
- one writer at a time (`WriterLock`): a second `msearch index` on the same catalogue is refused with a
  message that says who holds it (SQLite: an exclusive lock on a file beside the database; PostgreSQL: a
  session advisory lock). Both locks die with their process, so a killed run never leaves one behind. One
  writer also keeps the `vectors.seq` order equal to the commit order, which the FAISS catch-up relies on;
- a lost connection: stale pooled connections are replaced before use (pool_pre_ping), and a transaction
  that loses its connection is run again a few times (`run_transaction`) before the error is reported.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
import zlib
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from sqlalchemy import create_engine, event, inspect, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from msearch.schema import catalog
from msearch.schema.catalog import CATALOGUE_FILE

CATALOGUE_ENV = "MSEARCH_CATALOGUE"
BACKENDS = ("sqlite", "postgresql")
# A transaction that lost its connection is tried this many times in all, waiting RETRY_WAIT_S, 2x, 4x...
WRITE_ATTEMPTS = 3
SQLITE_PAGE_SIZE = 16_384
RETRY_WAIT_S = 0.5
# PostgreSQL advisory lock keys (one database is one catalogue): the writer's, and the one schema changes take.
WRITER_LOCK_KEY = zlib.crc32(b"msearch catalogue writer")
SCHEMA_LOCK_KEY = zlib.crc32(b"msearch catalogue schema")
log = logging.getLogger(__name__)
T = TypeVar("T")


class CatalogueError(RuntimeError):
    """The catalogue cannot be used as asked: absent, of an unknown schema version, or of another index."""


class CatalogueBusyError(CatalogueError):
    """Another process is writing to the catalogue (an index run holds its writer lock)."""


class CatalogueUnavailableError(CatalogueError):
    """The catalogue's server could not be reached, or kept dropping the connection."""


def catalogue_url(catalogue: str | os.PathLike | None, index_dir: Path) -> str:
    """The catalogue's SQLAlchemy URL: the argument, else $MSEARCH_CATALOGUE, else `catalogue.sqlite` in the
    index directory. A value without '://' is a path: an SQLite file, or an index directory holding one."""
    value = str(catalogue or os.environ.get(CATALOGUE_ENV) or "")
    if not value:
        return f"sqlite:///{Path(index_dir) / CATALOGUE_FILE}"
    if "://" not in value:
        path = Path(value)
        return f"sqlite:///{path / CATALOGUE_FILE if path.is_dir() else path}"
    return value


def display_url(url: str) -> str:
    """The URL for messages: its password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def backend(engine_or_conn: Engine | Connection) -> str:
    return engine_or_conn.dialect.name


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    return Path(parsed.database) if parsed.get_backend_name() == "sqlite" and parsed.database else None


def open_engine(url: str, create: bool) -> Engine:
    """An engine on the catalogue's database (the schema is checked by msearch.store.migrations)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise CatalogueError(
            f"--catalogue {url!r} is not a database URL ({exc}); give sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST/DB"
        ) from None
    name = parsed.get_backend_name()
    if name not in BACKENDS:
        raise CatalogueError(
            f"--catalogue {display_url(url)}: msearch keeps its catalogue in SQLite or PostgreSQL, not {name}"
        )
    if name == "sqlite":
        return _sqlite_engine(url, create)
    if parsed.get_driver_name() not in ("psycopg", "postgresql"):
        raise CatalogueError(
            f"--catalogue {display_url(url)}: use the psycopg (version 3) driver, postgresql+psycopg://..."
        )
    try:
        engine = create_engine(parsed.set(drivername="postgresql+psycopg"), pool_pre_ping=True, pool_size=2)
    except ModuleNotFoundError:
        raise CatalogueError("a PostgreSQL catalogue needs psycopg 3: pip install 'msearch[postgres]'") from None
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        raise CatalogueUnavailableError(
            f"cannot reach the catalogue at {display_url(url)}: {_first_line(exc)}"
        ) from None
    return engine


def _sqlite_engine(url: str, create: bool) -> Engine:
    path = sqlite_path(url)
    if path is None:
        raise CatalogueError(f"--catalogue {url!r}: an SQLite catalogue is a file, sqlite:///PATH")
    if not create and not path.exists():
        raise FileNotFoundError(f"no msearch index at {path.parent} ({path} does not exist); run `msearch index` first")
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        # Takes effect only when the file is created. Vector rows are large: a page holds a whole number of
        # them and wastes the rest (1 KB float16 rows measured 2.04 KB per tile per space with 4 KB pages,
        # 1.72 KB with 16 KB ones; bench/vector_storage.py).
        cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
        _use_wal(cursor)  # readers see a consistent snapshot while a run writes
        cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses no commit
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def _use_wal(cursor, seconds: float = 60.0) -> None:
    """Switch a catalogue to WAL once (the mode is stored in the file). Two processes opening a new catalogue
    at the same moment both try the switch, and SQLite answers the loser "database is locked" at once,
    without its busy timeout: wait and look again (the winner's switch is usually what it finds)."""
    deadline = time.monotonic() + seconds
    while cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def has_tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


@contextlib.contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection whose statements all read one committed state of the catalogue."""
    with engine.connect() as conn:
        if backend(conn) == "sqlite":
            with conn.begin():
                # pysqlite opens no transaction for SELECTs: without an explicit BEGIN each read could see a
                # different commit of a concurrent indexing run
                conn.exec_driver_sql("BEGIN")
                yield conn
        else:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn


def dialect_insert(conn: Connection, table):
    """INSERT with the backend's ON CONFLICT support (`on_conflict_do_update`, `excluded`)."""
    return (postgresql if backend(conn) == "postgresql" else sqlite).insert(table)


def run_transaction(engine: Engine, work: Callable[[Connection], T], what: str = "write to the catalogue") -> T:
    """`work(conn)` in one transaction; run again from the start when the connection was lost (the failed
    attempt was rolled back: nothing of it is committed), WRITE_ATTEMPTS times in all, then reported."""
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            with engine.begin() as conn:
                return work(conn)
        except DBAPIError as exc:
            # SQLite has no connection to lose: its OperationalErrors (a locked database, a full disk) are
            # not cured by running again.
            if backend(engine) == "sqlite" or not (exc.connection_invalidated or isinstance(exc, OperationalError)):
                raise
            if attempt == WRITE_ATTEMPTS:
                raise CatalogueUnavailableError(
                    f"lost the connection to the catalogue {WRITE_ATTEMPTS} times in a row ({what}): "
                    f"{_first_line(exc)}. Everything committed before is kept: run the same command again "
                    f"to resume."
                ) from exc
            log.warning("catalogue connection lost (%s), attempt %d: %s", what, attempt, _first_line(exc))
            time.sleep(RETRY_WAIT_S * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class WriterLock:
    """Held by the one process that writes to a catalogue (an index run); a second one is refused.

    SQLite: flock on `<catalogue>.lock` beside the database. PostgreSQL: a session advisory lock, on a
    connection of its own held for the run (pg_try_advisory_lock). Both are released by the operating
    system or the server when the process dies, so kill -9 never leaves a stale lock.
    """

    def __init__(self, engine: Engine, url: str):
        self.engine, self.url = engine, url
        self._file = None
        self._conn: Connection | None = None

    def acquire(self, purpose: str) -> None:
        if self._file is not None or self._conn is not None:
            return
        if backend(self.engine) == "sqlite":
            path = sqlite_path(self.url).with_name(sqlite_path(self.url).name + ".lock")
            handle = open(path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise self._busy(holder) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"{purpose} (pid {os.getpid()} on {os.uname().nodename})")
            handle.flush()
            self._file = handle
            return
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        if not conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": WRITER_LOCK_KEY}).scalar():
            holder = conn.execute(
                text(
                    "SELECT a.application_name, a.client_addr, a.backend_start FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.objid = :key"
                ),
                {"key": WRITER_LOCK_KEY},
            ).first()
            conn.close()
            raise self._busy(
                f"another session (connected since {holder.backend_start:%Y-%m-%d %H:%M:%S %Z}, from "
                f"{holder.client_addr or 'a local socket'})"
                if holder
                else "another session"
            )
        self._conn = conn

    def _busy(self, holder: str) -> CatalogueBusyError:
        return CatalogueBusyError(
            f"the catalogue {display_url(self.url)} is being written by {holder}: two index runs on one "
            f"catalogue are not allowed. Wait for it to finish (or stop it), then run again."
        )

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._conn is not None:
            with contextlib.suppress(DBAPIError):
                self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": WRITER_LOCK_KEY})
            self._conn.close()
            self._conn = None


def meta_value(conn: Connection, key: str) -> str | None:
    return conn.execute(select(catalog.catalogue_meta.c.value).where(catalog.catalogue_meta.c.key == key)).scalar()
