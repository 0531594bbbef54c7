"""Real `msearch index` processes against one catalogue: killed with SIGKILL mid-run and resumed on PostgreSQL,
two runs started together (one is refused), and readers opening and searching the index while a run writes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from msearch.indexer.pipeline import index_archive
from msearch.schema import catalog
from msearch.store.index_store import IndexStore
from msearch.store.vector_codec import VECTOR_ATOL
from tests.indexer.helpers import EUROSAT, MODELS, copy_eurosat, faiss_ids, index_command, subprocess_env

WAIT_S = 240


@pytest.fixture(scope="module")
def archive(shared_data, tmp_path_factory, tiny_msclip, tiny_rsmclip):
    """12 EuroSAT tiles and their vectors by key and space, from one uninterrupted run (SQLite)."""
    base = tmp_path_factory.mktemp("shared-catalogue")
    src = base / "src"
    copy_eurosat(shared_data, src, classes=("AnnualCrop", "Forest", "River", "SeaLake"), per_class=3)
    summary = index_archive(
        [src], index=base / "reference", encoders=encoders_of(tiny_msclip, tiny_rsmclip), settings=EUROSAT, workers=0
    )
    assert summary.indexed == 12
    return src, vectors_by_key(IndexStore(base / "reference"))


def encoders_of(tiny_msclip, tiny_rsmclip) -> dict:
    return {"tiny-ms-clip": tiny_msclip, "rs-m-clip": tiny_rsmclip}


def vectors_by_key(store: IndexStore) -> dict[tuple[str, str], np.ndarray]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(catalog.tiles.c.key, catalog.vectors.c.space, catalog.vectors.c.tile_id, catalog.vectors.c.vector)
            .join(catalog.vectors, catalog.vectors.c.tile_id == catalog.tiles.c.id)
            .order_by(catalog.vectors.c.seq)
        ).all()
    found = {}
    for key, space, tile_id, blob in rows:
        found[(key, space)] = store.vectors_of(space, [tile_id])[0]
        assert len(blob)  # a stored vector, decoded through the store
    return found


def start_index(src: Path, index: Path, catalogue: str | None, log: Path, batch_size: int) -> subprocess.Popen:
    command = index_command(src, index, batch_size) + (["--catalogue", catalogue] if catalogue else [])
    return subprocess.Popen(
        command + ["--workers", "0"],
        env=subprocess_env(),
        cwd=log.parent,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def committed_vectors(index: Path, catalogue: str | None) -> int:
    try:
        store = IndexStore(index, catalogue=catalogue)
    except (FileNotFoundError, RuntimeError):
        return 0  # not created yet
    try:
        with store.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(catalog.vectors)).scalar_one()
    finally:
        store.engine.dispose()


def wait_for_a_committed_batch(proc: subprocess.Popen, index: Path, catalogue: str | None, log: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while committed_vectors(index, catalogue) == 0:
        assert proc.poll() is None, f"the run ended before its first batch:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no batch committed in time"
        time.sleep(0.05)


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def assert_every_tile_once(index: Path, catalogue: str | None, reference: dict) -> None:
    store = IndexStore(index, catalogue=catalogue)
    got = vectors_by_key(store)
    assert got.keys() == reference.keys()
    for key, vector in reference.items():
        np.testing.assert_allclose(got[key], vector, atol=VECTOR_ATOL)
    assert store.tile_count() == 12
    for space in MODELS:
        view = store.open_space(space)
        ids = faiss_ids(view).tolist()
        assert view.ntotal == 12 and len(set(ids)) == 12
        assert sorted(ids) == sorted(store.all_vectors(space)[0].tolist())


def test_sigkill_mid_run_then_resume_on_postgresql(archive, tmp_path, pg_catalogue, tiny_msclip, tiny_rsmclip):
    src, reference = archive
    index, log = tmp_path / "index", tmp_path / "run.log"
    proc = start_index(src, index, pg_catalogue, log, batch_size=4)
    try:
        wait_for_a_committed_batch(proc, index, pg_catalogue, log)
        assert proc.poll() is None, "the run finished before it could be killed: nothing was tested"
    finally:
        kill(proc)
    committed = committed_vectors(index, pg_catalogue)
    assert 0 < committed < 24 and committed % 2 == 0  # whole batches: both spaces of each tile
    store = IndexStore(index, catalogue=pg_catalogue)
    with store.engine.connect() as conn:
        assert conn.execute(select(catalog.runs.c.status)).scalars().all() == ["running"]  # the killed run

    # the killed run's writer lock died with its session: the next run takes it and finishes the job
    summary = index_archive(
        [src],
        index=index,
        catalogue=pg_catalogue,
        encoders=encoders_of(tiny_msclip, tiny_rsmclip),
        settings=EUROSAT,
        workers=0,
        batch_size=4,
    )
    assert summary.indexed == 12 - committed // 2 and summary.indexed + summary.unchanged == 12
    assert_every_tile_once(index, pg_catalogue, reference)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_of_two_index_runs_started_together_on_one_catalogue_one_is_refused(archive, tmp_path, request, backend):
    from tests.store.conftest import catalogue_for

    catalogue = catalogue_for(request, backend)
    src, reference = archive
    index = tmp_path / "index"
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    runs = [start_index(src, index, catalogue, log, batch_size=2) for log in logs]
    try:
        codes = [run.wait(timeout=WAIT_S) for run in runs]
    finally:
        for run in runs:
            if run.poll() is None:
                kill(run)
    outputs = [" ".join(log.read_text().split()) for log in logs]
    assert sorted(codes) == [0, 2], outputs
    refused = outputs[codes.index(2)]
    assert "is being written by msearch index (pid" in refused or "is being written by another session" in refused
    assert "two index runs on one catalogue are not allowed" in refused
    store = IndexStore(index, catalogue=catalogue)
    with store.engine.connect() as conn:  # the refused run left nothing behind, not even a run row
        assert conn.execute(select(catalog.runs.c.status)).scalars().all() == ["finished"]
    assert_every_tile_once(index, catalogue, reference)
    store.lock_for_writing("test")  # released at the end of the run
    store.unlock()


def test_queries_read_a_consistent_snapshot_while_a_run_writes_on_postgresql(archive, tmp_path, pg_catalogue):
    src, _ = archive
    index, log = tmp_path / "index", tmp_path / "run.log"
    proc = start_index(src, index, pg_catalogue, log, batch_size=2)
    seen, deadline = [], time.monotonic() + WAIT_S
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if not (index / "spaces" / "tiny-ms-clip" / "manifest.json").exists():
                time.sleep(0.05)
                continue
            store = IndexStore(index, catalogue=pg_catalogue)
            view = store.open_space("tiny-ms-clip")
            ids = faiss_ids(view).tolist()
            assert len(set(ids)) == len(ids) == view.ntotal
            with store.engine.connect() as conn:
                catalogued = set(conn.execute(select(catalog.tiles.c.id)).scalars())
            assert set(ids) <= catalogued  # every tile the view holds is committed
            if ids:  # a query answers from the snapshot: its best match for a stored vector is that tile
                vector = store.vectors_of("tiny-ms-clip", ids[:1])
                assert store.search(view, vector, 1)[1][0, 0] == ids[0]
            seen.append(view.ntotal)
            store.engine.dispose()
    finally:
        if proc.poll() is None:
            kill(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert seen and seen == sorted(seen)  # an appending run: views only grow
    assert IndexStore(index, catalogue=pg_catalogue).open_space("tiny-ms-clip").ntotal == 12
