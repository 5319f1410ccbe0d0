"""Human approvals end to end (issue 12 items 2-3): an LLM tree whose ``issue_refund`` tool requires
approval, on the local platform: the real API server (its own ServiceAccount tokens are the users, RBAC
and the chart's ValidatingAdmissionPolicy decide who may decide), the operator as a process, workers as
pods the pod runner runs as processes, real Temporal, PostgreSQL and Redis, and the local
OpenAI-compatible test server.

The operator watches only ``apk-*`` namespaces. Users: ``alice`` (bound to the approver ClusterRole and
listed in the tool's approvers), ``bob`` (bound, not listed), ``carol`` (not bound). Every wait polls
with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_process import AGENT_TREE, OperatorProcess, apply_crds, namespace, ok, running
from platformlib import REPO, Platform, built_tool, wait_for
from test_helm import ARGO_RUN, argo_lua
from test_kstatus import kstatus

sys.path.insert(0, str(REPO / "tests" / "integration"))
from fake_openai import FakeOpenAI

pytestmark = pytest.mark.e2e

RELEASE = "apk-e2e"  # chart release whose approver ClusterRole and admission policy these tests install
APPROVER_ROLE = f"{RELEASE}-agent-tree-approver"
DEADLINE = 180.0
# The pods import this worktree's code and the counting tools (the pod runner's working dir is the
# platform's checkout, which may be another one).
POD_PYTHONPATH = os.pathsep.join(str(REPO / p) for p in ("", "worker", "operator", "tests/e2e"))
AMOUNTS = {"ok": 120, "no": 130, "late": 5, "crash": 140}


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy(platform: Platform) -> Iterator[None]:
    """The chart's approver ClusterRole and ValidatingAdmissionPolicy (+ binding), rendered by helm."""
    apply_crds(platform)
    ok(platform.kubectl("wait", "--for=condition=Established", "crd/agentapprovals.agenttree.io", "--timeout=60s"))
    helm = built_tool("build-helm.sh")
    rendered = subprocess.run(
        [helm, "template", RELEASE, str(REPO / "charts" / "agent-tree"), "--show-only", "templates/approvals.yaml"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    ok(platform.kubectl("apply", "-f", "-", input=rendered))
    yield
    platform.kubectl("delete", "-f", "-", "--ignore-not-found", input=rendered)


@pytest.fixture(scope="module")
def operator(platform: Platform, policy: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    with running(OperatorProcess(platform, tmp_path_factory.mktemp("operator") / "operator.log", "apk-*")) as op:
        yield op


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    def first(body: dict) -> dict:
        text = json.dumps(body["messages"])
        case = re.search(r"case=(\w+)", text).group(1)
        tool = "refund_small" if case == "late" else "issue_refund"
        return {"content": "Refunding.", "tool_calls": [(tool, {"invoice_id": "4821", "amount": AMOUNTS[case]})]}

    def second(body: dict) -> dict:
        tools = [m for m in body["messages"] if m.get("role") == "tool"]
        return {"content": "Refund outcome: " + (tools[-1]["content"] if tools else "no tool result")}

    scripts = {
        "apk-router": [{"content": "A refund request.", "tool_calls": [("transfer_to_refunds", {})]}],
        "apk-refunds": [first, second],
    }
    with FakeOpenAI(scripts) as server:
        yield server


@dataclass
class Cluster:
    platform: Platform
    operator: OperatorProcess
    ns: str
    kubeconfigs: dict[str, Path]
    tool_log: Path

    def user(self, name: str) -> str:
        return f"system:serviceaccount:{self.ns}:{name}"

    def cli(self, who: str, *args: str) -> subprocess.CompletedProcess:
        env = self.platform.process_env()
        env["KUBECONFIG"] = str(self.kubeconfigs[who])
        return subprocess.run([str(AGENT_TREE), *args], env=env, capture_output=True, text=True, timeout=120)

    def kubectl_as(self, who: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.platform.bin / "kubectl"), f"--kubeconfig={self.kubeconfigs[who]}", "-n", self.ns, *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def get(self, kind: str, name: str) -> dict:
        return json.loads(ok(self.platform.kubectl("get", kind, name, "-n", self.ns, "-o", "json")))

    def calls(self, amount: int) -> int:
        if not self.tool_log.exists():
            return 0
        return sum(1 for line in self.tool_log.read_text().splitlines() if json.loads(line)["amount"] == amount)


def kubeconfig_for(platform: Platform, ns: str, sa: str, directory: Path) -> Path:
    """A kubeconfig holding a token of ServiceAccount ``sa`` issued by the API server (TokenRequest)."""
    token = ok(platform.kubectl("create", "token", sa, "-n", ns, "--duration=2h")).strip()
    config = yaml.safe_load(Path(platform.kubeconfig).read_text())
    cluster = config["clusters"][0]["name"]
    config["users"] = [{"name": sa, "user": {"token": token}}]
    config["contexts"] = [{"name": sa, "context": {"cluster": cluster, "user": sa, "namespace": ns}}]
    config["current-context"] = sa
    path = directory / f"{sa}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def tree(ns: str, base_url: str, tool_log: Path) -> dict:
    alice = f"system:serviceaccount:{ns}:alice"
    model = {"baseUrl": base_url}
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
                ]
            },
            "agents": [
                {
                    "name": "desk",
                    "description": "Front desk",
                    "instructions": "Route refund requests.",
                    "children": ["refunds"],
                    "model": {**model, "name": "apk-router"},
                },
                {
                    "name": "refunds",
                    "description": "Issues refunds.",
                    "instructions": "Issue the refund, then say what happened.",
                    "model": {**model, "name": "apk-refunds"},
                    "tools": [
                        {
                            "name": "issue_refund",
                            "entrypoint": "approval_tools:issue_refund",
                            "approval": {"required": True, "approvers": {"users": [alice]}},
                        },
                        {
                            "name": "refund_small",
                            "entrypoint": "approval_tools:refund_small",
                            "approval": {
                                "required": True,
                                "timeoutSeconds": 8,
                                "onTimeout": "approve",
                                "approvers": {"users": [alice]},
                            },
                        },
                    ],
                },
            ],
        },
    }


@pytest.fixture(scope="module")
def cluster(
    platform: Platform, operator: OperatorProcess, fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("approvals")
    work.chmod(0o755)
    with namespace(platform, operator, "apk", cleanup_timeout=120) as ns:
        for sa in ("alice", "bob", "carol"):
            ok(platform.kubectl("create", "serviceaccount", sa, "-n", ns))
        for sa in ("alice", "bob"):
            ok(platform.kubectl("create", "rolebinding", f"approver-{sa}", "-n", ns,
                                f"--clusterrole={APPROVER_ROLE}", f"--serviceaccount={ns}:{sa}"))  # fmt: skip
        kubeconfigs = {sa: kubeconfig_for(platform, ns, sa, work) for sa in ("alice", "bob", "carol")}
        tool_log = work / "tool-calls.jsonl"
        ok(platform.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(tree(ns, fake.base_url, tool_log))))

        def ready() -> bool:
            obj = json.loads(ok(platform.kubectl("get", "agenttree", "refunds", "-n", ns, "-o", "json")))
            conditions = {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}
            return conditions.get("Ready") == "True"

        wait_for(ready, 120, f"AgentTree {ns}/refunds Ready")
        yield Cluster(platform, operator, ns, kubeconfigs, tool_log)


# --- helpers --------------------------------------------------------------------------------------------


def create_run(c: Cluster, name: str, case: str) -> None:
    run = {
        "apiVersion": "agenttree.io/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": name},
        "spec": {"treeRef": {"name": "refunds"}, "input": f"Refund invoice 4821 (case={case})", "timeoutSeconds": 900},
    }
    ok(c.platform.kubectl("apply", "-n", c.ns, "-f", "-", input=yaml.safe_dump(run)))


def status_when(c: Cluster, name: str, predicate: Any, what: str, timeout: float = DEADLINE) -> dict:
    def check() -> dict | None:
        run = c.get("agentrun", name)
        return run if predicate(run.get("status") or {}) else None

    return wait_for(check, timeout, f"AgentRun {c.ns}/{name}: {what}")


def awaiting(c: Cluster, name: str) -> dict:
    run = status_when(
        c, name, lambda s: s.get("phase") == "AwaitingApproval" and s.get("approvals"), "AwaitingApproval"
    )
    approval = run["status"]["approvals"][0]
    wait_for(
        lambda: c.platform.kubectl("get", "agentapproval", approval["approval"], "-n", c.ns).returncode == 0,
        30, f"AgentApproval {approval['approval']}",
    )  # fmt: skip
    return run


def finished(c: Cluster, name: str) -> dict:
    run = status_when(c, name, lambda s: s.get("phase") in ("Succeeded", "Failed", "Cancelled"), "finished")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    return run


def events(c: Cluster, name: str) -> list[dict]:
    r = c.platform.kubectl("get", "events", "-n", c.ns, "--field-selector", f"involvedObject.name={name}", "-o", "json")
    return json.loads(ok(r))["items"]


def history_steps(c: Cluster, name: str) -> list[dict]:
    r = subprocess.run(
        [str(AGENT_TREE), "history", f"{c.ns}/{name}", "--json"],
        env=c.platform.process_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["steps"]


def pending_gauge(op: OperatorProcess) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return float(re.search(r"^agent_tree_operator_approvals_pending (\S+)$", text, re.M).group(1))


# --- tests ----------------------------------------------------------------------------------------------


def test_approve_as_the_authenticated_user(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    watch_log = tmp_path / "watch.log"
    with open(watch_log, "w") as out:
        watch = subprocess.Popen(
            [str(c.platform.bin / "kubectl"), f"--kubeconfig={c.platform.kubeconfig}", "get", "arun", "-n", c.ns, "-w"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        create_run(c, "refund-ok", "ok")
        run = awaiting(c, "refund-ok")
        wait_for(lambda: "AwaitingApproval" in watch_log.read_text(), 30, "AwaitingApproval in kubectl get arun -w")
    finally:
        watch.terminate()
        watch.wait(10)
    status = run["status"]
    (pending,) = status["approvals"]
    assert pending["tool"] == "issue_refund" and pending["agent"] == "refunds"
    assert json.loads(pending["arguments"]) == {"invoice_id": "4821", "amount": 120}
    assert pending["requestedAt"] and status["waiting"] == "approval: issue_refund"
    reconciling = next(x for x in status["conditions"] if x["type"] == "Reconciling")
    assert reconciling["status"] == "True" and reconciling["reason"] == "AwaitingApproval"
    assert kstatus(built_tool("build-kstatus.sh"), run)["status"] == "InProgress"  # the real kstatus
    assert argo_lua(ARGO_RUN / "health.lua", run)["status"] == "Suspended"  # Argo CD's health script
    assert f"agent-tree approve {c.ns}/refund-ok {pending['id']}" in reconciling["message"]
    assert "approval: issue_refund" in watch_log.read_text()  # the Waiting column
    approval = c.get("agentapproval", pending["approval"])
    assert approval["spec"]["request"]["approvers"]["users"] == [c.user("alice")]
    assert approval["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"]
    assert wait_for(lambda: pending_gauge(c.operator) >= 1, 10, "the pending-approvals gauge")
    assert c.calls(120) == 0  # nothing runs before a decision

    # carol has no approver role: RBAC refuses (403) before anything is written
    r = c.cli("carol", "approve", f"{c.ns}/refund-ok")
    assert r.returncode == 1 and "no permission" in r.stderr and "agent-tree-approver" in r.stderr, r.stderr
    r = c.kubectl_as("carol", "patch", "agentapproval", pending["approval"], "--type=merge",
                     "-p", json.dumps({"spec": {"decision": "approve", "decidedBy": {"username": c.user("carol")}}}))  # fmt: skip
    assert r.returncode != 0 and "(Forbidden)" in r.stderr and f'User "{c.user("carol")}" cannot' in r.stderr
    # bob has the role but is not among the approvers: the admission policy refuses
    r = c.cli("bob", "approve", f"{c.ns}/refund-ok")
    assert r.returncode == 1 and "is not among the approvers" in r.stderr and c.user("bob") in r.stderr, r.stderr
    # alice writing another name as the decider: the API server refuses
    forged = {"spec": {"decision": "approve", "decidedBy": {"username": c.user("bob")}}}
    r = c.kubectl_as("alice", "patch", "agentapproval", pending["approval"], "--type=merge", "-p", json.dumps(forged))
    assert r.returncode != 0 and "spec.decidedBy.username" in r.stderr and f"not {c.user('bob')}" in r.stderr, r.stderr
    assert "decision" not in c.get("agentapproval", pending["approval"])["spec"]
    assert c.calls(120) == 0

    r = c.cli("alice", "approve", f"{c.ns}/refund-ok", pending["id"], "--reason", "within policy")
    assert r.returncode == 0, r.stderr
    assert f"approved approval {pending['id']} of {c.ns}/refund-ok" in r.stdout and c.user("alice") in r.stdout
    run = finished(c, "refund-ok")
    assert c.calls(120) == 1
    assert "approvals" not in run["status"] and "waiting" not in run["status"]
    assert "refunded" in run["status"]["answer"]
    approval = c.get("agentapproval", pending["approval"])
    assert approval["status"]["phase"] == "Approved" and approval["status"]["delivered"] is True
    assert approval["status"]["accepted"] is True and approval["status"]["decidedBy"]["username"] == c.user("alice")
    decided = [e for e in events(c, "refund-ok") if e["reason"] == "ApprovalDecided"]
    assert decided and c.user("alice") in decided[0]["message"] and "within policy" in decided[0]["message"]
    assert any(e["reason"] == "ApprovalRequested" for e in events(c, "refund-ok"))
    steps = [s for s in history_steps(c, "refund-ok") if s["type"] == "approval_decided"]
    assert [s["data"]["decided_by"]["username"] for s in steps] == [c.user("alice")]
    assert steps[0]["data"]["reason"] == "within policy"
    assert pending_gauge(c.operator) == 0

    # bad input, each a clear error and nothing changed
    r = c.cli("alice", "approve", f"{c.ns}/refund-ok", pending["id"])
    assert r.returncode == 0 and f"already approved by {c.user('alice')}" in r.stdout, r.stdout + r.stderr
    r = c.cli("alice", "reject", f"{c.ns}/refund-ok", pending["id"])
    assert r.returncode == 1 and "already approved by" in r.stderr and "never changes" in r.stderr, r.stderr
    flip = {"spec": {"decision": "reject", "decidedBy": {"username": c.user("alice")}}}
    r = c.kubectl_as("alice", "patch", "agentapproval", pending["approval"], "--type=merge", "-p", json.dumps(flip))
    assert r.returncode != 0 and "this approval was decided already (approve by" in r.stderr, r.stderr  # CRD rule
    r = c.cli("alice", "approve", f"{c.ns}/refund-ok", "a99")
    assert r.returncode == 1 and "is Succeeded and has no approval 'a99'" in r.stderr, r.stderr
    r = c.cli("alice", "approve", f"{c.ns}/refund-ok")
    assert r.returncode == 1 and "is Succeeded: nothing waits for a decision" in r.stderr, r.stderr
    r = c.cli("alice", "approve", f"{c.ns}/no-such-run")
    assert r.returncode == 1 and f"AgentRun {c.ns}/no-such-run not found" in r.stderr, r.stderr
    assert c.calls(120) == 1


def test_reject_reaches_the_model(cluster: Cluster) -> None:
    c = cluster
    create_run(c, "refund-no", "no")
    awaiting(c, "refund-no")
    r = c.cli("alice", "approve", f"{c.ns}/refund-no", "a99")
    assert r.returncode == 1 and "has no approval 'a99'; pending: " in r.stderr and "issue_refund" in r.stderr
    r = c.cli("alice", "reject", f"{c.ns}/refund-no", "--reason", "too large")
    assert r.returncode == 0 and "rejected approval" in r.stdout, r.stderr
    run = finished(c, "refund-no")
    answer = run["status"]["answer"]
    assert "rejected" in answer and "too large" in answer and c.user("alice") in answer, answer
    assert c.calls(130) == 0  # a rejected call never runs


def test_timeout_applies_on_timeout(cluster: Cluster) -> None:
    c = cluster
    create_run(c, "refund-late", "late")
    run = awaiting(c, "refund-late")
    (pending,) = run["status"]["approvals"]
    assert pending["tool"] == "refund_small" and pending["expiresAt"]
    run = finished(c, "refund-late")  # nobody decides: onTimeout approve
    assert c.calls(5) == 1
    approval = c.get("agentapproval", pending["approval"])
    assert approval["status"]["phase"] == "Approved" and approval["status"]["decidedBy"]["username"] == "system:timeout"
    assert "onTimeout applied" in approval["status"]["message"]
    r = c.cli("alice", "approve", f"{c.ns}/refund-late", pending["id"])
    assert r.returncode == 0 and "already approved by system:timeout" in r.stdout, r.stdout + r.stderr
    r = c.cli("alice", "reject", f"{c.ns}/refund-late", pending["id"])
    assert r.returncode == 1 and "already approved by system:timeout" in r.stderr, r.stderr


def test_worker_and_operator_killed_during_the_wait(cluster: Cluster) -> None:
    c = cluster
    create_run(c, "refund-crash", "crash")
    run = awaiting(c, "refund-crash")
    (pending,) = run["status"]["approvals"]
    old = c.get("agentapproval", pending["approval"])

    # SIGKILL the operator and the worker that serves the run's workflow (the root agent's)
    c.operator.kill()
    desk = {k: v for k, v in c.platform.pod_processes().items() if k.startswith(f"{c.ns}/refunds-desk-")}
    assert desk, c.platform.pod_processes()
    for proc in desk.values():
        os.kill(proc["pid"], signal.SIGKILL)
    # the AgentApproval is lost while nobody watches: the restarted operator makes it again
    ok(c.platform.kubectl("delete", "agentapproval", pending["approval"], "-n", c.ns))
    c.operator.start()

    def recreated() -> dict | None:
        r = c.platform.kubectl("get", "agentapproval", pending["approval"], "-n", c.ns, "-o", "json")
        obj = json.loads(r.stdout) if r.returncode == 0 else None
        return obj if obj and obj["metadata"]["uid"] != old["metadata"]["uid"] else None

    again = wait_for(recreated, 60, "the AgentApproval re-created after the operator restart")
    assert again["spec"]["request"] == old["spec"]["request"]

    # the decision is written while the operator is down again; the next one delivers it
    c.operator.kill()
    r = c.cli("alice", "approve", f"{c.ns}/refund-crash", "--wait", "0")
    assert r.returncode == 0, r.stderr

    def new_desk_worker() -> bool:
        now = {v["pid"] for k, v in c.platform.pod_processes().items() if k.startswith(f"{c.ns}/refunds-desk-")}
        return bool(now) and now.isdisjoint({v["pid"] for v in desk.values()})

    wait_for(new_desk_worker, 60, "the pod runner restarting the killed worker")
    assert c.calls(140) == 0
    c.operator.start()
    finished(c, "refund-crash")
    assert c.calls(140) == 1  # the tool ran exactly once
    approval = c.get("agentapproval", pending["approval"])
    assert approval["status"]["delivered"] is True and approval["status"]["accepted"] is True
