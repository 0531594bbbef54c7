"""A throwaway PostgreSQL cluster for the tests: initdb into a temporary folder, the server on a private
socket folder and port (no TCP), stopped by its pid at the end.

initdb refuses to run as root: as root, the cluster is made and run as the `postgres` user (runuser).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """No server could be started here (why is the message)."""


def find_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise PostgresUnavailable(
        "no PostgreSQL server is installed (no initdb in /usr/lib/postgresql/*/bin or on PATH): "
        "apt-get install -y postgresql"
    )


class PostgresServer:
    def __init__(self):
        self.bindir = find_bindir()
        self.base = Path(tempfile.mkdtemp(prefix="msearch-pg-"))
        self.data = self.base / "data"
        self.port = _free_port()
        self.pid: int | None = None
        self.icu = False  # databases get ICU en-US collation when the server has it (a typical production setup)

    def _as_owner(self, command: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return command
        if not shutil.which("runuser"):
            raise PostgresUnavailable("running as root without runuser: cannot start PostgreSQL as `postgres`")
        return ["runuser", "-u", "postgres", "--", *command]

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        log = self.base / "server.log"
        try:
            subprocess.run(
                self._as_owner([str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]),
                check=True,
                capture_output=True,
                timeout=START_TIMEOUT_S,
            )
            options = f"-k {self.base} -p {self.port} -c listen_addresses='' -c fsync=off -c max_connections=50"
            subprocess.run(
                self._as_owner(
                    [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-o", options, "-w", "start"]
                ),
                check=True,
                capture_output=True,
                timeout=START_TIMEOUT_S,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            server_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            self.stop()
            raise PostgresUnavailable(
                f"could not start PostgreSQL from {self.bindir}: {exc} {detail.decode(errors='replace')} {server_log}"
            ) from None
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        self.icu = self._try_icu()

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.base}&port={self.port}"

    def _connect(self):
        import psycopg

        return psycopg.connect(host=str(self.base), port=self.port, user="postgres", dbname="postgres", autocommit=True)

    def _try_icu(self) -> bool:
        import psycopg

        with self._connect() as conn:
            try:
                conn.execute(
                    "CREATE DATABASE msearch_icu_probe LOCALE_PROVIDER icu ICU_LOCALE 'en-US' TEMPLATE template0"
                )
            except psycopg.Error:
                return False
            conn.execute("DROP DATABASE msearch_icu_probe")
        return True

    def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        name = f"msearch_{uuid.uuid4().hex[:12]}"
        collation = " LOCALE_PROVIDER icu ICU_LOCALE 'en-US' TEMPLATE template0" if self.icu else ""
        with self._connect() as conn:
            conn.execute(f"CREATE DATABASE {name}{collation}")
        return self.admin_url(name)

    def terminate_other_sessions(self, database_url: str) -> int:
        """Drop every connection to a database (as a server restart or a network cut would)."""
        from sqlalchemy.engine import make_url

        database = make_url(database_url).database
        with self._connect() as conn:
            return len(
                conn.execute(
                    # with a timeout: returns once each session has ended, not when it was signalled
                    "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                    "pg_backend_pid()",
                    (database,),
                ).fetchall()
            )

    def stop(self) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGINT)  # fast shutdown: disconnect clients, then stop
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and _alive(self.pid):
                    time.sleep(0.05)
                if _alive(self.pid):
                    os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.pid = None
        shutil.rmtree(self.base, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Running (a zombie, waiting for a parent that does not reap, has stopped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
