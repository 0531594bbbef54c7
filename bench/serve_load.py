"""Load on `msearch serve`: N concurrent clients for a bounded time, on loopback, over N synthetic tiles.

The index holds --tiles tiles with synthetic clustered 512-d vectors (msearch.store.synthetic) in the space of
a randomly initialised full-size Llama3-MS-CLIP (its text tower exported to numpy by the first query, as a
real index's is). A real `msearch serve` process answers; each client is a thread with
one keep-alive connection that sends its next request as soon as the last one is answered. Phases:

  repeated texts   GET /api/search over a pool of texts, each asked once before the clock starts (the
                   query-embedding cache answers: what a warm server does for popular queries)
  new texts        GET /api/search, every text never asked before (encoded by the text tower each time)
  feedback         POST /api/search with a text and two liked tiles (Rocchio)

Each phase prints requests/s, p50/p99 latency and the error count (any status but 200, or a failed
connection). Target on the 2-core build machine: repeated texts p50 <= 50 ms with 8 clients, no errors.

    python bench/serve_load.py                      # 100k tiles, full-size text tower, 8 clients, 30 s a phase
    python bench/serve_load.py --quick              # the same at 10 s a phase
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_throughput import REPO_ROOT, isolate_model_state  # noqa: E402
from query_latency import build_index, build_model  # noqa: E402

TARGET_P50_MS = 50.0
TEXTS = (
    "fields beside a river",
    "a harbour with ships",
    "dense forest",
    "a motorway through farmland",
    "an industrial area",
    "a lake among hills",
    "houses and gardens",
    "vineyards on a slope",
    "a coastline with beaches",
    "an airport runway",
    "snow on mountains",
    "a city centre",
    "pasture with hedges",
    "a reservoir behind a dam",
    "orchards in rows",
    "a river delta",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    parser.add_argument("--quick", action="store_true", help="10 s a phase")
    parser.add_argument("--top-k", type=int, default=10)
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(port: int, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("msearch serve exited before it answered")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("msearch serve did not answer /health in time")


def run_phase(port: int, clients: int, seconds: float, make_request) -> dict:
    """`clients` threads send make_request(client, n) -> (method, path, body) until the time is up."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        n = 0
        mine, failed = [], 0
        while time.monotonic() < deadline:
            method, path, body = make_request(number, n)
            n += 1
            headers = {"Content-Type": "application/json"} if body is not None else {}
            started = time.perf_counter()
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append(time.perf_counter() - started)
            failed += not ok
        connection.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "per_second": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "errors": errors[0],
    }


def search_path(text: str, top_k: int) -> str:
    return "/api/search?" + urllib.parse.urlencode({"q": text, "top_k": top_k})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seconds = 10.0 if args.quick else args.seconds
    with tempfile.TemporaryDirectory(prefix="msearch-bench-") as tmp:
        scratch = Path(tmp)
        isolate_model_state(scratch)
        sys.path.insert(0, str(REPO_ROOT))
        model = "llama3-ms-clip-base"
        sha256 = build_model(model, scratch)
        index = scratch / "index"
        started = time.perf_counter()
        search_index = build_index(model, index, sha256, args.tiles)
        print(
            f"{args.tiles} synthetic tiles in {model}'s space, {search_index}, built in {time.perf_counter() - started:.0f} s"
        )

        port = free_port()
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        log = (scratch / "serve.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "msearch", "serve", "--index", str(index), "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(port, server)
            # Warm-up: the first query exports the text tower (torch, once per weights); then every pooled text
            # is asked once, so that the repeated phase measures a warm server.
            for text in TEXTS:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
                connection.request("GET", search_path(text, args.top_k))
                response = connection.getresponse()
                body = response.read()
                if response.status != 200:
                    server_log = (scratch / "serve.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"warm-up query failed: {response.status} {body[:300]!r}\n{server_log}")
            load_before = os.getloadavg()
            phases = {
                "repeated texts": run_phase(
                    port,
                    args.clients,
                    seconds,
                    lambda c, n: ("GET", search_path(TEXTS[(c * 7 + n) % len(TEXTS)], args.top_k), None),
                ),
                "new texts": run_phase(
                    port,
                    args.clients,
                    seconds,
                    lambda c, n: (
                        "GET",
                        search_path(f"{TEXTS[n % len(TEXTS)]}, client {c} take {n}", args.top_k),
                        None,
                    ),
                ),
                "feedback": run_phase(
                    port,
                    args.clients,
                    seconds,
                    lambda c, n: (
                        "POST",
                        "/api/search",
                        json.dumps(
                            {
                                "q": TEXTS[(c + n) % len(TEXTS)],
                                "like": [1 + (c * 1009 + n * 7) % args.tiles, 1 + (c * 31 + n * 13) % args.tiles],
                                "top_k": args.top_k,
                            }
                        ),
                    ),
                ),
            }
            load_after = os.getloadavg()
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()

    print(
        f"{args.clients} clients, {seconds:.0f} s a phase, top_k {args.top_k}, cores {os.cpu_count()}; load average "
        f"before {'/'.join(f'{v:.2f}' for v in load_before)}, after {'/'.join(f'{v:.2f}' for v in load_after)}"
    )
    print(f"{'phase':<16}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, figures in phases.items():
        print(
            f"{name:<16}{figures['requests']:>10}{figures['per_second']:>9.1f}{figures['p50_ms']:>9.1f}"
            f"{figures['p99_ms']:>9.1f}{figures['errors']:>8}"
        )
    repeated = phases["repeated texts"]
    met = repeated["p50_ms"] <= TARGET_P50_MS and not any(p["errors"] for p in phases.values())
    print(
        f"repeated texts p50 {repeated['p50_ms']:.1f} ms (target <= {TARGET_P50_MS:.0f} ms), "
        f"errors {sum(p['errors'] for p in phases.values())} (target 0): {'ok' if met else 'BELOW TARGET'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
