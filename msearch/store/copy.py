"""`msearch catalogue copy SRC DST`: an index's catalogue moved between SQLite and PostgreSQL, vectors included.

Every table is copied row for row with its keys (tile ids, vector seqs, run ids), so the FAISS files built
from the source stay valid for the copy. The copy is one transaction on the destination, verified before
it commits: row counts per table and a checksum over every value, computed from the source's snapshot and
from the destination's rows as written, must agree; otherwise nothing is kept. The destination gets a
catalogue id of its own (it is another catalogue from now on); `index` re-binds an index directory's
manifests from the source to the copy.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Float, Integer, func, select, text
from sqlalchemy.engine import Connection

from msearch.config import index_dir as resolve_index_dir
from msearch.schema import catalog
from msearch.schema.catalog import CATALOGUE_FILE
from msearch.schema.manifest import SpaceManifest
from msearch.store.catalogue import (
    CatalogueError,
    backend,
    catalogue_url,
    display_url,
    has_tables,
    open_engine,
    snapshot,
    sqlite_path,
)
from msearch.store.migrations import create_schema, lock_schema, prepare_catalogue

# Parents before children (foreign keys); catalogue_meta is the catalogue's own identity, never copied.
COPIED_TABLES = (
    catalog.spaces,
    catalog.places,
    catalog.tiles,
    catalog.vectors,
    catalog.runs,
    catalog.problems,
    catalog.collections,
    catalog.collection_labels,
)
CHUNK_ROWS = 5_000


@dataclass
class CopyReport:
    source: str
    destination: str
    destination_id: str
    rows: dict[str, int]
    checksum: str  # sha256 over every copied value, equal on both sides
    rebound_spaces: list[str] = field(default_factory=list)


def copy_catalogue(src: str, dst: str, index: str | Path | None = None) -> CopyReport:
    """Copy the catalogue at `src` into the empty database at `dst` (URLs or SQLite paths); with `index`,
    point that index directory's FAISS files at the copy."""
    src_url, dst_url = catalogue_url(src, Path(".")), catalogue_url(dst, Path("."))
    source = open_engine(src_url, create=False)
    source_id = prepare_catalogue(source, src_url, create=False)  # migrated first if it is older
    dst_file = sqlite_path(dst_url)
    created_file = dst_file is not None and not dst_file.exists()
    destination = open_engine(dst_url, create=True)
    try:
        with snapshot(source) as reader, destination.connect() as writer, writer.begin():
            lock_schema(writer)
            found = has_tables(writer) & {t.name for t in catalog.metadata.sorted_tables}
            if found:
                raise CatalogueError(
                    f"{display_url(dst_url)} already holds tables ({', '.join(sorted(found))}): copy into an "
                    f"empty database, so that nothing of another catalogue is mixed in or overwritten"
                )
            destination_id = create_schema(writer)
            for table in COPIED_TABLES:
                _copy_table(reader, writer, table)
            want = {table.name: table_digest(reader, table) for table in COPIED_TABLES}
            got = {table.name: table_digest(writer, table) for table in COPIED_TABLES}
            if got != want:
                differ = [name for name in want if want[name] != got[name]]
                raise CatalogueError(f"the copy differs from the source in {', '.join(differ)}: nothing was kept")
    except BaseException:
        destination.dispose()
        if created_file:
            dst_file.unlink(missing_ok=True)
        raise
    report = CopyReport(
        display_url(src_url),
        display_url(dst_url),
        destination_id,
        {name: count for name, (count, _) in want.items()},
        _combined(want),
    )
    if index is not None:
        report.rebound_spaces = _rebind(resolve_index_dir(index), src_url, source_id, dst_url, destination_id)
    source.dispose()
    destination.dispose()
    return report


def _copy_table(reader: Connection, writer: Connection, table) -> None:
    key = list(table.primary_key.columns)
    result = reader.execute(select(table).order_by(*key).execution_options(yield_per=CHUNK_ROWS))
    for rows in result.partitions():
        writer.execute(table.insert(), [dict(row._mapping) for row in rows])
    if backend(writer) == "postgresql" and len(key) == 1 and isinstance(key[0].type, Integer):
        # Rows came with their ids: the next id the sequence gives must follow them.
        column = key[0].name
        writer.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column}'), "
                f"COALESCE((SELECT MAX({column}) FROM {table.name}), 0) + 1, false)"
            )
        )


def table_digest(conn: Connection, table) -> tuple[int, str]:
    """(rows, sha256 over the rows in key order), from values made canonical by column type (SQLite may hand
    back an int from a REAL column; PostgreSQL a float)."""
    sha = hashlib.sha256()
    kinds = ["float" if isinstance(c.type, Float) else "int" if isinstance(c.type, Integer) else "raw" for c in table.c]
    count = 0
    for rows in _rows_in_key_order(conn, table):
        for row in rows:
            count += 1
            for kind, value in zip(kinds, row):
                sha.update(_canonical(kind, value))
            sha.update(b"\x1e")
    expected = conn.execute(select(func.count()).select_from(table)).scalar_one()
    if expected != count:
        raise CatalogueError(f"{table.name}: counted {expected} rows but read {count}")
    return count, sha.hexdigest()


def _rows_in_key_order(conn: Connection, table):
    """Chunks of rows by primary key. Text keys (space names, a few rows) are sorted here, by code point:
    PostgreSQL's collation may order them otherwise than SQLite does."""
    key = list(table.primary_key.columns)
    if all(isinstance(column.type, Integer) for column in key):
        yield from conn.execute(select(table).order_by(*key).execution_options(yield_per=CHUNK_ROWS)).partitions()
    else:
        yield sorted(conn.execute(select(table)).all(), key=lambda row: tuple(row._mapping[c.name] for c in key))


def _canonical(kind: str, value) -> bytes:
    if value is None:
        return b"\x00"
    if kind == "float":
        return b"f" + struct.pack("<d", float(value))
    if kind == "int":
        return b"i" + str(int(value)).encode() + b"\x1f"
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value)
        return b"b" + struct.pack("<q", len(value)) + value
    encoded = str(value).encode()
    return b"s" + struct.pack("<q", len(encoded)) + encoded


def _combined(digests: dict[str, tuple[int, str]]) -> str:
    return hashlib.sha256(
        "".join(f"{name}:{count}:{digest};" for name, (count, digest) in digests.items()).encode()
    ).hexdigest()


def catalogue_checksum(url: str) -> tuple[dict[str, int], str]:
    """Row counts per copied table and the combined checksum of a catalogue, read from one snapshot."""
    url = catalogue_url(url, Path("."))
    engine = open_engine(url, create=False)
    try:
        prepare_catalogue(engine, url, create=False)
        with snapshot(engine) as conn:
            digests = {table.name: table_digest(conn, table) for table in COPIED_TABLES}
    finally:
        engine.dispose()
    return {name: count for name, (count, _) in digests.items()}, _combined(digests)


def _rebind(directory: Path, src_url: str, source_id: str, dst_url: str, destination_id: str) -> list[str]:
    """Point the manifests of `directory` built from the source catalogue at the copy."""
    legacy_ok = sqlite_path(src_url) == directory / CATALOGUE_FILE
    found = [(folder, SpaceManifest.read(folder)) for folder in sorted((directory / "spaces").glob("*"))]
    found = [(folder, manifest) for folder, manifest in found if manifest is not None]
    for folder, manifest in found:  # all checked before any is changed
        if manifest.catalogue_id != source_id and not (manifest.catalogue_id is None and legacy_ok):
            raise CatalogueError(
                f"{folder}: built from catalogue {manifest.catalogue_id}, not from the source {source_id}; "
                f"the copy was made, but {directory} was left as it was"
            )
    for folder, manifest in found:
        manifest.catalogue_id, manifest.catalogue_url = destination_id, display_url(dst_url)
        manifest.write(folder)
    return [manifest.space for _, manifest in found]
