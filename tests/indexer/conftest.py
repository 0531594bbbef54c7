"""A real local Ray cluster for the tests of `msearch index --ray`: started once per test session, and only
when a test asks for it (a start costs seconds), with 2 CPUs and a small object store."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

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
