"""Operator memory does not grow with finished AgentRuns (issue 11 item 6), on the local platform.

A real API server, ``agent-tree operator`` as a real process watching ``mem-*`` namespaces, and
thousands of finished AgentRuns created fast (create + status subresource patch, the helpers of
``bench/bench_operator_memory.py``, which measures the same with 10,000). Finished runs carry the
label ``agenttree.io/finished=true`` (the operator sets it when a run finishes) and the operator
watches AgentRuns with ``agenttree.io/finished!=true``, so they cost it nothing; finished runs left
without the label by an older operator are labelled at startup and leave the watch too.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from operator_process import OperatorProcess, apply_crds, ok, running
from platformlib import REPO, Platform, wait_for

sys.path.insert(0, str(REPO / "bench"))
from bench_operator_memory import count_runs, create_finished_runs, settled_rss

pytestmark = pytest.mark.e2e

FINISHED = 2000
RACING = 200
LEGACY = 300
MAX_RATIO = 1.3


def holding_finalizer(ns: str) -> list[str]:
    from kubernetes import client as k8s

    api, out, token = k8s.CustomObjectsApi(), [], None
    while True:
        page = api.list_namespaced_custom_object(
            "agenttree.io", "v1alpha1", ns, "agentruns", limit=500, _continue=token
        )
        out += [i["metadata"]["name"] for i in page["items"] if i["metadata"].get("finalizers")]
        token = page["metadata"].get("continue")
        if not token:
            return out


def gauge(op: OperatorProcess, phase: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(f'agent_tree_operator_runs{{phase="{phase}"}}'):
                return float(line.split()[-1])
    return float("nan")


def test_rss_with_thousands_of_finished_runs_stays_near_idle(platform: Platform, tmp_path: Path) -> None:
    apply_crds(platform)
    from kubernetes import config as k8s_config

    k8s_config.load_kube_config(platform.kubeconfig)
    ns = f"mem-{uuid.uuid4().hex[:8]}"
    op = OperatorProcess(platform, tmp_path / "operator.log", "mem-*")
    try:
        with running(op):
            assert op.proc is not None
            idle = settled_rss(op.proc.pid)
            ok(platform.kubectl("create", "namespace", ns))
            names = [f"done-{i:05d}" for i in range(FINISHED)]
            rate = create_finished_runs(ns, names, labelled=True)
            with_finished = settled_rss(op.proc.pid)
            print(
                f"\nRSS idle {idle:.1f} MiB; with {FINISHED} finished runs ({rate:.0f} created/s) {with_finished:.1f} MiB"
            )
            assert with_finished <= MAX_RATIO * idle, (idle, with_finished)
            assert gauge(op, "Succeeded") == 0  # never in the operator's watch

            # Runs finished by someone else right after their creation, while the operator runs: kopf's
            # finalizer PATCH races the status write. Each is labelled and none keeps the finalizer
            # (before the fix, 280 of 300 did, and their namespace could not be deleted).
            create_finished_runs(ns, [f"race-{i:05d}" for i in range(RACING)], labelled=False)
            wait_for(lambda: count_runs(ns, "agenttree.io/finished!=true") == 0, 300, "every racing run labelled")
            wait_for(lambda: gauge(op, "Succeeded") == 0, 60, "the racing runs out of the operator's watch")
            assert holding_finalizer(ns) == []

            # Runs an older operator finished (no label): labelled at the next start, then gone from the watch.
            op.stop()
            create_finished_runs(ns, [f"legacy-{i:05d}" for i in range(LEGACY)], labelled=False)
            op.start()
            wait_for(lambda: count_runs(ns, "agenttree.io/finished!=true") == 0, 300, "every legacy run labelled")
            wait_for(lambda: gauge(op, "Succeeded") == 0, 60, "the legacy runs out of the operator's watch")
            # Reported, not asserted: this one-off pass over the legacy runs leaves the restarted process
            # ~15 MiB + ~45 KiB per run above idle (docs/benchmarks.md); the next restart starts at idle.
            after_legacy = settled_rss(op.proc.pid)
            print(f"after labelling {LEGACY} legacy finished runs: {after_legacy:.1f} MiB")
            # Finished runs without a TTL hold no finalizer: the namespace goes without the operator.
            assert count_runs(ns, "agenttree.io/finished=true") == FINISHED + RACING + LEGACY
            assert holding_finalizer(ns) == []
    finally:
        platform.kubectl("delete", "namespace", ns, "--wait=false")
