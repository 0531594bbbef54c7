"""A tile is its resolved file and window; symlinked folders are walked once; an unchanged re-check loads no
torch; the progress total is known after planning; Ctrl-C ends a run as interrupted, and it resumes;
--rebuild-ann on an exact space loads no model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from msearch.indexer import rebuild
from msearch.indexer.pipeline import index_archive, rebuild_indexes
from msearch.indexer.runs import Progress, RunInterrupted
from msearch.indexer.tiles import IdentityResolver, iter_files
from msearch.schema import catalog
from msearch.store.index_store import IndexStore
from tests.indexer.helpers import (
    EUROSAT,
    MODELS,
    assert_view_matches_catalogue,
    copy_eurosat,
    index_command,
    subprocess_env,
    tiles_by_key,
)


@pytest.fixture
def encoders(tiny_msclip, tiny_rsmclip):
    return {"tiny-ms-clip": tiny_msclip, "rs-m-clip": tiny_rsmclip}


def run(src, index, encoders=None, **kw):
    kw.setdefault("settings", EUROSAT)
    kw.setdefault("workers", 0)
    if encoders is None:
        kw.setdefault("models", MODELS)
    return index_archive(src if isinstance(src, list) else [src], index=index, encoders=encoders, **kw)


def run_statuses(index: Path) -> list[str]:
    with IndexStore(index).engine.connect() as conn:
        return [row.status for row in conn.execute(select(catalog.runs.c.status).order_by(catalog.runs.c.id))]


def test_iter_files_follows_symlinked_folders_once(tmp_path):
    tree, outside = tmp_path / "tree", tmp_path / "outside"
    (tree / "a").mkdir(parents=True)
    outside.mkdir()
    (tree / "a" / "x.tif").write_bytes(b"")
    (outside / "y.tif").write_bytes(b"")
    (tree / "b").symlink_to(outside, target_is_directory=True)
    (tree / "a" / "loop").symlink_to(tree, target_is_directory=True)
    (tree / "a again").symlink_to(tree / "a", target_is_directory=True)
    assert [p.relative_to(tree).as_posix() for p in iter_files(tree)] == ["a/x.tif", "b/y.tif"]


def test_tile_identity_is_the_resolved_file_and_window(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "t.tif").write_bytes(b"")
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    (real / "alias.tif").symlink_to(real / "t.tif")
    resolver = IdentityResolver()
    one = resolver.tile_identity(str(real), "t.tif")
    assert one == str((real / "t.tif").resolve())
    assert resolver.tile_identity(str(tmp_path), "real/t.tif") == one  # another root
    assert resolver.tile_identity(str(tmp_path), "link/t.tif") == one  # a symlinked folder
    assert resolver.tile_identity(str(real), "alias.tif") == one  # a symlinked file
    assert resolver.tile_identity(str(real), "t.tif#0,0,224,224") == one + "#0,0,224,224"
    assert resolver.tile_identity(str(real), "t.tif#224,0,224,224") != one + "#0,0,224,224"


def test_two_roots_onto_one_file_index_it_once_and_a_rerun_keeps_it(shared_data, tmp_path, encoders):
    src, index = tmp_path / "src", tmp_path / "index"
    copy_eurosat(shared_data, src)
    first = run(src / "Forest", index, dict(encoders))
    assert first.indexed == 2
    both = run([src, src / "Forest"], index, dict(encoders))
    assert (both.indexed, both.unchanged, both.duplicates) == (2, 2, 2)  # River new; Forest found twice
    keys = tiles_by_key(index)
    assert len(keys) == 4
    assert {row["root"] for row in keys.values()} == {str(src.resolve()), str((src / "Forest").resolve())}
    for space in MODELS:
        assert_view_matches_catalogue(index, space)


def test_progress_total_is_known_after_planning_and_moves_per_tile(shared_data, tmp_path, encoders):
    src = tmp_path / "src"
    copy_eurosat(shared_data, src, per_class=3)
    states: list[tuple[int, int, int]] = []
    run(
        src,
        tmp_path / "index",
        dict(encoders),
        batch_size=4,
        progress=lambda s: states.append((s.total, s.read, s.committed)),
    )
    assert states[0] == (6, 0, 0)  # before any read
    assert all(total == 6 for total, _, _ in states)
    reads = [read for _, read, _ in states]
    assert reads == sorted(reads) and set(reads) == {0, 1, 2, 3, 4, 5, 6}  # tile by tile
    committed = [committed for _, _, committed in states]
    assert committed == sorted(committed) and set(committed) == {0, 4, 6}  # per batch


def test_keyboard_interrupt_records_an_interrupted_run_that_resumes(shared_data, tmp_path, encoders):
    src, index = tmp_path / "src", tmp_path / "index"
    copy_eurosat(shared_data, src, per_class=3)

    def interrupt_after_first_batch(state: Progress) -> None:
        if state.committed:
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted, match=r"^interrupted: 2 tiles committed, run the same command to resume$"):
        run(src, index, dict(encoders), batch_size=2, progress=interrupt_after_first_batch)
    assert run_statuses(index) == ["interrupted"]
    assert len(tiles_by_key(index)) == 2
    resumed = run(src, index, dict(encoders))
    assert (resumed.indexed, resumed.unchanged) == (4, 2)
    assert run_statuses(index) == ["interrupted", "finished"]


def test_ctrl_c_on_the_command_line(shared_data, tmp_path):
    """A real SIGINT to the running command, as a terminal sends it to the process group."""
    src, index, log = tmp_path / "src", tmp_path / "index", tmp_path / "run.log"
    copy_eurosat(shared_data, src, classes=("AnnualCrop", "Forest", "River", "SeaLake"), per_class=5)
    proc = subprocess.Popen(
        [*index_command(src, index, batch_size=1), "--workers", "0"],
        env=subprocess_env(),
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # As from a terminal: a test run started in the background inherits SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 240
        while not (index / catalog.CATALOGUE_FILE).exists() or not _committed(index):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no batch committed within 4 minutes"
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be interrupted: nothing was tested"
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 130, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    committed = len(tiles_by_key(index))
    assert 0 < committed < 20
    text = " ".join(log.read_text().split())
    tiles = "1 tile" if committed == 1 else f"{committed} tiles"
    assert f"interrupted: {tiles} committed, run the same command to resume" in text
    assert "Traceback" not in text
    assert run_statuses(index) == ["interrupted"]


def _committed(index: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{index / catalog.CATALOGUE_FILE}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM tiles").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def test_unchanged_recheck_and_a_missing_path_import_no_torch(shared_data, tmp_path, encoders):
    src, index = tmp_path / "src", tmp_path / "index"
    copy_eurosat(shared_data, src)
    run(src, index, dict(encoders))
    script = (
        "import sys, json\n"
        "from typer.testing import CliRunner\n"
        "from msearch.cli import app\n"
        "runner = CliRunner()\n"
        "args = ['--model', 'tiny-ms-clip', '--model', 'rs-m-clip', '--band-order', 'eurosat', '--index', sys.argv[2]]\n"
        "missing = runner.invoke(app, ['index', sys.argv[1] + '/nonexistent', *args])\n"
        "recheck = runner.invoke(app, ['index', sys.argv[1], *args])\n"
        "print(json.dumps([missing.exit_code, recheck.exit_code, recheck.output, 'torch' in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(src), str(index)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    missing_code, recheck_code, recheck_output, torch_loaded = json.loads(out.stdout.splitlines()[-1])
    assert (missing_code, recheck_code) == (2, 0)
    assert "indexed 0, unchanged 4" in recheck_output
    assert not torch_loaded


def test_rebuild_ann_of_an_exact_space_loads_no_model(shared_data, tmp_path, encoders, monkeypatch):
    src, index = tmp_path / "src", tmp_path / "index"
    copy_eurosat(shared_data, src)
    run(src, index, dict(encoders))
    loads = []
    monkeypatch.setattr(rebuild, "load_encoder", lambda *args: loads.append(args))
    notes = rebuild_indexes(index)
    assert loads == []
    assert notes == [f"{space}: 4 vectors, searched with exact search" for space in ("rs-m-clip", "tiny-ms-clip")]
