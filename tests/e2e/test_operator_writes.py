"""Status writes of an AgentRun, counted from the API server's audit log (issue 11 item 5).

A real API server with the generated CRDs, ``agent-tree operator`` as a real process (watching only
``sw-*`` namespaces), workers as pods the pod runner runs as processes, real Temporal and Redis.
``AGENT_TREE_STATUS_INTERVAL_MS`` is longer than the runs here, so "a run shorter than the interval"
is what every run of this module is: it may write its status at most twice (Running, final), plus
Pending once when it really waited. Counted the way ``bench/bench_platform.py`` counts: successful
PATCHes of the ``status`` subresource in the audit log.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from operator_process import OperatorProcess, apply_crds, invoice_tree, namespace, ok, running
from platformlib import Platform, wait_for

from agent_tree import naming

pytestmark = pytest.mark.e2e

INTERVAL_MS = 60_000


@pytest.fixture(scope="module")
def operator(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(platform)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with running(OperatorProcess(platform, log, "sw-*", {"AGENT_TREE_STATUS_INTERVAL_MS": str(INTERVAL_MS)})) as op:
        yield op


@pytest.fixture
def ns(platform: Platform, operator: OperatorProcess) -> Iterator[str]:
    with namespace(platform, operator, "sw") as name:
        yield name


def get(platform: Platform, ns: str, kind: str, name: str) -> dict[str, Any]:
    return json.loads(ok(platform.kubectl("get", kind, name, "-n", ns, "-o", "json")))


def apply(platform: Platform, ns: str, doc: dict) -> None:
    ok(platform.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(doc)))


def run_manifest(name: str) -> dict:
    return {
        "apiVersion": "agenttree.io/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": name},
        "spec": {"treeRef": {"name": "invoice"}, "input": "Why was invoice #4821 rejected?"},
    }


def condition(obj: dict, type_: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def tree_ready(platform: Platform, ns: str) -> None:
    def check() -> bool:
        tree = get(platform, ns, "agenttree", "invoice")
        gen_ok = (tree.get("status") or {}).get("observedGeneration") == tree["metadata"]["generation"]
        return gen_ok and condition(tree, "Ready").get("status") == "True"

    wait_for(check, 120, f"AgentTree {ns}/invoice Ready")


def finished(platform: Platform, ns: str, name: str) -> dict:
    def check() -> dict | None:
        run = get(platform, ns, "agentrun", name)
        return run if (run.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Cancelled") else None

    return wait_for(check, 180, f"AgentRun {ns}/{name} finished", interval=0.3)


def writes(platform: Platform, ns: str, name: str) -> Counter:
    """Successful writes to one AgentRun in the audit log: ``status`` PATCHes, and kopf's metadata PATCHes."""
    out: Counter = Counter()
    for event in platform.audit_events():
        ref = event.get("objectRef") or {}
        if (
            ref.get("namespace") == ns
            and ref.get("resource") == "agentruns"
            and ref.get("name") == name
            and event.get("stage") == "ResponseComplete"
            and event.get("verb") == "patch"
            and (event.get("responseStatus") or {}).get("code", 500) < 300
        ):
            if ref.get("subresource") == "status":
                out["status"] += 1
            elif event.get("userAgent", "").startswith("kopf"):
                out["kopf"] += 1
    return out


def test_a_run_shorter_than_the_interval_writes_its_status_twice(platform: Platform, ns: str) -> None:
    apply(platform, ns, invoice_tree())
    tree_ready(platform, ns)
    apply(platform, ns, run_manifest("short"))
    run = finished(platform, ns, "short")
    status = run["status"]
    assert status["phase"] == "Succeeded", status
    assert status["steps"] == 3 and status["currentAgent"] == "verifier"  # progress rode on the final write
    # The final write also labels the run finished (with the release of kopf's finalizer).
    done = wait_for(
        lambda: (
            (r := get(platform, ns, "agentrun", "short"))["metadata"].get("labels", {}).get(naming.LABEL_FINISHED) and r
        ),
        30,
        "the finished label",
    )
    assert not done["metadata"].get("finalizers")
    counted = writes(platform, ns, "short")
    print(f"\nwrites of a {status['duration']} run with a {INTERVAL_MS} ms interval: {dict(counted)}")
    # Running (with the current agent) when it started, the final phase when it ended: no Pending
    # write (the tree was ready; the CRD's default status already reads Pending), no progress write.
    assert counted["status"] == 2, counted
    # kopf: the finalizer when the run appeared, its release together with the label when it ended
    # (no diff-base annotation on runs, no conflicting second attempt).
    assert counted["kopf"] <= 2, counted


def test_a_run_waiting_for_a_missing_tree_shows_pending_with_its_reason(platform: Platform, ns: str) -> None:
    apply(platform, ns, run_manifest("early"))

    def pending() -> dict | None:
        run = get(platform, ns, "agentrun", "early")
        status = run.get("status") or {}
        # observedGeneration: the operator's Pending, not the CRD's default one.
        return run if status.get("phase") == "Pending" and status.get("observedGeneration") else None

    run = wait_for(pending, 60, "Pending, written by the operator")
    cond = condition(run, "Succeeded")
    assert cond["status"] == "Unknown" and cond["reason"] == "TreeNotFound", cond
    assert "spec.treeRef.name" in cond["message"] and "'invoice'" in cond["message"], cond
    assert condition(run, "Reconciling")["status"] == "True"  # kstatus: InProgress while it waits
    apply(platform, ns, invoice_tree())
    status = finished(platform, ns, "early")["status"]
    assert status["phase"] == "Succeeded", status
    counted = writes(platform, ns, "early")
    print(f"\nwrites of a run that waited for its tree: {dict(counted)}")
    # Pending (why it waits), Running when it started (at once: a new phase), the final phase.
    assert counted["status"] == 3, counted
