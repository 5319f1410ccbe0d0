"""In-process fakes of the API's services: a Kubernetes API that answers TokenReviews, SubjectAccessReviews
and AgentRun requests from a dict, and a history held in memory. Only the API's own code is real."""

from __future__ import annotations

import copy
import re
import uuid
from typing import Any

import httpx
from agent_tree_api.app import create_app, with_middleware
from agent_tree_api.auth import Auth
from agent_tree_api.config import ApiConfig
from agent_tree_api.deps import Services
from agent_tree_api.feeds import Feeds
from agent_tree_api.history import History
from agent_tree_api.kube import KubeError
from agent_tree_api.metrics import ApiMetrics

from agent_tree.contract import ord_str

TOKENS = {
    "alice-token": {"username": "alice", "groups": ["devs", "system:authenticated"]},
    "bob-token": {"username": "bob", "groups": ["system:authenticated"]},
}
ALLOWED = {("alice", "team-a")}  # (user, namespace) pairs RBAC allows everything in


class FakeKube:
    """The Kubernetes API as the API sees it; records every call with the token it carried."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, str | None]] = []  # (who, method, path, token)
        self.objects: dict[str, dict[str, Any]] = {}  # path -> object

    async def close(self) -> None:
        pass

    async def as_service(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self.calls.append(("service", method, path, None))
        if path.endswith("/tokenreviews"):
            user = TOKENS.get(body["spec"]["token"])
            return {"status": {"authenticated": bool(user), **({"user": user} if user else {})}}
        if path.endswith("/subjectaccessreviews"):
            spec = body["spec"]
            allowed = (spec["user"], spec["resourceAttributes"]["namespace"]) in ALLOWED
            return {"status": {"allowed": allowed}}
        return {}

    async def as_caller(
        self, token: str | None, method: str, path: str, body: Any = None, *, params: Any = None, content_type: str = ""
    ) -> dict[str, Any]:
        self.calls.append(("caller", method, path, token))
        user = TOKENS.get(token or "")
        namespace = path.split("/namespaces/")[1].split("/")[0] if "/namespaces/" in path else ""
        if user is None or (user["username"], namespace) not in ALLOWED:
            raise KubeError(403, f"forbidden: {user and user['username']} in {namespace}", "Forbidden")
        if method == "GET" and path in self.objects:
            return copy.deepcopy(self.objects[path])
        if method == "GET" and path.endswith(("/agentruns", "/agenttrees", "/agentapprovals")):
            items = [o for p, o in self.objects.items() if p.rsplit("/", 1)[0] == path]
            selector = (params or {}).get("labelSelector")
            if selector:
                items = [o for o in items if matches(selector, (o.get("metadata") or {}).get("labels") or {})]
            return {"items": copy.deepcopy(items)}
        if method == "POST":
            obj = copy.deepcopy(body)
            meta = obj["metadata"]
            meta.setdefault("name", meta.get("generateName", "x-") + uuid.uuid4().hex[:5])
            meta["uid"] = str(uuid.uuid4())
            meta["namespace"] = namespace
            self.objects[f"{path}/{meta['name']}"] = obj
            return copy.deepcopy(obj)
        if method == "DELETE" and path in self.objects:
            return self.objects.pop(path)
        raise KubeError(404, f"{path} not found", "NotFound")


def matches(selector: str, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector of the forms the API sends: ``k=v``, ``k!=v``, ``!k``, ``k in (a,b)``."""
    for term in re.findall(r"[^,(]+\([^)]*\)|[^,]+", selector):
        term = term.strip()
        if m := re.fullmatch(r"(\S+) in \((.*)\)", term):
            ok = labels.get(m[1]) in m[2].split(",")
        elif term.startswith("!"):
            ok = term[1:] not in labels
        elif "!=" in term:
            key, value = term.split("!=", 1)
            ok = labels.get(key) != value
        else:
            key, value = term.split("=", 1)
            ok = labels.get(key) == value
        if not ok:
            return False
    return True


class FakeHistory(History):
    """The history in memory: ``runs`` rows by workflow id, ``steps`` by workflow id."""

    def __init__(self) -> None:
        super().__init__(None)
        self.runs: dict[str, dict[str, Any]] = {}
        self.step_rows: dict[str, list[dict[str, Any]]] = {}

    async def list_runs(self, **filters: Any) -> list[dict[str, Any]]:
        rows = [r for r in self.runs.values() if r["namespace"] == filters.get("namespace")]
        rows.sort(key=lambda r: (r["started_at"], r["workflow_id"]), reverse=True)
        return rows[: filters.get("limit", 50)]

    async def latest_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        rows = [r for r in self.runs.values() if r["namespace"] == namespace and r["name"] == name]
        return max(rows, key=lambda r: r["started_at"]) if rows else None

    async def run(self, workflow_id: str) -> dict[str, Any] | None:
        return self.runs.get(workflow_id)

    async def steps(self, workflow_id: str, after: list[int] | None = None, limit: int = 1000) -> list[Any]:
        rows = sorted(self.step_rows.get(workflow_id, []), key=lambda s: s["ord"])
        return [s for s in rows if after is None or s["ord"] > after][:limit]

    async def count_steps(self, workflow_id: str) -> int:
        return len(self.step_rows.get(workflow_id, []))

    async def tail(self, workflow_id: str) -> tuple[int, list[int] | None]:
        rows = self.step_rows.get(workflow_id, [])
        return len(rows), (max(s["ord"] for s in rows) if rows else None)

    def add_step(self, workflow_id: str, ord_: list[int], kind: str = "reasoning", **data: Any) -> dict[str, Any]:
        step = {"ord": ord_, "type": kind, "agent": "root", "data": {"thought": ord_str(ord_), **data}, "ts": ""}
        self.step_rows.setdefault(workflow_id, []).append(step)
        return step


def make_services(config: ApiConfig | None = None) -> Services:
    config = config or ApiConfig(max_body_bytes=64 * 1024, heartbeat_seconds=0.2)
    kube = FakeKube()
    history = FakeHistory()
    auth = Auth(kube, token_ttl=60, access_ttl=10, allow_anonymous=config.allow_anonymous)  # type: ignore[arg-type]
    feeds = Feeds(history, None, poll_seconds=0.02)
    return Services(config=config, kube=kube, auth=auth, history=history, feeds=feeds, metrics=ApiMetrics())  # type: ignore[arg-type]


def client(svc: Services) -> httpx.AsyncClient:
    """An HTTP client of the real application (middleware included) over the given services."""

    async def make() -> Services:
        return svc

    app = create_app(make)
    app.state.services = svc  # ASGITransport does not run the lifespan
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=with_middleware(app, svc.config.max_body_bytes)), base_url="http://api"
    )
