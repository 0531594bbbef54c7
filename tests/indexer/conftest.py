"""Fixtures of the indexer tests: the tiny encoders of both families, small copies of the sample tiles, an
observer of model loads, and a real local Ray cluster for the tests of `msearch index --ray` (started once per
test session, and only when a test asks for it: a start costs seconds, with 2 CPUs and a small object store)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from msearch.indexer import pipeline
from tests.indexer.helpers import copy_eurosat, run

RAY_CPUS = 2
RAY_OBJECT_STORE_BYTES = 200 * 2**20


def _ray_or_skip():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CI"):
            raise  # CI installs msearch[test], which pulls in Ray: its absence there is a failure
        pytest.skip(f"Ray Data is not installed ({exc}): pip install 'msearch[ray]' to run the --ray tests")
    return ray


@pytest.fixture(scope="session")
def ray_cluster():
    """The cluster's address (HOST:PORT), for drivers in other processes; this process is connected to it."""
    ray = _ray_or_skip()
    # Short: Ray's socket paths under it must stay within the 107 bytes a Unix socket name allows.
    temp = Path(tempfile.mkdtemp(prefix="msr-", dir="/tmp"))
    os.environ["RAY_TMPDIR"] = str(temp)
    os.environ["RAY_AUTH_MODE"] = "disabled"  # loopback only; 2.60 would warn about an auth token otherwise
    ray.init(
        num_cpus=RAY_CPUS,
        object_store_memory=RAY_OBJECT_STORE_BYTES,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=str(temp),
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        _stop_leftovers(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _stop_leftovers(temp: Path) -> None:
    """Helper processes of this cluster that outlive ray.shutdown (agents): found by the session folder in
    their command line, stopped by pid."""
    import psutil

    for process in psutil.process_iter(["pid", "cmdline"]):
        if process.info["pid"] != os.getpid() and str(temp) in " ".join(process.info["cmdline"] or ()):
            try:
                os.kill(process.info["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def encoders(tiny_msclip, tiny_rsmclip):
    """Loaded once per session; a fresh dict per test because index_archive fills in what it loads."""
    return {"tiny-ms-clip": tiny_msclip, "rs-m-clip": tiny_rsmclip}


@pytest.fixture
def load_calls(monkeypatch):
    """Observes pipeline.load_encoder (the real function still runs): the spaces it was asked to load."""
    calls = []
    real = pipeline.load_encoder

    def counting(space, *args, **kwargs):
        calls.append(space)
        return real(space, *args, **kwargs)

    monkeypatch.setattr(pipeline, "load_encoder", counting)
    return calls


@pytest.fixture
def eurosat4(shared_data, tmp_path):
    src = tmp_path / "eurosat"
    copy_eurosat(shared_data, src)
    return src


@pytest.fixture(scope="module")
def archive12(shared_data, tmp_path_factory, tiny_msclip, tiny_rsmclip):
    """12 EuroSAT tiles and an index of them built by one uninterrupted run."""
    base = tmp_path_factory.mktemp("archive12")
    src = base / "src"
    copy_eurosat(shared_data, src, classes=("AnnualCrop", "Forest", "River", "SeaLake"), per_class=3)
    reference = base / "reference"
    summary = run(src, reference, {"tiny-ms-clip": tiny_msclip, "rs-m-clip": tiny_rsmclip})
    assert summary.indexed == 12
    return src, reference
