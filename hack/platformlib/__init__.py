"""The local platform (see docs/development.md): a real Kubernetes control plane
(etcd, kube-apiserver, kube-controller-manager, kube-scheduler built from Go
modules by hack/build.sh; kwok for a fake node; hack/podrunner.py for pod
processes), the Temporal dev server, PostgreSQL and Redis, on loopback ports,
state under one directory.

CLI: hack/platform up|down|status|start|stop|restart|kubectl|env|logs.
Tests: `ensure_up()` returns a `Platform` (env, kubectl, pod processes)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from . import procs
from .components import COMPONENTS, FAKE_NODE, ORDER
from .control import down, is_running, status, stop, up
from .core import REPO, Dir, PlatformError, platform_dir, read_env_file

__all__ = [
    "COMPONENTS", "FAKE_NODE", "ORDER", "REPO", "Dir", "Platform", "PlatformError", "built_tool", "down", "ensure_up",
    "platform_dir", "status", "stop", "up", "wait_for",
]  # fmt: skip


class Platform:
    """A running platform as clients and tests see it."""

    def __init__(self, root: Path | None = None):
        self.dir = Dir(root)
        if not self.dir.env_file.exists():
            raise PlatformError(f"no env file at {self.dir.env_file}: run `hack/platform up`")
        self.env = read_env_file(self.dir.env_file)
        self.kubeconfig = self.env.get("KUBECONFIG", "")
        self.temporal_address = self.env.get("TEMPORAL_ADDRESS", "")
        self.database_url = self.env.get("DATABASE_URL", "")
        self.redis_url = self.env.get("REDIS_URL", "")
        self.bin = self.dir.bin
        self.logs = self.dir.logs
        self.audit_log = self.dir.logs / "audit.log"

    def process_env(self) -> dict[str, str]:
        """os.environ plus the env file, with the platform's bin dir first on PATH."""
        env = dict(os.environ)
        env.update(self.env)
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run the platform's kubectl (same version as the API server) with its
        kubeconfig; never raises on a non-zero exit: check .returncode."""
        return subprocess.run(
            [str(self.bin / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input, capture_output=True, text=True, timeout=timeout, env=self.process_env(),
        )  # fmt: skip

    def pod_processes(self) -> dict[str, dict[str, Any]]:
        """'<namespace>/<pod>' -> {pid, start, ...} of live processes the pod runner holds."""
        try:
            pods = json.loads(self.dir.podrunner_state.read_text()).get("pods", {})
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in pods.items() if procs.alive(v.get("pid"), v.get("start"))}

    def audit_events(self) -> list[dict[str, Any]]:
        try:
            lines = self.audit_log.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def status(self) -> list[dict[str, Any]]:
        return status(self.dir)

    def start(self, *names: str) -> None:
        up(self.dir, names)

    def stop(self, *names: str) -> None:
        stop(self.dir, names)

    def restart(self, *names: str) -> None:
        stop(self.dir, names)
        up(self.dir, names)


def ensure_up(components: list[str] | None = None, root: Path | None = None) -> tuple[Platform, list[str]]:
    """Use the running platform, starting whatever of `components` (default
    all, with their dependencies) is not running. Returns the platform and the
    names this call started (stop only those when done)."""
    d = Dir(root)
    started = up(d, components)
    return Platform(d.root), started


def running(root: Path | None = None) -> bool:
    d = Dir(root)
    state = d.load()
    state.setdefault("components", {})
    return all(is_running(state, n) for n in ORDER)


T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll check() until it returns a truthy value (an AssertionError counts as
    not yet); fail after timeout seconds saying what was awaited and the last
    value seen. Tests synchronise with this, never with sleeps."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = check()
        except AssertionError as e:
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def built_tool(script: str, timeout: float = 2400) -> str:
    """Path of the binary a ``hack/build-*.sh`` script builds (or finds in its cache): its last stdout line.

    Test fixtures call this; a failed build raises with the script's last output.
    """
    proc = subprocess.run([str(REPO / "hack" / script)], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"hack/{script} could not build its tool (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    path = proc.stdout.strip().splitlines()[-1]
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"hack/{script} printed {path!r}, which is not an executable")
    return path
