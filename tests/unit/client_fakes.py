"""The real API application over in-memory services, for the client's and the CLI's tests.

Only the Kubernetes API, the history database and the Redis stream are faked (TokenReview and
SubjectAccessReview answered from two tables, AgentRuns and AgentApprovals in a dict, runs and steps
in lists); the routes, auth, SSE generator and feeds are the API's own. :func:`serve` runs it under
uvicorn on a free loopback port, so the client is tested over real HTTP with real streaming.
"""

from __future__ import annotations

import asyncio
import copy
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn
from agent_tree_api.app import create_app, with_middleware
from agent_tree_api.auth import Auth
from agent_tree_api.config import ApiConfig
from agent_tree_api.deps import Services
from agent_tree_api.feeds import Feeds
from agent_tree_api.history import History
from agent_tree_api.kube import KubeError, resource_path
from agent_tree_api.metrics import ApiMetrics

from agent_tree import naming
from agent_tree.contract import encode_model_delta, ord_str

NS = "cli-team"
TOKENS = {"alice-token": {"username": "alice", "groups": ["system:authenticated"]}}
ALLOWED = {("alice", NS)}


class FakeKube:
    """The Kubernetes API as the API sees it: objects by path; every call recorded with its token."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None]] = []  # (method, path, token)
        self.objects: dict[str, dict[str, Any]] = {}

    async def close(self) -> None:
        pass

    async def as_service(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        if path.endswith("/tokenreviews"):
            user = TOKENS.get(body["spec"]["token"])
            return {"status": {"authenticated": bool(user), **({"user": user} if user else {})}}
        if path.endswith("/subjectaccessreviews"):
            spec = body["spec"]
            return {"status": {"allowed": (spec["user"], spec["resourceAttributes"]["namespace"]) in ALLOWED}}
        return {}

    async def as_caller(
        self, token: str | None, method: str, path: str, body: Any = None, *, params: Any = None, content_type: str = ""
    ) -> dict[str, Any]:
        self.calls.append((method, path, token))
        user = TOKENS.get(token or "")
        namespace = path.split("/namespaces/")[1].split("/")[0] if "/namespaces/" in path else ""
        if user is None or (user["username"], namespace) not in ALLOWED:
            raise KubeError(403, f"forbidden: {user and user['username']} in {namespace}", "Forbidden")
        if method == "GET" and path in self.objects:
            return copy.deepcopy(self.objects[path])
        if method == "GET" and path.endswith(("/agentruns", "/agenttrees", "/agentapprovals")):
            return {"items": [copy.deepcopy(o) for p, o in self.objects.items() if p.rsplit("/", 1)[0] == path]}
        if method == "POST":
            obj = copy.deepcopy(body)
            meta = obj["metadata"]
            meta.setdefault("name", meta.get("generateName", "x-") + uuid.uuid4().hex[:5])
            if f"{path}/{meta['name']}" in self.objects:
                raise KubeError(409, f'agentruns "{meta["name"]}" already exists', "AlreadyExists")
            meta.update(uid=str(uuid.uuid4()), namespace=namespace, resourceVersion="1")
            self.objects[f"{path}/{meta['name']}"] = obj
            return copy.deepcopy(obj)
        if method == "PATCH" and path in self.objects:
            obj = self.objects[path]
            obj["spec"].update(body.get("spec") or {})
            return copy.deepcopy(obj)
        if method == "DELETE" and path in self.objects:
            return self.objects.pop(path)
        raise KubeError(404, f"{path.rsplit('/', 1)[-1]} not found", "NotFound")


class FakeHistory(History):
    """Runs and steps in memory (``status`` ``running`` until :meth:`finish`)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.rows: dict[str, dict[str, Any]] = {}
        self.step_rows: dict[str, list[dict[str, Any]]] = {}

    async def list_runs(self, **filters: Any) -> list[dict[str, Any]]:
        rows = [r for r in self.rows.values() if r["namespace"] == filters.get("namespace")]
        before = filters.get("before")
        if before is not None:
            rows = [r for r in rows if (r["started_at"], r["workflow_id"]) < before]
        rows.sort(key=lambda r: (r["started_at"], r["workflow_id"]), reverse=True)
        return [dict(r) for r in rows[: filters.get("limit", 50)]]

    async def latest_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        rows = [r for r in self.rows.values() if r["namespace"] == namespace and r["name"] == name]
        return dict(max(rows, key=lambda r: r["started_at"])) if rows else None

    async def run(self, workflow_id: str) -> dict[str, Any] | None:
        row = self.rows.get(workflow_id)
        return dict(row) if row else None

    async def steps(self, workflow_id: str, after: list[int] | None = None, limit: int = 1000) -> list[Any]:
        rows = sorted(self.step_rows.get(workflow_id, []), key=lambda s: s["ord"])
        return [copy.deepcopy(s) for s in rows if after is None or s["ord"] > after][:limit]

    async def count_steps(self, workflow_id: str) -> int:
        return len(self.step_rows.get(workflow_id, []))

    async def tail(self, workflow_id: str) -> tuple[int, list[int] | None]:
        rows = self.step_rows.get(workflow_id, [])
        return len(rows), max((s["ord"] for s in rows), default=None)

    def add_step(self, workflow_id: str, ord_: list[int], thought: str | None = None) -> None:
        step = {
            "ord": ord_,
            "type": "reasoning",
            "agent": "root",
            "data": {"event": "reasoning", "agent": "root", "thought": thought or f"step {ord_str(ord_)}"},
            "ts": datetime.now(UTC).isoformat(),
        }
        self.step_rows.setdefault(workflow_id, []).append(step)

    def finish(self, workflow_id: str, status: str = "completed", answer: str = "done") -> None:
        row = self.rows[workflow_id]
        result = {"answer": answer, "status": status, "steps": len(self.step_rows.get(workflow_id, []))}
        row.update(status=status, answer=answer, finished_at=datetime.now(UTC), result=result)


class FakeFeeds(Feeds):
    """Feeds whose Redis stream is a list per run (``deltas``): the API's own feed logic reads it."""

    def __init__(self, history: History) -> None:
        super().__init__(history, "redis://fake", poll_seconds=0.02)
        self.stream: dict[str, list[tuple[str, dict[bytes, bytes]]]] = {}
        self.read = 0  # entries the feeds have read (and so handed to their listeners, in order)
        self.positioned = 0  # feeds that have taken their starting position in the stream

    def following(self) -> bool:
        """A feed follows the stream: entries added from now on reach its listeners."""
        return self.positioned > 0

    async def stream_position(self, workflow_id: str) -> str | None:
        entries = self.stream.get(workflow_id) or []
        self.positioned += 1
        return entries[-1][0] if entries else "0-0"

    async def read_stream(self, workflow_id: str, after: str) -> list[tuple[str, dict[bytes, bytes]]]:
        def newer(entry_id: str) -> bool:
            return tuple(map(int, entry_id.split("-"))) > tuple(map(int, after.split("-")))

        found = [(i, f) for i, f in self.stream.get(workflow_id, []) if newer(i)]
        if not found:
            await asyncio.sleep(self.poll_seconds)
        self.read += len(found)
        return found

    def delta(self, workflow_id: str, call: str, seq: int, text: str) -> None:
        fields = encode_model_delta(agent="root", model="m", call=call, seq=seq, text=text, ts=_now())
        entries = self.stream.setdefault(workflow_id, [])
        entries.append((f"{len(entries) + 1}-0", {k.encode(): v.encode() for k, v in fields.items()}))


def _now() -> str:
    return datetime.now(UTC).isoformat()


class World:
    """The services and helpers to put runs into them."""

    def __init__(self, retry_ms: int = 20) -> None:
        config = ApiConfig(max_body_bytes=64 * 1024, heartbeat_seconds=0.2, retry_ms=retry_ms)
        self.kube = FakeKube()
        self.history = FakeHistory()
        self.feeds = FakeFeeds(self.history)
        auth = Auth(self.kube, token_ttl=60, access_ttl=10, allow_anonymous=False)  # type: ignore[arg-type]
        self.services = Services(
            config=config, kube=self.kube, auth=auth, history=self.history, feeds=self.feeds, metrics=ApiMetrics()
        )  # type: ignore[arg-type]

    def app(self) -> Any:
        async def make() -> Services:
            return self.services

        app = create_app(make)
        app.state.services = self.services  # ASGITransport runs no lifespan
        return with_middleware(app, self.services.config.max_body_bytes)

    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self.app())

    def add_tree(self, name: str = "tree") -> None:
        path = resource_path(NS, "agenttrees", name)
        self.kube.objects[path] = {
            "metadata": {"name": name, "namespace": NS, "uid": "t-1"},
            "spec": {"root": "root", "agents": [{"name": "root", "entrypoint": "x:y"}]},
        }

    def add_run(self, name: str, steps: int = 0, *, status: str = "running", started: datetime | None = None) -> str:
        """An AgentRun with its history row and ``steps`` top-level steps; the workflow id."""
        uid = uuid.uuid4().hex
        wid = naming.workflow_id(NS, name, uid)
        self.kube.objects[resource_path(NS, "agentruns", name)] = {
            "metadata": {"name": name, "namespace": NS, "uid": uid},
            "spec": {"treeRef": {"name": "tree"}, "input": f"question of {name}"},
            "status": {"phase": "Running", "workflowId": wid, "treeRevision": "rev1"},
        }
        self.history.rows[wid] = {
            "workflow_id": wid,
            "namespace": NS,
            "name": name,
            "uid": uid,
            "tree": "tree",
            "tree_revision": "rev1",
            "root_agent": "root",
            "input": f"question of {name}",
            "context": {},
            "status": "running",
            "answer": None,
            "result": None,
            "steps": steps,
            "token_usage": 0,
            "started_at": started or datetime.now(UTC),
            "finished_at": None,
            "forked_from": None,
            "fork_step": None,
        }
        for i in range(1, steps + 1):
            self.history.add_step(wid, [i])
        if status != "running":
            self.history.finish(wid, status)
            self.kube.objects[resource_path(NS, "agentruns", name)]["status"]["phase"] = (
                "Succeeded" if status == "completed" else "Failed"
            )
        return wid

    def add_approval(self, run: str, approval_id: str, tool: str = "refund") -> None:
        agentrun = self.kube.objects[resource_path(NS, "agentruns", run)]
        name = f"{run}-{approval_id}"
        self.kube.objects[resource_path(NS, "agentapprovals", name)] = {
            "metadata": {
                "name": name,
                "namespace": NS,
                "resourceVersion": "1",
                "labels": {naming.LABEL_RUN: naming.run_label(run)},
            },
            "spec": {
                "request": {
                    "id": approval_id,
                    "run": run,
                    "runUID": agentrun["metadata"]["uid"],
                    "agent": "root",
                    "tool": tool,
                    "arguments": "{}",
                    "requestedAt": _now(),
                }
            },
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(world: World) -> Iterator[str]:
    """The application under uvicorn on a loopback port (in a thread); yields its URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(world.app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
