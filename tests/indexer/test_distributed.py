"""`msearch index --ray`: the same index as a local run, built on a real local Ray cluster (2 CPUs, started
once per session by tests/indexer/conftest.py), with the tiny models of both families."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from msearch.cli import app
from msearch.indexer import distributed
from msearch.indexer.encoding import embed_batch
from msearch.indexer.pipeline import index_archive
from msearch.indexer.plan import plan
from msearch.indexer.readers import discover
from msearch.indexer.reading import PreparedTiles
from msearch.store.index_store import IndexStore
from msearch.store.vector_codec import VECTOR_ATOL
from tests.indexer.helpers import (
    EUROSAT,
    MODELS,
    assert_view_matches_catalogue,
    catalogue_vectors,
    copy_eurosat,
    index_command,
    kill,
    make_bad_archive,
    problems_by_key,
    subprocess_env,
    tiles_by_key,
    vector_seqs,
    vectors_by_key,
    wait_for_first_commit,
)

# Columns that differ between two runs by construction: ids are assigned in merge order, and runs differ.
RUN_COLUMNS = ("id", "run_id", "indexed_at")


@pytest.fixture
def encoders(tiny_msclip, tiny_rsmclip):
    return {"tiny-ms-clip": tiny_msclip, "rs-m-clip": tiny_rsmclip}


def run(src, index, encoders, ray_address=None, **kw):
    kw.setdefault("settings", EUROSAT)
    kw.setdefault("workers", 0)
    kw.setdefault("batch_size", 2)
    return index_archive([src], index=index, encoders=dict(encoders), ray_address=ray_address, **kw)


def assert_same_index(got: Path, want: Path) -> None:
    """Same tiles (each once, same catalogue rows), vectors within cosine 0.99999, same problems, and FAISS
    views that hold exactly the catalogue's vectors."""
    got_tiles, want_tiles = tiles_by_key(got), tiles_by_key(want)
    assert sorted(got_tiles) == sorted(want_tiles)
    for key, row in want_tiles.items():
        drop = lambda r: {k: v for k, v in r.items() if k not in RUN_COLUMNS}  # noqa: E731
        assert drop(got_tiles[key]) == drop(row), key
    for space in MODELS:
        got_vectors, want_vectors = vectors_by_key(got, space), vectors_by_key(want, space)
        assert sorted(got_vectors) == sorted(want_vectors) == sorted(want_tiles)
        for key, vector in want_vectors.items():
            cosine = float(got_vectors[key] @ vector / np.linalg.norm(got_vectors[key]) / np.linalg.norm(vector))
            assert cosine >= 0.99999, (space, key, cosine)
        assert_view_matches_catalogue(got, space)
        assert IndexStore(got).open_space(space).ntotal == len(want_tiles)
    assert problems_by_key(got) == problems_by_key(want)


def staged(index: Path) -> list[str]:
    folder = index / distributed.STAGING_DIR
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_a_ray_run_equals_a_local_run_bad_files_included(shared_data, tmp_path, encoders, ray_cluster):
    src = tmp_path / "src"
    make_bad_archive(shared_data, src)  # 2 good tiles, 5 broken or empty files
    copy_eurosat(shared_data, src, classes=("River",), per_class=2)
    local = run(src, tmp_path / "local", encoders)
    on_ray = run(src, tmp_path / "ray", encoders, ray_address="local")

    assert (on_ray.discovered, on_ray.indexed, on_ray.unchanged) == (local.discovered, local.indexed, 0) == (9, 4, 0)
    assert sorted(on_ray.failed) == sorted(local.failed) and len(local.failed) == 4
    assert sorted(on_ray.skipped) == sorted(local.skipped)
    assert [(Path(where).relative_to(src).as_posix(), why) for where, why in local.skipped] == [
        ("bad/all_zeros.tif", "every pixel is nodata")
    ]
    assert set(on_ray.stage_seconds) == {"read", "encode", "merge"}
    assert all(seconds > 0 for seconds in on_ray.stage_seconds.values())
    assert_same_index(tmp_path / "ray", tmp_path / "local")
    assert staged(tmp_path / "ray") == []  # every shard merged, then deleted


def test_an_encoder_actor_killed_mid_run_is_restarted(shared_data, tmp_path, encoders, ray_cluster):
    """SIGKILL to the encoder actor's process after the first merged shard: Ray restarts it, it redoes its
    unit, and the index is the local run's."""
    import psutil

    src = tmp_path / "src"
    copy_eurosat(shared_data, src, classes=("Forest", "River"), per_class=2)
    run(src, tmp_path / "local", encoders)
    killed = []

    def kill_the_encoder(state) -> None:
        done, total = state.committed, state.total
        if killed:
            return
        # This process started the cluster: its workers are our descendants, the actor named by its class.
        actors = [
            process
            for process in psutil.Process().children(recursive=True)
            if "ShardEncoder" in " ".join(process.cmdline())
        ]
        assert len(actors) == 1, [a.cmdline() for a in actors]
        actors[0].kill()
        killed.append(actors[0].pid)
        assert done < total, "the run was over before the actor could be killed: nothing was tested"

    summary = run(src, tmp_path / "ray", encoders, ray_address="local", batch_size=1, progress=kill_the_encoder)
    assert killed and summary.indexed == 4
    assert_same_index(tmp_path / "ray", tmp_path / "local")


def test_an_incremental_rerun_through_ray_embeds_only_new_tiles(shared_data, tmp_path, encoders, ray_cluster):
    src, index = tmp_path / "src", tmp_path / "index"
    copy_eurosat(shared_data, src, classes=("Forest", "River"), per_class=2)
    assert run(src, index, encoders).indexed == 4  # a local run: both kinds of run share one plan
    before = vector_seqs(index)

    copy_eurosat(shared_data, src, classes=("SeaLake",), per_class=2)
    touched = src / "Forest" / "Forest_1.tif"  # a new mtime, the same content: read again, vectors kept
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    common = ["index", str(src), "--index", str(index), "--model", MODELS[0], "--model", MODELS[1]]
    common += ["--band-order", "eurosat", "--batch-size", "2"]
    result = CliRunner().invoke(app, common, env={"MSEARCH_RAY_ADDRESS": ray_cluster})
    assert result.exit_code == 0, result.output
    assert "indexed 2, unchanged 4" in result.output
    assert re.search(r"stages: read [\d.]+ s, encode [\d.]+ s, merge [\d.]+ s", result.output)
    after = vector_seqs(index)
    assert {k: v for k, v in after.items() if k in before} == before  # the first four kept their vectors
    assert tiles_by_key(index)["Forest/Forest_1.tif"]["mtime"] == touched.stat().st_mtime  # its row was updated
    assert len(after) == 12 and len(tiles_by_key(index)) == 6

    unchanged = CliRunner().invoke(app, common + ["--ray", ray_cluster])
    assert unchanged.exit_code == 0 and "indexed 0, unchanged 6" in unchanged.output
    assert vector_seqs(index) == after


def test_ray_options_are_checked(tmp_path, ray_cluster):
    src = tmp_path / "src"
    src.mkdir()
    no_ray = CliRunner().invoke(app, ["index", str(src), "--index", str(tmp_path / "i"), "--ray-actors", "2"])
    assert no_ray.exit_code == 2 and "--ray-actors applies to --ray" in no_ray.output
    with pytest.raises(ValueError, match=r"--ray-actors 2 leaves no CPU for reading: the cluster has 2 CPUs"):
        distributed.encoder_pool(2)
    assert distributed.encoder_pool(None) == (1, {"num_cpus": 1})


def test_work_units_keep_file_groups_together():
    """A scene's chips share its files: they stay in one unit (cut only when larger than a unit)."""
    from msearch.indexer.plan import PendingTile
    from msearch.indexer.tiles import TileSource

    def tiles(name: str, n: int) -> list[PendingTile]:
        files = (Path(f"/a/{name}.tif"),)
        return [PendingTile(TileSource(Path("/a"), f"{name}.tif#{i}", files, "geotiff"), "s", ("x",)) for i in range(n)]

    scene, small, big = tiles("scene", 3), tiles("small", 1), tiles("big", 9)
    units = distributed.work_units(small + scene + big, 4)
    assert units == [small + scene, big[:4], big[4:8], big[8:]]


def write_leftover_shard(src: Path, index: Path, encoders, settings, keys: list[str]) -> tuple[dict, Path]:
    """A complete shard as a killed run's worker leaves it, of the tiles `keys`, with every vector negated (so
    that a vector read back from the catalogue says whether it was merged or recomputed). Returns them."""
    store = IndexStore(index, create=True)
    pending = [p for p in plan(store, discover([src], settings), MODELS).pending if p.source.key in keys]
    assert len(pending) == len(keys)
    recipes = {space: encoder.card.input for space, encoder in encoders.items()}
    results = [result for batch in PreparedTiles(pending, recipes, settings, len(pending)) for result in batch]
    batch = embed_batch(results, encoders)
    for _, vectors in batch.done:
        for space in vectors:
            vectors[space] = -vectors[space]
    facts = json.loads(distributed.ShardFacts.of(encoders, settings).to_json())
    signatures = {(str(p.source.root), p.source.key): p.stat_signature for p in pending}
    staging = index / distributed.STAGING_DIR
    staging.mkdir(exist_ok=True)
    shard = distributed.write_shard(staging / "shard-1-0-000000", [batch], signatures, facts)
    return {f"{space}/{row['key']}": vectors[space] for row, vectors in batch.done for space in vectors}, shard


def test_complete_shards_are_merged_not_recomputed_and_half_written_ones_redone(
    shared_data, tmp_path, encoders, ray_cluster
):
    """A killed run's staging folder: a complete shard (one of its tiles changed since), a temporary file and
    a truncated shard. The resumed run merges what still fits the plan and redoes the rest."""
    src = tmp_path / "src"
    copy_eurosat(shared_data, src, classes=("Forest", "River", "SeaLake"), per_class=2)
    reference = tmp_path / "reference"
    index = tmp_path / "index"
    merged_keys = ["Forest/Forest_1.tif", "River/River_10.tif"]
    changed = "SeaLake/SeaLake_1.tif"  # its file changes after its shard was written: the shard is stale for it
    negated, shard = write_leftover_shard(src, index, encoders, EUROSAT, merged_keys + [changed])
    assert pq.read_table(shard).num_rows == 3
    (src / changed).write_bytes((src / "SeaLake" / "SeaLake_10.tif").read_bytes())
    run(src, reference, encoders)
    staging = shard.parent
    # What a worker killed while writing leaves: a temporary file, and (on a file system that lost the
    # rename's ordering) a shard whose name says complete but whose bytes stop half way.
    (staging / ("shard-1-0-000001" + distributed.PARTIAL_SUFFIX)).write_bytes(shard.read_bytes()[:200])
    second = write_leftover_shard(src, tmp_path / "scratch", encoders, EUROSAT, ["SeaLake/SeaLake_1.tif"])[1]
    truncated = staging / "shard-1-0-000002.parquet"
    truncated.write_bytes(second.read_bytes()[: second.stat().st_size // 2])

    summary = run(src, index, encoders, ray_address="local")
    assert (summary.indexed, summary.unchanged, summary.failed) == (6, 0, [])
    assert any(f"merged 2 tiles from 2 shards an interrupted run left in {staging}" == n for n in summary.notes)
    assert any(n.startswith("ignored the unreadable shard shard-1-0-000002.parquet") for n in summary.notes)
    assert staged(index) == []
    for space in MODELS:
        got, want = vectors_by_key(index, space), vectors_by_key(reference, space)
        assert sorted(got) == sorted(want) and len(got) == 6
        for key in want:
            expected = negated[f"{space}/{key}"] if key in merged_keys else want[key]
            np.testing.assert_allclose(got[key], expected, atol=VECTOR_ATOL)  # the shard's own vectors: not recomputed
        np.testing.assert_allclose(got[changed], got["SeaLake/SeaLake_10.tif"], atol=VECTOR_ATOL)  # the new content
        assert_view_matches_catalogue(index, space)
        assert IndexStore(index).open_space(space).ntotal == 6


@pytest.fixture(scope="module")
def archive12(shared_data, tmp_path_factory, tiny_msclip, tiny_rsmclip):
    """12 EuroSAT tiles and an index of them built by one uninterrupted local run."""
    base = tmp_path_factory.mktemp("archive12-ray")
    src = base / "src"
    copy_eurosat(shared_data, src, classes=("AnnualCrop", "Forest", "River", "SeaLake"), per_class=3)
    reference = base / "reference"
    assert run(src, reference, {"tiny-ms-clip": tiny_msclip, "rs-m-clip": tiny_rsmclip}).indexed == 12
    return src, reference


def test_a_killed_driver_resumed_gives_every_tile_once(archive12, tmp_path, encoders, ray_cluster):
    """The driver (a `msearch index --ray HOST:PORT` process on the session's cluster) is killed with SIGKILL
    after its first merged shard; the same command run again finishes the job."""
    src, reference = archive12
    index, log = tmp_path / "index", tmp_path / "run.log"
    command = index_command(src, index, batch_size=1) + ["--ray", ray_cluster]
    proc = subprocess.Popen(
        command, env=subprocess_env(), stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_for_first_commit(proc, index, log, "shard")
        assert proc.poll() is None, "the run finished before it could be killed: nothing was tested"
    finally:
        kill(proc)
    committed = catalogue_vectors(index)
    assert 0 < committed < 24 and committed % 2 == 0  # whole shards: both spaces of each tile
    assert "core_worker.cc" not in log.read_text()  # Ray's own log lines stay in its log folder

    summary = run(src, index, encoders, ray_address=ray_cluster)
    assert (summary.indexed, summary.unchanged) == (12 - committed // 2, committed // 2)
    assert_same_index(index, reference)
    assert staged(index) == []


RAY_CORE_LINE = b"[2026-12-07 05:23:29,547 E 19462 19462] core_worker.cc:2465: Actor with class name: ...\n"


def test_ray_log_lines_stay_off_the_terminal_unless_the_run_fails(capfd):
    """Written to the process's stderr (fd 2, as Ray's C++ core writes), Ray's log lines are held back while
    everything else passes in order, a progress bar's carriage returns included; a failure shows them."""
    with distributed.ray_errors_held_back():
        os.write(2, b"indexing 1/2")  # a progress bar on a terminal: the cursor stays at the end of its line
        os.write(2, RAY_CORE_LINE)
        os.write(2, b"\r\x1b[2Kindexing 2/2 \x1b[33m0:00:25")
        os.write(2, RAY_CORE_LINE[:20])  # a line in two writes
        os.write(2, RAY_CORE_LINE[20:])
        os.write(2, b"\r[a line of ours]\n")
    assert capfd.readouterr().err == "indexing 1/2\r\x1b[2Kindexing 2/2 \x1b[33m0:00:25\r[a line of ours]\n"
    with pytest.raises(RuntimeError, match="the cluster went away"):
        with distributed.ray_errors_held_back():
            os.write(2, RAY_CORE_LINE)
            raise RuntimeError("the cluster went away")
    assert capfd.readouterr().err == RAY_CORE_LINE.decode()


def test_without_ray_option_nothing_imports_ray(shared_data, tmp_path):
    src = tmp_path / "src"
    copy_eurosat(shared_data, src, classes=("Forest",), per_class=1)
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from msearch.cli import app\n"
        f"result = CliRunner().invoke(app, {index_command(src, tmp_path / 'index', 2)[3:]!r})\n"
        "assert result.exit_code == 0, result.output\n"
        "assert 'indexed 1,' in result.output, result.output\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=subprocess_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_an_actor_without_a_gpu_encodes_on_the_cpu(ray_cluster):
    import ray

    from msearch.indexer.distributed import actor_device

    # The test cluster has CPUs only: an actor gets no GPU from Ray and places its models on the CPU. (A GPU
    # actor's `cuda` needs a GPU machine: see bench/index_throughput.py --ray.)
    assert ray.get(ray.remote(num_cpus=0)(actor_device).remote()) == "cpu"


def test_a_bf16_ray_run_encodes_on_its_actors_in_bf16(shared_data, tmp_path, tiny_msclip, ray_cluster):
    """--precision bf16 with --ray: each actor loads its encoders in the driver's precision (checked against
    fp32 at load, on the actor's device), and the manifest records bf16; the vectors stay within the bf16
    gate of a local fp32 run's."""
    import ray

    from msearch.models import load_encoder

    bf16 = {"tiny-ms-clip": load_encoder("tiny-ms-clip", precision="bf16")}
    facts = distributed.ShardFacts.of(bf16, EUROSAT).to_json()
    actor = ray.remote(num_cpus=0)(distributed.ShardEncoder).remote(
        {"tiny-ms-clip": "bf16"}, None, facts, str(tmp_path), 2
    )
    loaded = ray.get(actor.__ray_call__.remote(lambda self: {s: e.precision for s, e in self.encoders.items()}))
    assert loaded == {"tiny-ms-clip": "bf16"}
    ray.kill(actor)

    src = tmp_path / "src"
    copy_eurosat(shared_data, src, classes=("River", "Forest"), per_class=2)
    run(src, tmp_path / "local", {"tiny-ms-clip": tiny_msclip})
    summary = run(src, tmp_path / "ray", bf16, ray_address="local")
    assert (summary.indexed, summary.precisions) == (4, {"tiny-ms-clip": "bf16"})
    assert IndexStore(tmp_path / "ray").manifest("tiny-ms-clip").precisions == ["bf16"]
    got, want = vectors_by_key(tmp_path / "ray", "tiny-ms-clip"), vectors_by_key(tmp_path / "local", "tiny-ms-clip")
    assert sorted(got) == sorted(want)
    for key, vector in want.items():
        assert float(got[key] @ vector / np.linalg.norm(got[key]) / np.linalg.norm(vector)) >= 0.999, key
