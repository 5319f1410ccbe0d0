"""What the API e2e tests (tests/e2e/test_api.py) share: the namespace's users and trees, HTTP calls, the
recorded steps, and comparing a stream's events with them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from api_process import ApiProcess, bearer, user_of
from operator_process import ok
from platformlib import REPO, Platform, wait_for
from sse_reader import Frame

DEADLINE = 300.0
# Worker pods import this worktree's code and the test tools (the pod runner's working dir is the
# platform's checkout, which may be another one).
POD_PYTHONPATH = ":".join(str(REPO / p) for p in ("", "worker", "operator", "tests/e2e"))
FINAL = ("Succeeded", "Failed", "Cancelled")


@dataclass
class Site:
    platform: Platform
    ns: str
    other: str
    tokens: dict[str, str]
    gates: Path

    def user(self, name: str) -> str:
        return user_of(self.ns, name)

    def agentrun(self, name: str, ns: str | None = None) -> dict | None:
        r = self.platform.kubectl("get", "agentrun", name, "-n", ns or self.ns, "-o", "json")
        return json.loads(r.stdout) if r.returncode == 0 else None

    def agentruns(self) -> list[str]:
        out = ok(self.platform.kubectl("get", "agentruns", "-n", self.ns, "-o", "jsonpath={.items[*].metadata.name}"))
        return sorted(out.split())

    def final(self, name: str, timeout: float = DEADLINE) -> dict:
        def done() -> dict | None:
            run = self.agentrun(name)
            return run if run and (run.get("status") or {}).get("phase") in FINAL else None

        return wait_for(done, timeout, f"AgentRun {self.ns}/{name} to finish")

    def open_gate(self, key: str, gate: int) -> None:
        (self.gates / f"{key}.{gate}").write_text("open\n")


def work_tree(gates: Path) -> dict:
    tool = {"timeoutSeconds": 300}
    return {
        "apiVersion": "agenttree.io/v1alpha1",
        "kind": "AgentTree",
        "metadata": {"name": "work"},
        "spec": {
            "root": "boss",
            "worker": {
                "replicas": 1,
                "env": [{"name": "PYTHONPATH", "value": POD_PYTHONPATH}, {"name": "GATE_DIR", "value": str(gates)}],
            },
            "agents": [
                {"name": "boss", "description": "Delegates.", "children": ["doer"]},
                {
                    "name": "doer",
                    "description": "Does the job, waiting at gates.",
                    "entrypoint": "api_tools:doer",
                    "tools": [
                        {"name": "note", "entrypoint": "api_tools:note"},
                        {"name": "wait_gate", "entrypoint": "api_tools:wait_gate", **tool},
                        {"name": "flaky", "entrypoint": "api_tools:flaky"},
                    ],
                },
            ],
        },
    }


def refunds_tree(ns: str, base_url: str, tool_log: Path) -> dict:
    return {
        "apiVersion": "agenttree.io/v1alpha1",
        "kind": "AgentTree",
        "metadata": {"name": "refunds"},
        "spec": {
            "root": "desk",
            "worker": {
                "env": [
                    {"name": "PYTHONPATH", "value": POD_PYTHONPATH},
                    {"name": "AGENT_TREE_MODEL_API_KEY", "value": "sk-test-agent-tree"},
                    {"name": "APK_TOOL_LOG", "value": str(tool_log)},
                    {"name": "AGENT_TREE_STREAM_MAXLEN", "value": "2"},  # Redis keeps 2 entries a run
                ]
            },
            "agents": [
                {"name": "desk", "description": "Routes refund requests.", "children": ["refunds"]},
                {
                    "name": "refunds",
                    "description": "Issues refunds.",
                    "instructions": "Issue the refund, then say what happened.",
                    "model": {"baseUrl": base_url, "name": "e2a-refunds"},
                    "tools": [
                        {
                            "name": "issue_refund",
                            "entrypoint": "approval_tools:issue_refund",
                            "approval": {"required": True, "approvers": {"users": [user_of(ns, "alice")]}},
                        }
                    ],
                },
            ],
        },
    }


TALK = "Invoice 4821 was rejected because its purchase order number is missing."


def talk_tree(base_url: str) -> dict:
    """A model agent whose (slow, streaming) model writes ``TALK``: its text is streamed live."""
    return {
        "apiVersion": "agenttree.io/v1alpha1",
        "kind": "AgentTree",
        "metadata": {"name": "talk"},
        "spec": {
            "root": "desk",
            "worker": {
                "env": [
                    {"name": "PYTHONPATH", "value": POD_PYTHONPATH},
                    {"name": "AGENT_TREE_MODEL_API_KEY", "value": "sk-test-agent-tree"},
                ]
            },
            "agents": [
                {"name": "desk", "description": "Routes questions.", "children": ["writer"]},
                {
                    "name": "writer",
                    "description": "Explains invoices.",
                    "instructions": "Explain the invoice.",
                    "model": {"baseUrl": base_url, "name": "e2a-writer"},
                },
            ],
        },
    }


def tree_ready(platform: Platform, ns: str, name: str) -> None:
    def ready() -> bool:
        obj = json.loads(ok(platform.kubectl("get", "agenttree", name, "-n", ns, "-o", "json")))
        conditions = {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}
        return conditions.get("Ready") == "True"

    wait_for(ready, 300, f"AgentTree {ns}/{name} Ready")  # workers start slowly on a busy host


def call(api: ApiProcess, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
    headers = {**(bearer(token) if token else {}), **kw.pop("headers", {})}
    return httpx.request(method, api.url(path), headers=headers, timeout=30, **kw)


def runs_path(ns: str, rest: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/runs{rest}"


def create(api: ApiProcess, s: Site, name: str, input_: str, tree: str = "work", **kw: Any) -> httpx.Response:
    body = {"name": name, "spec": {"treeRef": {"name": tree}, "input": input_, "timeoutSeconds": 600}}
    return call(api, "POST", runs_path(s.ns), s.tokens["runner"], json=body, **kw)


def all_steps(api: ApiProcess, s: Site, name: str, token: str | None = None, limit: int = 7) -> list[dict]:
    """Every step of the run from GET .../steps, following nextCursor (small pages on purpose)."""
    items, cursor = [], None
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        r = call(api, "GET", runs_path(s.ns, f"/{name}/steps"), token or s.tokens["runner"], params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        items += page["items"]
        cursor = page["nextCursor"]
        if not cursor:
            return items


def recorded(api: ApiProcess, s: Site, name: str, predicate: Any, what: str) -> list[dict]:
    """Poll the recorded steps until one satisfies ``predicate``."""
    return wait_for(lambda: (lambda st: st if any(predicate(x) for x in st) else None)(all_steps(api, s, name)),
                    DEADLINE, f"{what} in the steps of {name}")  # fmt: skip


def is_tool(event: str, tool: str, **args: Any) -> Any:
    def check(step: dict) -> bool:
        data = step.get("data") or {}
        if step.get("type") != event or data.get("tool") != tool:
            return False
        got = data.get("args") or data.get("arguments") or {}
        return all(got.get(k) == v for k, v in args.items()) if args else True

    return check


def error_fields(r: httpx.Response) -> list[str]:
    return [e["field"] for e in r.json()["errors"]]


def gate_start(gate: int) -> Any:
    return lambda f: (
        f.event == "tool_start" and f.data["data"]["tool"] == "wait_gate" and f.data["data"]["args"]["gate"] == gate
    )


def same_steps(frames: list[Frame], steps: list[dict]) -> None:
    """The stream's step events are the recorded steps: exactly once each, in order, same content."""
    got, want = [f.id for f in frames], [st["position"] for st in steps]
    assert got == want, f"event ids {got}\n  recorded {want}"
    for f, st in zip(frames, steps, strict=True):
        assert (f.event, f.data["type"], f.data["ord"], f.data["agent"], f.data["data"]) == (
            st["type"], st["type"], st["ord"], st["agent"], st["data"],
        ), f"event {f.id} differs from the recorded step: {f.data} != {st}"  # fmt: skip


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        got = dict(re.findall(r'(\w+)="([^"]*)"', metric))
        if metric.split("{")[0] == name and all(got.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0
