"""A model API key held in a Secret never leaves the worker that uses it (docs/reliability.md, "Secrets").

Model agents read their key from a Secret (``model.apiKeySecretRef``); runs then fail in every way - a
wrong key (the model server answers 401 and, like some servers, quotes the key it was given), the
model server down, a tool error, the run's timeout, a cancellation - and one succeeds. Afterwards both
keys (the right one and the wrong one) are searched for in the operator's, the workers' and the REST
API's logs, the namespace's Events, the trees' and runs' status (whole objects), the history in
PostgreSQL (every table), the runs' Redis streams, and the operator's, the workers' and the API's
metrics: they appear nowhere.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_process import AGENT_TREE, OperatorProcess, apply_crds, free_port, namespace, ok, running
from platformlib import REPO, Platform, wait_for

sys.path.insert(0, str(REPO / "tests" / "integration"))
from fake_openai import FakeOpenAI

from agent_tree import naming

pytestmark = pytest.mark.e2e
POD_PYTHONPATH = os.pathsep.join(str(REPO / p) for p in ("", "worker", "operator", "tests/e2e"))
GOOD = f"sk-fz-good-{uuid.uuid4().hex}"
WRONG = f"sk-fz-wrong-{uuid.uuid4().hex}"
KEYS = (GOOD, WRONG)
DEADLINE = 180


class KeyCheckingOpenAI(FakeOpenAI):
    """Answers only the right key; a wrong one gets a 401 that quotes it (as some servers do)."""

    def answer(self, path: str, body: dict[str, Any], auth: str) -> tuple[int, dict[str, Any]]:
        if auth != f"Bearer {GOOD}":
            self.requests.append({"path": path, "body": body, "auth": auth})
            given = auth.removeprefix("Bearer ")
            return 401, {"error": {"message": f"Incorrect API key provided: {given}", "type": "invalid_request_error"}}
        return super().answer(path, body, auth)


def reply(request: dict[str, Any]) -> dict[str, Any]:
    """What the model does depends on the run's input: succeed, call the failing tool, or nap."""
    question = next(m["content"] for m in request["messages"] if m["role"] == "user")
    tool_results = [m for m in request["messages"] if m["role"] == "tool"]
    if tool_results or "succeed" in question:
        return {"content": "All done."}
    if "tool-error" in question:
        return {"tool_calls": [("fail", {})]}
    return {"tool_calls": [("nap", {"seconds": 120})]}


def tree(name: str, secret: str, base_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "agenttree.io/v1alpha1",
        "kind": "AgentTree",
        "metadata": {"name": name},
        "spec": {
            "root": "desk",
            "worker": {
                "replicas": 1,
                "env": [
                    {"name": "PYTHONPATH", "value": POD_PYTHONPATH},
                    {"name": "AGENT_TREE_LOG_LEVEL", "value": "DEBUG"},
                ],
            },
            "agents": [
                {"name": "desk", "description": "Hands every request to the clerk.", "children": ["clerk"]},
                {
                    "name": "clerk",
                    "description": "Answers with tools.",
                    "model": {
                        "name": "fz-clerk",
                        "baseUrl": base_url,
                        "apiKeySecretRef": {"name": secret, "key": "apiKey"},
                    },
                    "tools": [
                        {"name": "fail", "entrypoint": "secret_tools:fail"},
                        {"name": "nap", "entrypoint": "secret_tools:nap", "timeoutSeconds": 300},
                    ],
                },
            ],
        },
    }


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.fixture(scope="module")
def operator(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(platform)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with running(OperatorProcess(platform, log, "fz-sec-*")) as op:
        yield op


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with KeyCheckingOpenAI({"fz-clerk": [reply] * 4}) as server:
        yield server


class Api:
    """``agent-tree api`` as a process (its log and metrics are searched too)."""

    def __init__(self, platform: Platform, log: Path) -> None:
        self.port, self.metrics_port, self.log = free_port(), free_port(), log
        env = {**platform.process_env(), "AGENT_TREE_API_METRICS_PORT": str(self.metrics_port)}
        env["AGENT_TREE_API_ALLOW_ANONYMOUS"] = "false"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(AGENT_TREE), "api", "--port", str(self.port)], stdout=out, stderr=subprocess.STDOUT,
                env=env, cwd=REPO, start_new_session=True,
            )  # fmt: skip
        wait_for(self.ready, 60, f"agent-tree api (log: {log})")

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            return self.get("/healthz", None)[0] == 200
        except OSError:
            return False

    def get(self, path: str, token: str | None) -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def kube_json(platform: Platform, *args: str) -> dict[str, Any]:
    return json.loads(ok(platform.kubectl("get", *args, "-o", "json")))


def phase(platform: Platform, ns: str, name: str) -> str | None:
    return (kube_json(platform, "agentrun", name, "-n", ns).get("status") or {}).get("phase")


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode(errors="replace")


async def history_text(database_url: str, namespace: str) -> str:
    """Every row of every table of the history that mentions the namespace, as text."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        tables = [
            r["table_name"]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
        ]
        out = []
        for table in tables:
            rows = await conn.fetch(f'SELECT t::text AS row FROM "{table}" t WHERE t::text LIKE $1', f"%{namespace}%")
            out += [f"{table}: {r['row']}" for r in rows]
            # blobs carry no namespace: search them whole for the keys
            for key in KEYS:
                hits = await conn.fetch(f'SELECT t::text AS row FROM "{table}" t WHERE t::text LIKE $1', f"%{key}%")
                out += [f"{table} (by key): {r['row']}" for r in hits]
        return "\n".join(out)
    finally:
        await conn.close()


async def streams_text(redis_url: str, workflow_ids: list[str]) -> str:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        out = []
        for wf in workflow_ids:
            for entry_id, fields in await client.xrange(naming.stream_key(wf)):
                out.append(f"{entry_id!r} {fields!r}")
        return "\n".join(out)
    finally:
        await client.aclose()


def leaks(where: str, text: str) -> list[str]:
    found = []
    for key in KEYS:
        for m in re.finditer(re.escape(key), text):
            found.append(f"{where}: ...{text[max(0, m.start() - 200) : m.end() + 50]}...")
    return found


async def test_a_model_key_never_leaves_the_worker(
    platform: Platform, operator: OperatorProcess, fake: FakeOpenAI, tmp_path: Path
) -> None:
    down_url = f"http://127.0.0.1:{closed_port()}/v1"
    with namespace(platform, operator, "fz-sec", cleanup_timeout=120) as ns:
        for secret, key in (("model-key", GOOD), ("wrong-key", WRONG)):
            ok(platform.kubectl("create", "secret", "generic", secret, "-n", ns, f"--from-literal=apiKey={key}"))
        trees = {
            "good": ("model-key", fake.base_url),
            "badkey": ("wrong-key", fake.base_url),
            "down": ("model-key", down_url),
        }
        for name, (secret, url) in trees.items():
            ok(platform.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(tree(name, secret, url))))
        for name in trees:
            wait_for(
                lambda n=name: any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in (kube_json(platform, "agenttree", n, "-n", ns).get("status") or {}).get("conditions", [])
                ),
                DEADLINE,
                f"AgentTree {ns}/{name} Ready",
            )
        runs = {
            "ok": ("good", "succeed", 3600),
            "bad-key": ("badkey", "succeed", 3600),
            "down": ("down", "succeed", 3600),
            "tool-error": ("good", "tool-error", 3600),
            "timeout": ("good", "nap until the timeout", 8),
            "cancel": ("good", "nap until cancelled", 3600),
        }
        for name, (tree_name, text, timeout) in runs.items():
            run = {
                "apiVersion": "agenttree.io/v1alpha1",
                "kind": "AgentRun",
                "metadata": {"name": name},
                "spec": {"treeRef": {"name": tree_name}, "input": text, "timeoutSeconds": timeout},
            }
            ok(platform.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(run)))
        # The cancelled run: deleted once its tool call started (it naps), while the operator follows it.
        wait_for(
            lambda: any("nap until cancelled" in json.dumps(r["body"]) for r in fake.requests),
            DEADLINE,
            "cancel's model call",
        )
        uid = {name: kube_json(platform, "agentrun", name, "-n", ns)["metadata"]["uid"] for name in runs}
        ok(platform.kubectl("delete", "agentrun", "cancel", "-n", ns, "--timeout=120s", timeout=150))
        final = {}
        for name in runs:
            if name == "cancel":
                continue
            wait_for(
                lambda n=name: phase(platform, ns, n) in ("Succeeded", "Failed", "Cancelled"),
                DEADLINE,
                f"{name} finished",
            )
            final[name] = phase(platform, ns, name)
        assert final["ok"] == "Succeeded" and final["bad-key"] == "Failed" and final["down"] == "Failed", final
        assert final["timeout"] == "Failed", final
        assert any(r["auth"] == f"Bearer {WRONG}" for r in fake.requests)  # the wrong key was really tried

        # The REST API serves every run (history, steps, events) as a caller; its log and metrics count too.
        ok(platform.kubectl("create", "serviceaccount", "reader", "-n", ns))
        resources = "--resource=agentruns.agenttree.io,agenttrees.agenttree.io,agentapprovals.agenttree.io"
        ok(platform.kubectl("create", "role", "reader", "-n", ns, "--verb=get,list,watch", resources))
        ok(
            platform.kubectl(
                "create", "rolebinding", "reader", "-n", ns, "--role=reader", f"--serviceaccount={ns}:reader"
            )
        )
        token = ok(platform.kubectl("create", "token", "reader", "-n", ns)).strip()
        api = Api(platform, tmp_path / "api.log")
        try:
            for name in runs:
                for path in ("", "/steps", "/events"):
                    status, body = api.get(f"/api/v1/namespaces/{ns}/runs/{name}{path}", token)
                    assert status == 200, (name, path, status, body[:300])
            assert api.get(f"/api/v1/namespaces/{ns}/runs", token)[0] == 200
            api_metrics = metrics(api.metrics_port)
        finally:
            api.stop()

        workflow_ids = [naming.workflow_id(ns, name, uid[name]) for name in runs]
        sinks = {
            "operator log": operator.log.read_text(errors="replace"),
            "API log": (tmp_path / "api.log").read_text(errors="replace"),
            "Events": ok(platform.kubectl("get", "events", "-n", ns, "-o", "json")),
            "AgentTrees, AgentRuns and Deployments": ok(
                platform.kubectl("get", "agenttrees,agentruns,deployments", "-n", ns, "-o", "json")
            ),
            "history (PostgreSQL)": await history_text(platform.env["DATABASE_URL"], ns),
            "Redis streams": await streams_text(platform.env["REDIS_URL"], workflow_ids),
            "operator metrics": metrics(operator.metrics_port),
            "API metrics": api_metrics,
        }
        pod_logs = sorted((platform.logs / "pods").glob(f"{ns}_*.log"))
        assert len(pod_logs) >= 3, pod_logs
        for path in pod_logs:
            text = path.read_text(errors="replace")
            sinks[f"worker log {path.name}"] = text
            port = re.search(r"metrics on port (\d+)", text)
            if port:
                sinks[f"worker metrics {path.name}"] = metrics(int(port.group(1)))
        assert "history (PostgreSQL)" in sinks and sinks["history (PostgreSQL)"].count("\n") > 10
        assert any(k.startswith("worker metrics") for k in sinks)
        found = [leak for where, text in sinks.items() for leak in leaks(where, text)]
        print(f"\nsearched {len(sinks)} places, {sum(len(t) for t in sinks.values())} characters; runs: {final}")
        assert found == [], "the key leaked:\n" + "\n".join(found[:10])
