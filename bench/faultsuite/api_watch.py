"""The REST API in the load and the soak: ``agent-tree api`` as a process on the stack, one SSE follower
per run (as a ServiceAccount with a token from the stack's API server), a runs list every few seconds,
and its resident memory beside the operator's and the workers'.

A follower reads ``.../runs/{name}/events`` until ``end``; on ``reconnect`` or a broken connection it
resumes with ``Last-Event-ID``. It counts the step events it got and checks that their ids only grow
(an id seen twice or going back is counted in ``out_of_order``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from services import free_port

from faultsuite.observe import percentile
from faultsuite.stack import ServiceProcess, Stack, poll

READER = "soak-reader"


class Api(ServiceProcess):
    """``agent-tree api`` against the stack's API server (its own identity: the admin kubeconfig)."""

    name = "API"

    def __init__(self, stack: Stack) -> None:
        super().__init__(stack.root / "api.log")
        self.stack = stack
        self.port, self.metrics_port = free_port(), free_port()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = self.stack.base_env()
        env.update(
            KUBECONFIG=str(self.stack.kube.kubeconfig),  # type: ignore[union-attr]
            AGENT_TREE_API_HOST="127.0.0.1",
            AGENT_TREE_API_PORT=str(self.port),
            AGENT_TREE_API_METRICS_PORT=str(self.metrics_port),
            PYTHONUNBUFFERED="1",
        )
        self.spawn(["api", "--log-level", "warning"], env)

    def ready(self) -> bool:
        return self.answers(f"{self.base_url}/readyz")


def reader_token(stack: Stack) -> str:
    """A ServiceAccount that may read AgentRuns in the stack's namespace, and a token for it."""
    ns = stack.namespace
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": READER, "namespace": ns},
            "rules": [{"apiGroups": ["agenttree.io"], "resources": ["agentruns", "agenttrees"],
                       "verbs": ["get", "list", "watch"]}]}  # fmt: skip
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": READER, "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": READER},
               "subjects": [{"kind": "ServiceAccount", "name": READER, "namespace": ns}]}  # fmt: skip
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": READER, "namespace": ns}}
    for doc in (account, role, binding):
        r = stack.kube.kubectl("apply", "-f", "-", input=json.dumps(doc))  # type: ignore[union-attr]
        if r.returncode:
            raise RuntimeError(f"kubectl apply {doc['kind']}: {r.stderr}")
    r = stack.kube.kubectl("create", "token", READER, "-n", ns, "--duration", "4h")  # type: ignore[union-attr]
    if r.returncode:
        raise RuntimeError(f"kubectl create token: {r.stderr}")
    return r.stdout.strip()


@dataclass
class Followed:
    events: int = 0
    end_status: str | None = None
    reconnects: int = 0
    out_of_order: int = 0
    error: str | None = None
    why: list[str] = field(default_factory=list)  # why each reconnect happened


def _ord(event_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in event_id.split("."))


class Watchers:
    """The API process, its followers and lister; ``async with Watchers(stack) as w: w.follow(names)``."""

    def __init__(self, stack: Stack, list_every: float = 5.0, within: float = 900) -> None:
        self.stack = stack
        self.api = Api(stack)
        self.list_every, self.within = list_every, within
        self.followed: dict[str, Followed] = {}
        self.list_ms: list[float] = []
        self.list_errors: list[str] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lister: asyncio.Task[None] | None = None
        self.http: httpx.AsyncClient | None = None
        self.headers: dict[str, str] = {}

    async def __aenter__(self) -> Watchers:
        token = await asyncio.to_thread(reader_token, self.stack)
        self.headers = {"Authorization": f"Bearer {token}"}
        self.api.start()
        try:
            await poll(self.api.ready, "the API's /readyz", 90)
        except BaseException:
            self.api.stop()
            raise
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=20)
        self.http = httpx.AsyncClient(base_url=self.api.base_url, timeout=httpx.Timeout(10.0, read=60.0), limits=limits)
        self._lister = asyncio.get_running_loop().create_task(self._list_loop())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._lister is not None:
            self._lister.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *([self._lister] if self._lister else []), return_exceptions=True)
        if self.http is not None:
            await self.http.aclose()
        self.api.stop()

    def follow(self, names) -> None:
        for name in names:
            self.followed[name] = Followed()
            task = asyncio.get_running_loop().create_task(self._follow(name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def settled(self, within: float) -> None:
        """Wait until every follower ended (got ``end`` or gave up), at most ``within`` seconds."""
        with contextlib.suppress(TimeoutError):
            await poll(lambda: not self._tasks, "the API's followers", within, 0.5)

    async def _follow(self, name: str) -> None:
        got = self.followed[name]
        url = f"/api/v1/namespaces/{self.stack.namespace}/runs/{name}/events"
        last: str | None = None
        deadline = time.monotonic() + self.within
        while time.monotonic() < deadline:
            headers = dict(self.headers, Accept="text/event-stream")
            if last is not None:
                headers["Last-Event-ID"] = last
            why = "the stream closed without 'end'"
            try:
                async with self.http.stream("GET", url, headers=headers) as resp:  # type: ignore[union-attr]
                    if resp.status_code != 200:
                        got.error = f"HTTP {resp.status_code}: {(await resp.aread())[:300]!r}"
                        return
                    event = event_id = None
                    async for line in resp.aiter_lines():
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("id: "):
                            event_id = line[4:]
                        elif line.startswith("data: ") and event == "end":
                            got.end_status = json.loads(line[6:]).get("status")
                        elif line == "":
                            if event_id is not None:
                                got.events += 1
                                if last is not None and _ord(event_id) <= _ord(last):
                                    got.out_of_order += 1
                                last = event_id
                            if event == "end":
                                return
                            if event == "reconnect":
                                why = "the API sent 'reconnect'"
                                break
                            event = event_id = None
            except (httpx.HTTPError, OSError) as exc:
                got.error = why = f"{type(exc).__name__}: {exc}"[:200]
            got.reconnects += 1
            got.why.append(why)
            await asyncio.sleep(0.5)
        got.error = got.error or f"no 'end' within {self.within:g}s"

    async def _list_loop(self) -> None:
        url = f"/api/v1/namespaces/{self.stack.namespace}/runs"
        while True:
            began = time.monotonic()
            try:
                resp = await self.http.get(url, params={"limit": 50}, headers=self.headers)  # type: ignore[union-attr]
                if resp.status_code == 200:
                    self.list_ms.append((time.monotonic() - began) * 1000)
                else:
                    self.list_errors.append(f"HTTP {resp.status_code}")
            except (httpx.HTTPError, OSError) as exc:
                self.list_errors.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.list_every)

    def summary(self) -> dict[str, Any]:
        runs = self.followed.values()
        errors = [f"{n}: {f.error}" for n, f in self.followed.items() if f.end_status is None and f.error]
        return {
            "followed": len(self.followed),
            "ended": sum(1 for f in runs if f.end_status is not None),
            "ended_completed": sum(1 for f in runs if f.end_status == "completed"),
            "events": sum(f.events for f in runs),
            "out_of_order_or_repeated": sum(f.out_of_order for f in runs),
            "reconnects": sum(f.reconnects for f in runs),
            "reconnect_reasons": dict(Counter(why for f in runs for why in f.why).most_common(5)),
            "not_ended": errors[:5],
            "list_requests": len(self.list_ms) + len(self.list_errors),
            "list_errors": self.list_errors[:5],
            "list_ms": {"p50": round(percentile(self.list_ms, 50), 1), "p99": round(percentile(self.list_ms, 99), 1)},
        }
