"""`agent-tree api` as a real subprocess for e2e tests, and callers with tokens from the real API server.

``ApiProcess`` starts the API on free loopback ports (HTTP and metrics) with the platform's env (its
own identity: the platform's kubeconfig; history and streams: the platform's PostgreSQL and Redis),
waits for ``/readyz`` and stops it; ``extra_env`` overrides any ``AGENT_TREE_API_*`` setting per test.
``service_account`` makes a caller: a ServiceAccount, optional RBAC (a Role of ``rules`` or a
ClusterRole bound in the namespace), and a token issued by the API server (TokenRequest).

Shared by the API, web view and client e2e tests::

    with running_api(ApiProcess(platform, tmp_path / "api.log")) as api:
        token = service_account(platform, ns, "alice", rules=[RUNS_RW])
        httpx.get(f"{api.base_url}/api/v1/whoami", headers=bearer(token))
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from operator_process import AGENT_TREE, free_port, ok
from platformlib import REPO, Platform, wait_for

# RBAC rules for Roles of test callers (agenttree.io resources).
RUNS_RW = {
    "apiGroups": ["agenttree.io"],
    "resources": ["agentruns"],
    "verbs": ["get", "list", "watch", "create", "delete"],
}
RUNS_RO = {"apiGroups": ["agenttree.io"], "resources": ["agentruns"], "verbs": ["get", "list", "watch"]}
TREES_RO = {"apiGroups": ["agenttree.io"], "resources": ["agenttrees"], "verbs": ["get", "list", "watch"]}


class ApiProcess:
    """``agent-tree api`` on 127.0.0.1; ``extra_env`` adds or overrides its environment."""

    def __init__(self, platform: Platform, log: Path, extra_env: dict[str, str] | None = None) -> None:
        self.platform = platform
        self.log = log
        self.extra_env = dict(extra_env or {})
        self.port = free_port()
        self.metrics_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self, timeout: float = 60) -> None:
        env = self.platform.process_env()
        env.update(
            AGENT_TREE_API_HOST="127.0.0.1",
            AGENT_TREE_API_PORT=str(self.port),
            AGENT_TREE_API_METRICS_PORT=str(self.metrics_port),
            PYTHONUNBUFFERED="1",
            **self.extra_env,
        )
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(AGENT_TREE), "api", "--log-level", "info"],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True,
            )  # fmt: skip
        self.starts += 1
        wait_for(self.ready, timeout, f"the API's /readyz (log: {self.log})")

    def ready(self) -> bool:
        assert self.alive(), f"the API exited with {self.proc.returncode}; log:\n{self.tail()}"
        try:
            with urllib.request.urlopen(self.url("/readyz"), timeout=2) as resp:
                return resp.status == 200
        except (OSError, urllib.error.HTTPError):
            return False

    def metrics(self) -> str:
        """The Prometheus text of the API's metrics port."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as resp:
            return resp.read().decode()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown (a crash)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def running_api(api: ApiProcess) -> Iterator[ApiProcess]:
    """Start ``api``; stop it on exit (also when the test failed), and fail the test if it had crashed."""
    api.start()
    try:
        yield api
    finally:
        crashed = not api.alive()
        api.stop()
        print(f"\nAPI log: {api.log}")
    if crashed:
        pytest.fail(f"the API process crashed:\n{api.tail()}")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def service_account(
    platform: Platform,
    namespace: str,
    name: str,
    *,
    rules: list[dict[str, Any]] | None = None,
    clusterrole: str | None = None,
    duration: str = "2h",
) -> str:
    """Create ServiceAccount ``name`` (with a Role of ``rules`` and/or a binding to ``clusterrole`` in
    ``namespace``) and return a token the API server issued for it (``kubectl create token``)."""
    ok(platform.kubectl("create", "serviceaccount", name, "-n", namespace))
    if rules:
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": namespace},
            "rules": rules,
        }
        ok(platform.kubectl("apply", "-f", "-", input=json.dumps(role)))
        ok(platform.kubectl("create", "rolebinding", name, "-n", namespace, f"--role={name}",
                            f"--serviceaccount={namespace}:{name}"))  # fmt: skip
    if clusterrole:
        ok(platform.kubectl("create", "rolebinding", f"{name}-{clusterrole}"[:63], "-n", namespace,
                            f"--clusterrole={clusterrole}", f"--serviceaccount={namespace}:{name}"))  # fmt: skip
    return ok(platform.kubectl("create", "token", name, "-n", namespace, f"--duration={duration}")).strip()


def user_of(namespace: str, name: str) -> str:
    """The username the API server gives ServiceAccount ``name`` of ``namespace``."""
    return f"system:serviceaccount:{namespace}:{name}"


class AuditLog:
    """The kube-apiserver's audit events (agenttree.io requests) written after this object was made."""

    def __init__(self, platform: Platform) -> None:
        self.path = platform.audit_log
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def events(self) -> list[dict[str, Any]]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        lines = data.decode(errors="replace").splitlines()
        if lines and not data.endswith(b"\n"):
            lines = lines[:-1]  # a line being written
        return [json.loads(line) for line in lines if line.strip()]

    def find(self, *, verb: str, resource: str, namespace: str, name: str | None = None) -> list[dict[str, Any]]:
        """Completed requests matching; ``name`` None: any (a create with generateName has none)."""
        out = []
        for e in self.events():
            ref = e.get("objectRef") or {}
            if e.get("stage") != "ResponseComplete" or e.get("verb") != verb:
                continue
            if ref.get("resource") != resource or ref.get("namespace") != namespace or ref.get("subresource"):
                continue
            if name is not None and ref.get("name") != name:
                continue
            out.append(e)
        return out
