"""`agent-tree api` as a real process for the browser tests (a minimal starter: the e2e suite's
tests/e2e/api_process.py was not on main when these tests were written)."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from pathlib import Path

from operator_process import AGENT_TREE, free_port
from platformlib import REPO, Platform, wait_for


class ApiProcess:
    """The API on a free loopback port with the platform's env (its kubeconfig is the API's identity)."""

    def __init__(self, platform: Platform, log: Path, extra_env: dict[str, str] | None = None) -> None:
        self.platform = platform
        self.log = log
        self.port = free_port()
        self.extra_env = dict(extra_env or {})
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = self.platform.process_env()
        env.update(AGENT_TREE_API_METRICS_PORT="0", PYTHONUNBUFFERED="1", **self.extra_env)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(AGENT_TREE), "api", "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True,
            )  # fmt: skip
        wait_for(self.ready, 60, f"the API's /readyz (log: {self.log})")

    def ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, f"the API exited; log:\n{self.tail()}"
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
