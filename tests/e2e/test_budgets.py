"""Budgets end to end (issue 12 item 5): a run whose ``maxTokens`` budget is exhausted with
``onExhausted: pause`` waits in phase Paused on the real API server (the operator as a process, workers
as pods the pod runner runs as processes, real Temporal, PostgreSQL and Redis, the local
OpenAI-compatible test server with known usage); ``agent-tree budget NS/RUN --max-tokens N`` raises it
as the caller, the operator hands it to the workflow, and the run Succeeds. Bad ``agent-tree budget``
input is refused naming the field, and the rest of the AgentRun spec stays immutable.

The tree: desk (a model router, 100+20 tokens) -> billing (a model agent, 100+50 tokens); every model
call reserves max_tokens=100. With maxTokens=200, billing's call (120 used + 100 reserved) does not fit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from operator_process import AGENT_TREE, OperatorProcess, apply_crds, namespace, ok, running
from platformlib import REPO, Platform, wait_for

sys.path.insert(0, str(REPO / "tests" / "integration"))
from fake_openai import FakeOpenAI

pytestmark = pytest.mark.e2e

DEADLINE = 180.0
POD_PYTHONPATH = os.pathsep.join(str(REPO / p) for p in ("", "worker", "operator", "tests/e2e"))


@pytest.fixture(scope="module")
def operator(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(platform)
    with running(OperatorProcess(platform, tmp_path_factory.mktemp("operator") / "operator.log", "bud-*")) as op:
        yield op


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    scripts = {
        "bud-router": [{"content": "Billing.", "tool_calls": [("transfer_to_billing", {})], "usage": (100, 20)}],
        "bud-billing": [{"content": "Invoice 7 is paid.", "usage": (100, 50)}],
    }
    with FakeOpenAI(scripts) as server:
        yield server


@dataclass
class Cluster:
    platform: Platform
    ns: str

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(AGENT_TREE), *args], env=self.platform.process_env(), capture_output=True, text=True, timeout=120
        )

    def run(self, name: str) -> dict:
        return json.loads(ok(self.platform.kubectl("get", "agentrun", name, "-n", self.ns, "-o", "json")))

    def status_when(self, name: str, predicate: Any, what: str) -> dict:
        def check() -> dict | None:
            run = self.run(name)
            return run if predicate(run.get("status") or {}) else None

        return wait_for(check, DEADLINE, f"AgentRun {self.ns}/{name}: {what}")


def tree(base_url: str) -> dict:
    model = {"baseUrl": base_url, "maxTokens": 100}
    return {
        "apiVersion": "agenttree.io/v1alpha1",
        "kind": "AgentTree",
        "metadata": {"name": "ledger"},
        "spec": {
            "root": "desk",
            "worker": {
                "env": [
                    {"name": "PYTHONPATH", "value": POD_PYTHONPATH},
                    {"name": "AGENT_TREE_MODEL_API_KEY", "value": "sk-test-agent-tree"},
                ]
            },
            # The tree's default: pause (the run below sets only maxTokens; its fields win per field).
            "budgets": {"onExhausted": "pause"},
            "agents": [
                {
                    "name": "desk",
                    "description": "Front desk",
                    "children": ["billing"],
                    "model": {**model, "name": "bud-router"},
                },
                {
                    "name": "billing",
                    "description": "Answers billing questions.",
                    "model": {**model, "name": "bud-billing"},
                },
            ],
        },
    }


@pytest.fixture(scope="module")
def cluster(platform: Platform, operator: OperatorProcess, fake: FakeOpenAI) -> Iterator[Cluster]:
    with namespace(platform, operator, "bud", cleanup_timeout=120) as ns:
        ok(platform.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(tree(fake.base_url))))

        def ready() -> bool:
            obj = json.loads(ok(platform.kubectl("get", "agenttree", "ledger", "-n", ns, "-o", "json")))
            conditions = {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}
            return conditions.get("Ready") == "True"

        wait_for(ready, 120, f"AgentTree {ns}/ledger Ready")
        yield Cluster(platform, ns)


def test_paused_on_max_tokens_raised_with_agent_tree_budget_then_succeeds(cluster: Cluster, fake: FakeOpenAI) -> None:
    c = cluster
    run = {
        "apiVersion": "agenttree.io/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": "bud-pause"},
        "spec": {"treeRef": {"name": "ledger"}, "input": "Is invoice 7 paid?", "budgets": {"maxTokens": 200}},
    }
    ok(c.platform.kubectl("apply", "-n", c.ns, "-f", "-", input=yaml.safe_dump(run)))
    where = f"{c.ns}/bud-pause"

    paused = c.status_when("bud-pause", lambda s: s.get("phase") == "Paused", "Paused")["status"]
    conditions = {x["type"]: x for x in paused["conditions"]}
    assert conditions["Reconciling"]["status"] == "True"  # kstatus: InProgress
    assert conditions["Reconciling"]["reason"] == "BudgetExhausted"
    assert "spec.budgets.maxTokens is 200" in paused["message"]
    assert f"agent-tree budget {where} --max-tokens N" in paused["message"]
    assert paused["usage"]["tokens"] == 120
    assert [r["body"]["model"] for r in fake.requests] == ["bud-router"]  # billing's call was not made

    # Refused, each naming the field; nothing changes.
    bad = {
        ("budget", f"{c.ns}/no-such-run", "--max-tokens", "500"): "AgentRun " + f"{c.ns}/no-such-run not found",
        ("budget", where, "--max-tokens", "-5"): "--max-tokens (spec.budgets.maxTokens): must be at least 1, got -5",
        ("budget", where, "--max-tokens", "50"): "spec.budgets.maxTokens: 50 is below what the run used already "
        "(120 tokens); give at least 120",
        ("budget", where): "give at least one of --max-tokens",
    }
    for args, words in bad.items():
        r = c.cli(*args)
        assert r.returncode != 0 and words in r.stderr, (args, r.returncode, r.stderr)
    assert c.run("bud-pause")["spec"]["budgets"] == {"maxTokens": 200}
    # The rest of the spec stays immutable (CEL on the real API server).
    r = c.platform.kubectl(
        "patch", "agentrun", "bud-pause", "-n", c.ns, "--type=merge", "-p", json.dumps({"spec": {"input": "other"}})
    )
    assert r.returncode != 0 and "spec is immutable after creation, except spec.budgets" in r.stderr, r.stderr

    r = c.cli("budget", where, "--max-tokens", "1000")
    assert r.returncode == 0, r.stderr
    assert '"maxTokens": 1000' in r.stdout
    done = c.status_when("bud-pause", lambda s: s.get("phase") in ("Succeeded", "Failed", "Cancelled"), "finished")
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["answer"] == "Invoice 7 is paid."
    assert status["usage"]["tokens"] == 270 and status["usage"]["turns"] == 1
    reasons = [e["reason"] for e in events(c, "bud-pause")]
    assert "BudgetExhausted" in reasons and "BudgetsChanged" in reasons

    # A finished run's budgets cannot change.
    r = c.cli("budget", where, "--max-tokens", "5000")
    assert r.returncode != 0 and f"AgentRun {where} is Succeeded" in r.stderr, r.stderr


def events(c: Cluster, name: str) -> list[dict]:
    r = c.platform.kubectl("get", "events", "-n", c.ns, "--field-selector", f"involvedObject.name={name}", "-o", "json")
    return json.loads(ok(r))["items"]
