"""The catalogue as a database of its own, on both backends: chosen by --catalogue or $MSEARCH_CATALOGUE,
versioned and migrated, bound to the FAISS files built from it, one writer at a time, retried when its
connection drops, and copied between SQLite and PostgreSQL."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import create_engine, func, select
from typer.testing import CliRunner

from msearch.cli import app
from msearch.schema import catalog
from msearch.schema.catalog import SCHEMA_VERSION
from msearch.store import catalogue as catalogue_module
from msearch.store import vector_codec
from msearch.store.catalogue import (
    CatalogueBusyError,
    CatalogueError,
    CatalogueUnavailableError,
    run_transaction,
)
from msearch.store.copy import COPIED_TABLES, catalogue_checksum, table_digest
from msearch.store.index_store import CatalogueMismatchError, IndexStore, vectors_from_rows
from tests.indexer.helpers import as_catalogue_of_schema_3
from tests.store.test_index_store import DIM, GENERATOR, SPACE, fill

runner = CliRunner()


def flat(output: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(output.split())


def small_index(directory, catalogue, n=30) -> IndexStore:
    """An index of n synthetic tiles, its FAISS file saved."""
    store = IndexStore(directory, create=True, catalogue=catalogue)
    store.ensure_space(SPACE, "synthetic-card", "0" * 64, DIM)
    fill(store, 0, n)
    store.save_space(store.open_space(SPACE))
    return store


def meta(store: IndexStore) -> dict[str, str]:
    with store.engine.connect() as conn:
        return dict(conn.execute(select(catalog.catalogue_meta.c.key, catalog.catalogue_meta.c.value)).all())


# -- choosing the catalogue ---------------------------------------------------------------------------------


def test_catalogue_option_and_environment_choose_the_database(tmp_path, pg_catalogue, monkeypatch):
    index = tmp_path / "index"
    store = small_index(index, pg_catalogue)
    assert not (index / catalog.CATALOGUE_FILE).exists()  # the directory holds only manifests and FAISS files
    assert {p.name for p in (index / "spaces" / SPACE).iterdir()} == {"manifest.json", "index-0-30.faiss"}
    manifest = json.loads((index / "spaces" / SPACE / "manifest.json").read_text())
    assert manifest["catalogue_id"] == store.catalogue_id and manifest["catalogue_url"].startswith("postgresql")

    result = runner.invoke(app, ["info", "--index", str(index), "--catalogue", pg_catalogue, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["tiles"] == 30 and report["spaces"][0]["vectors"] == 30
    assert report["catalogue_id"] == store.catalogue_id

    result = runner.invoke(app, ["info", "--index", str(index)])  # the default: SQLite in the directory
    assert result.exit_code == 2 and "no msearch index" in flat(result.output)

    monkeypatch.setenv("MSEARCH_CATALOGUE", pg_catalogue)
    result = runner.invoke(app, ["info", "--index", str(index), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["tiles"] == 30


def test_a_catalogue_url_of_another_database_kind_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["info", "--index", str(tmp_path), "--catalogue", "mysql://u@h/db"])
    assert result.exit_code == 2 and "SQLite or PostgreSQL, not mysql" in flat(result.output)
    result = runner.invoke(
        app, ["info", "--index", str(tmp_path), "--catalogue", "postgresql+psycopg://u@/x?host=/nope"]
    )
    assert result.exit_code == 2 and "cannot reach the catalogue" in flat(result.output)


def test_an_empty_postgresql_database_is_not_an_index(tmp_path, pg_catalogue):
    result = runner.invoke(app, ["info", "--index", str(tmp_path), "--catalogue", pg_catalogue])
    assert result.exit_code == 2 and "holds no msearch catalogue" in flat(result.output)


# -- schema versions ----------------------------------------------------------------------------------------


def as_float32_catalogue(store: IndexStore, version: int) -> None:
    """Turn a catalogue back into one of schema 1 or 2, which stored vectors as float32 and had no collections
    and no places."""
    ids, vectors = store.all_vectors(SPACE)
    with store.engine.begin() as conn:
        as_catalogue_of_schema_3(conn)
        for tile_id, vector in zip(ids, vectors):
            conn.execute(
                catalog.vectors.update()
                .where(catalog.vectors.c.tile_id == int(tile_id))
                .values(vector=vector.astype("<f4").tobytes())
            )
        if version == 1:  # as msearch wrote it before catalogues carried a version
            catalog.catalogue_meta.drop(conn)
        else:
            conn.execute(
                catalog.catalogue_meta.update()
                .where(catalog.catalogue_meta.c.key == "schema_version")
                .values(value=str(version))
            )
    store.engine.dispose()


def test_a_catalogue_from_before_versions_is_migrated_and_keeps_its_data(tmp_path, catalogue):
    store = small_index(tmp_path / "index", catalogue)
    ids, vectors = store.all_vectors(SPACE)
    as_float32_catalogue(store, 1)
    manifest_path = store.space_dir(SPACE) / "manifest.json"
    legacy = {k: v for k, v in json.loads(manifest_path.read_text()).items() if not k.startswith("catalogue_")}
    manifest_path.write_text(json.dumps(legacy))

    reopened = IndexStore(tmp_path / "index", catalogue=catalogue)
    assert meta(reopened)["schema_version"] == str(SCHEMA_VERSION)
    assert len(reopened.catalogue_id) == 32 and reopened.catalogue_id != store.catalogue_id
    with reopened.engine.connect() as conn:
        rows = conn.execute(
            select(catalog.vectors.c.tile_id, catalog.vectors.c.vector).order_by(catalog.vectors.c.tile_id)
        ).all()
    got_ids, got_vectors = vectors_from_rows(rows, DIM)
    assert got_ids.tolist() == ids.tolist()
    np.testing.assert_array_equal(got_vectors, vectors)
    if catalogue is None:  # a manifest without a catalogue id belongs to the SQLite file of its directory
        view = reopened.open_space(SPACE)
        assert view.ntotal == 30
        reopened.save_space(view)
        assert json.loads(manifest_path.read_text())["catalogue_id"] == reopened.catalogue_id
    else:  # ...and never to a PostgreSQL catalogue
        with pytest.raises(CatalogueMismatchError):
            reopened.open_space(SPACE)


def test_float32_vectors_are_migrated_to_the_compact_form_and_the_faiss_file_stays_valid(tmp_path, catalogue):
    store = small_index(tmp_path / "index", catalogue, n=50)
    ids, vectors = store.all_vectors(SPACE)
    as_float32_catalogue(store, 2)
    with store.engine.connect() as conn:
        assert {len(b) for b in conn.execute(select(catalog.vectors.c.vector)).scalars()} == {4 * DIM}

    reopened = IndexStore(tmp_path / "index", catalogue=catalogue)
    assert meta(reopened)["schema_version"] == str(SCHEMA_VERSION) and reopened.catalogue_id == store.catalogue_id
    with reopened.engine.connect() as conn:
        assert {len(b) for b in conn.execute(select(catalog.vectors.c.vector)).scalars()} == {DIM + 4}
    got_ids, got = reopened.all_vectors(SPACE)
    assert got_ids.tolist() == ids.tolist()
    np.testing.assert_array_equal(got, vector_codec.decode(b"".join(vector_codec.encode(vectors)), 50, DIM))
    np.testing.assert_allclose(got, vectors, atol=1 / 254)  # half a step of a unit vector at most
    view = reopened.open_space(SPACE)  # the FAISS file of the float32 days, still in sync: nothing to add
    assert view.ntotal == 50 and view.synced_seq == 50
    found = reopened.search(view, got[:5], 1)[1][:, 0]
    assert found.tolist() == ids[:5].tolist()


def test_a_vector_of_the_wrong_size_stops_the_migration_with_nothing_changed(tmp_path, catalogue):
    store = small_index(tmp_path / "index", catalogue, n=20)
    as_float32_catalogue(store, 2)
    with store.engine.begin() as conn:
        conn.execute(catalog.vectors.update().where(catalog.vectors.c.seq == 7).values(vector=b"\0" * (2 * DIM)))
    with pytest.raises(CatalogueError, match=rf"vector #7 of {SPACE} has {2 * DIM} bytes, not {DIM} float32"):
        IndexStore(tmp_path / "index", catalogue=catalogue)
    with store.engine.connect() as conn:  # still version 2, every other vector still float32
        assert meta(store)["schema_version"] == "2"
        sizes = conn.execute(select(catalog.vectors.c.seq, func.length(catalog.vectors.c.vector))).all()
    assert {size for seq, size in sizes if seq != 7} == {4 * DIM}


def test_a_catalogue_of_a_newer_schema_is_refused_not_misread(tmp_path, catalogue):
    store = small_index(tmp_path / "index", catalogue)
    with store.engine.begin() as conn:
        conn.execute(
            catalog.catalogue_meta.update().where(catalog.catalogue_meta.c.key == "schema_version").values(value="99")
        )
    with pytest.raises(CatalogueError, match=rf"schema version 99, .* reads up to version {SCHEMA_VERSION}: upgrade"):
        IndexStore(tmp_path / "index", catalogue=catalogue)
    args = ["--catalogue", catalogue] if catalogue else []
    result = runner.invoke(app, ["query", "fields", "--index", str(tmp_path / "index"), *args])
    assert result.exit_code == 2 and "schema version 99" in flat(result.output)


# -- FAISS files are bound to their catalogue -------------------------------------------------------------


def test_a_faiss_file_is_never_read_against_another_catalogue(tmp_path, pg_catalogue):
    index = tmp_path / "index"
    small_index(index, None, n=30)  # built from the SQLite catalogue of its directory
    other = IndexStore(tmp_path / "elsewhere", create=True, catalogue=pg_catalogue)
    other.ensure_space(SPACE, "synthetic-card", "0" * 64, DIM)
    fill(other, 0, 5)

    with pytest.raises(CatalogueMismatchError, match=r"belongs to catalogue \w+ at sqlite:///.*not to the catalogue"):
        IndexStore(index, catalogue=pg_catalogue).open_space(SPACE)
    result = runner.invoke(app, ["query", "fields", "--index", str(index), "--catalogue", pg_catalogue])
    assert result.exit_code == 2 and "its FAISS files would be read against the wrong tiles" in flat(result.output)
    # and the other way round: a directory built from PostgreSQL, opened with an SQLite catalogue
    with pytest.raises(CatalogueMismatchError, match="at postgresql"):
        IndexStore(tmp_path / "elsewhere", catalogue=str(index / catalog.CATALOGUE_FILE)).manifests()


# -- one writer, snapshots, lost connections -----------------------------------------------------------------


def test_a_second_writer_is_refused_until_the_first_is_done(tmp_path, catalogue):
    first = small_index(tmp_path / "index", catalogue)
    second = IndexStore(tmp_path / "index", catalogue=catalogue)
    first.lock_for_writing("msearch index")
    with pytest.raises(CatalogueBusyError, match="is being written by .*two index runs on one catalogue"):
        second.lock_for_writing("msearch index")
    first.unlock()
    second.lock_for_writing("msearch index")
    second.unlock()


def test_a_snapshot_does_not_see_a_commit_made_while_it_reads(tmp_path, catalogue):
    store = small_index(tmp_path / "index", catalogue, n=10)
    with catalogue_module.snapshot(store.engine) as reader:
        before = reader.execute(select(catalog.tiles.c.id)).scalars().all()
        fill(store, 10, 15)
        assert reader.execute(select(catalog.tiles.c.id)).scalars().all() == before
        assert len(store.all_vectors(SPACE)[0]) == 15


def test_a_transaction_whose_connection_drops_is_run_again(tmp_path, pg_catalogue, postgres_server, monkeypatch):
    monkeypatch.setattr(catalogue_module, "RETRY_WAIT_S", 0.01)
    store = small_index(tmp_path / "index", pg_catalogue, n=10)
    attempts = []

    def work(conn):
        attempts.append(1)
        conn.execute(catalog.runs.insert().values(started_at="now", status="running"))
        if len(attempts) == 1:  # the server drops this session mid-transaction
            postgres_server.terminate_other_sessions(pg_catalogue)
        return conn.execute(select(catalog.runs.c.id)).scalars().all()

    assert len(run_transaction(store.engine, work)) == 1  # the first attempt was rolled back, the second kept
    assert len(attempts) == 2

    def always_dropped(conn):
        conn.execute(catalog.runs.insert().values(started_at="now", status="running"))
        postgres_server.terminate_other_sessions(pg_catalogue)
        conn.execute(select(1))

    with pytest.raises(CatalogueUnavailableError, match="lost the connection .* 3 times .* committed before is kept"):
        run_transaction(store.engine, always_dropped)
    with store.engine.connect() as conn:  # committed work is intact; stale pooled connections are replaced
        assert len(conn.execute(select(catalog.runs.c.id)).scalars().all()) == 1
    assert store.tile_count() == 10


def test_paths_are_compared_by_code_point_on_both_backends(tmp_path, catalogue):
    """`key >= 'a/' AND key < 'a0'` is what finds the tiles under a folder (msearch.indexer.pipeline): under
    PostgreSQL's language collations ('en-US' in the test server) punctuation would be ignored."""
    store = IndexStore(tmp_path / "index", create=True, catalogue=catalogue)
    keys = ["a/x.tif", "a/y/z.tif", "a#0,0,1,1", "a-b/x.tif", "ab.tif", "a.tif", "a0.tif", "a/"]
    with store.engine.begin() as conn:
        conn.execute(
            catalog.tiles.insert(),
            [{"root": "/r", "key": k, "path": k, "reader": "geotiff", "stat_signature": "s"} for k in keys],
        )
        key = catalog.tiles.c.key
        found = conn.execute(select(key).where(key >= "a/", key < "a0").order_by(key)).scalars().all()
    assert found == ["a/", "a/x.tif", "a/y/z.tif"]


# -- copy between backends ---------------------------------------------------------------------------------


def test_copy_sqlite_to_postgresql_and_back_is_identical(tmp_path, pg_catalogue, postgres_server):
    index = tmp_path / "index"
    store = small_index(index, None, n=40)
    with store.engine.begin() as conn:  # a run, a problem and a place, so that every table has rows
        conn.execute(catalog.runs.insert().values(started_at="2026-11-30T00:00:00+00:00", status="finished"))
        conn.execute(catalog.problems.insert().values(run_id=1, root="/r", key="bad.tif", kind="error", reason="x"))
        conn.execute(catalog.places.insert().values(crs="EPSG:32633", pixel_size=10.0, origin_x=399960.5))
        conn.execute(catalog.tiles.update().where(catalog.tiles.c.id <= 3).values(place_id=1))
    query = GENERATOR.rows(500, 501)
    want = store.search(store.open_space(SPACE), query, 5)[1].tolist()
    source = str(index / catalog.CATALOGUE_FILE)
    counts, checksum = catalogue_checksum(source)
    assert counts == {
        "spaces": 1,
        "places": 1,
        "tiles": 40,
        "vectors": 40,
        "runs": 1,
        "problems": 1,
        "collections": 0,
        "collection_labels": 0,
    }

    result = runner.invoke(app, ["catalogue", "copy", source, pg_catalogue, "--index", str(index)])
    assert result.exit_code == 0, result.output
    assert f"verified: checksum {checksum}" in flat(result.output)
    assert "tiles 40, vectors 40" in flat(result.output)
    assert catalogue_checksum(pg_catalogue) == (counts, checksum)

    # the index directory now belongs to the PostgreSQL copy: its FAISS file is used as it is
    on_postgres = IndexStore(index, catalogue=pg_catalogue)
    view = on_postgres.open_space(SPACE)
    assert view.ntotal == 40 and view.synced_seq == 40
    assert on_postgres.search(view, query, 5)[1].tolist() == want
    with pytest.raises(CatalogueMismatchError):
        IndexStore(index).open_space(SPACE)  # ...and no longer to the SQLite file
    fill(on_postgres, 1_000, 1_003)  # the copy's sequences continue after the copied ids
    with on_postgres.engine.connect() as conn:
        assert conn.execute(select(catalog.vectors.c.seq).order_by(catalog.vectors.c.seq.desc())).first()[0] == 43
    with on_postgres.engine.begin() as conn:
        conn.execute(catalog.vectors.delete().where(catalog.vectors.c.tile_id > 1_000))
        conn.execute(catalog.tiles.delete().where(catalog.tiles.c.id > 1_000))

    back = tmp_path / "back.sqlite"
    result = runner.invoke(app, ["catalogue", "copy", pg_catalogue, f"sqlite:///{back}"])
    assert result.exit_code == 0, result.output
    assert catalogue_checksum(str(back)) == (counts, checksum)
    original, returned = (
        create_engine(f"sqlite:///{index / catalog.CATALOGUE_FILE}"),
        create_engine(f"sqlite:///{back}"),
    )
    with original.connect() as a, returned.connect() as b:
        for table in COPIED_TABLES:
            assert a.execute(select(table)).all() == b.execute(select(table)).all(), table.name
            assert table_digest(a, table) == table_digest(b, table)

    result = runner.invoke(app, ["catalogue", "copy", source, pg_catalogue])  # into a catalogue: refused
    assert result.exit_code == 2 and "already holds tables" in flat(result.output)
    assert catalogue_checksum(pg_catalogue)[0]["tiles"] == 40
