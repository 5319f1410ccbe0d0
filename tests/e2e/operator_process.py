"""`agent-tree operator` as a real subprocess for e2e tests, with the platform's env.

Shared by the operator and autoscaling e2e tests: liveness and metrics on free ports, workers'
metrics on `auto` ports (worker pods share this host's network on the local platform).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from platformlib import REPO, Platform, wait_for

AGENT_TREE = Path(sys.executable).parent / "agent-tree"


def ok(r: subprocess.CompletedProcess) -> str:
    """stdout of a successful kubectl call; otherwise fail with its stderr."""
    assert r.returncode == 0, f"kubectl {r.args[2:]} failed ({r.returncode}):\n{r.stderr}"
    return r.stdout


def apply_crds(platform: Platform) -> None:
    """Apply the repo's generated CRDs and wait until the API server serves them."""
    ok(platform.kubectl("apply", "-f", str(REPO / "crds")))
    for name in ("agenttrees", "agentruns"):
        ok(platform.kubectl("wait", "--for=condition=Established", f"crd/{name}.agenttree.io", "--timeout=60s"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OperatorProcess:
    """The operator watching ``namespace_glob``; ``extra_env`` adds or overrides AGENT_TREE_* settings."""

    def __init__(self, platform: Platform, log: Path, namespace_glob: str, extra_env: dict[str, str] | None = None):
        self.platform = platform
        self.log = log
        self.namespace_glob = namespace_glob
        self.extra_env = dict(extra_env or {})
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        env = self.platform.process_env()
        env.pop("AGENT_TREE_WATCH_NAMESPACE", None)
        env.update(
            AGENT_TREE_HEALTH_PORT=str(self.health_port),
            AGENT_TREE_METRICS_PORT=str(self.metrics_port),
            AGENT_TREE_WORKER_METRICS_PORT="auto",
            PYTHONUNBUFFERED="1",
            **self.extra_env,
        )
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(AGENT_TREE), "operator", "--verbose", "--namespace", self.namespace_glob],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True,
            )  # fmt: skip
        self.starts += 1
        wait_for(self.healthy, 60, f"the operator's liveness endpoint (log: {self.log})")

    def healthy(self) -> bool:
        assert self.alive(), f"the operator exited with {self.proc.returncode}; log:\n{self.tail()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no graceful shutdown (a crash)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def running(op: OperatorProcess) -> Iterator[OperatorProcess]:
    """Start ``op``; on exit stop it (also when the test failed), and fail the test if it had crashed."""
    op.start()
    try:
        yield op
    finally:
        crashed = not op.alive()
        op.stop()
        print(f"\noperator log: {op.log}")
    if crashed:
        pytest.fail(f"the operator crashed:\n{op.tail()}")


@contextmanager
def namespace(platform: Platform, op: OperatorProcess, prefix: str, cleanup_timeout: int = 60) -> Iterator[str]:
    """A fresh namespace the operator watches (``prefix`` must match its glob), deleted afterwards.

    Runs are deleted while the operator is up (their finalizers need it), then the namespace.
    """
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ok(platform.kubectl("create", "namespace", name))
    wait_for(lambda: platform.kubectl("get", "serviceaccount", "default", "-n", name).returncode == 0, 30,
             f"serviceaccount default in {name}")  # fmt: skip
    try:
        yield name
        assert op.alive(), f"the operator crashed:\n{op.tail()}"
    finally:  # also when the test failed: its worker pods would keep running as processes
        platform.kubectl("delete", "agentruns", "--all", "-n", name, f"--timeout={cleanup_timeout}s",
                         timeout=cleanup_timeout + 30)  # fmt: skip
        platform.kubectl("delete", "namespace", name, "--wait=false")


INVOICE = REPO / "examples" / "invoice"


def invoice_tree(edit: Callable[[dict], None] | None = None) -> dict:
    """The example invoice AgentTree manifest, optionally edited in place by ``edit``."""
    tree = yaml.safe_load((INVOICE / "agenttree.yaml").read_text())
    if edit:
        edit(tree)
    return tree


def held_supervisor(tree: dict) -> None:
    """No supervisor workers: a started run stays Running (its workflow waits on the root's queue)."""
    tree["spec"]["agents"][0]["worker"] = {"replicas": 0}
