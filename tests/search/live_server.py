"""A real `msearch serve` process on a free loopback port, for the tests that talk to it over HTTP (the page in
chromium, the schema-driven fuzzer, the client)."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def live_server(index: Path, log: Path, *options: str):
    """`msearch serve --index INDEX OPTIONS...` until the block ends; yields its base URL."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "msearch", "serve", "--index", str(index), "--port", str(port), *options],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as response:
                    assert json.load(response) == {"status": "ok"}
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"msearch serve did not start: {log.read_text()[-3000:]}")
                time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
