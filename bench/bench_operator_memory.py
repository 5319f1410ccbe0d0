"""Operator memory with many finished AgentRuns in the cluster (issue 11 item 6).

Usage (against a running local platform, ``hack/platform up``)::

    .venv/bin/python bench/bench_operator_memory.py [--finished 10000] [--legacy 0] [--keep]

1. Starts ``agent-tree operator`` as a process watching ``mem-*`` namespaces (none exist yet) and
   reads its settled RSS: the **idle** baseline.
2. Creates a ``mem-`` namespace holding ``--finished`` AgentRuns that are finished the way the
   operator leaves them: created, then their status written through the status subresource
   (Succeeded, with an answer, a result, a plan and conditions, as the operator writes them), and
   labelled ``agenttree.io/finished=true``. No TTL. Reads the settled RSS again.
3. With ``--legacy M``: the operator is stopped, M more finished runs are created WITHOUT the label
   (what an operator before this change left behind), and the operator is started again: it labels
   each when it lists it; the script waits until none is left unlabelled, then reads the settled RSS
   (the one-off cost of an upgrade, compared with the first process's idle RSS).

Prints a JSON report (RSS in MiB, the ratios to idle, the creation rate). Deletes the namespace
unless ``--keep``. ``--pythonpath DIR[:DIR]`` runs the operator from another checkout (e.g. an older
commit in a ``git worktree``) to compare.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_platform import settled_rss as platform_settled_rss  # same folder: one copy of the helpers
from bench_platform import wait_for

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GROUP, VERSION = "agenttree.io", "v1alpha1"
FINISHED_LABEL = "agenttree.io/finished"
RESULT = {
    "status": "completed",
    "answer": "Invoice #4821 rejected due to missing PO number. (policy AP-4)",
    "final_agent": "verifier",
    "payload": {"invoice_id": "4821", "decision": "rejected", "reason": "missing_po", "policy": "AP-4"},
    "plan": {"route": ["triage", "invoice-specialist", "verifier"], "strategy": "triage -> specialist -> verifier"},
    "steps": 3,
    "token_usage": 0,
}


settled_rss = functools.partial(platform_settled_rss, seconds=10.0, pause=5.0)
"""Median RSS over 10 s after 5 s of quiet (bench_platform's, with a longer settle for big listings)."""


def finished_status(namespace: str, name: str, uid: str) -> dict[str, Any]:
    """The status the operator writes for a Succeeded invoice run (built by the operator's own code)."""
    from agent_tree_operator.reconcile.runs import LiveRun, status_patch

    from agent_tree import naming

    live = LiveRun()
    live.running(naming.workflow_id(namespace, name, uid), "0123456789abcdef", "supervisor", "2026-12-01T10:00:00Z")
    live.finish_with_result(RESULT, "2026-12-01T10:00:02Z")
    return status_patch({}, live.status(answer_max=1024, max_bytes=4096), generation=1) or {}


def create_finished_runs(namespace: str, names: list[str], *, labelled: bool, threads: int = 16) -> float:
    """Create ``names`` as finished AgentRuns (create + status subresource patch); returns runs/s.

    ``labelled``: as the operator leaves a finished run (``agenttree.io/finished=true``); otherwise as
    an operator before issue 11 left it (no label).
    """
    from kubernetes import client as k8s

    api = k8s.CustomObjectsApi()

    def one(name: str) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "AgentRun",
            "metadata": {"name": name, "labels": {FINISHED_LABEL: "true"} if labelled else {}},
            "spec": {"treeRef": {"name": "invoice"}, "input": f"Why was invoice #{name} rejected?"},
        }
        created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, "agentruns", body)
        status = finished_status(namespace, name, created["metadata"]["uid"])
        api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "agentruns", name, {"status": status})

    began = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(one, names):
            pass
    return len(names) / (time.monotonic() - began)


def count_runs(namespace: str, selector: str) -> int:
    """How many AgentRuns in ``namespace`` match ``selector`` (paged, so 10,000 never sit in memory)."""
    from kubernetes import client as k8s

    api = k8s.CustomObjectsApi()
    total, token = 0, None
    while True:
        page = api.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "agentruns", label_selector=selector, limit=500, _continue=token
        )
        total += len(page["items"])
        token = page["metadata"].get("continue")
        if not token:
            return total


def main(args: argparse.Namespace) -> dict[str, Any]:
    sys.path[:0] = [str(REPO / "hack"), str(REPO / "tests" / "e2e")]
    import platformlib
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from operator_process import OperatorProcess, apply_crds

    platform, _started = platformlib.ensure_up()
    os.environ.update(platform.env)
    k8s_config.load_kube_config(platform.kubeconfig)
    apply_crds(platform)
    run_id = uuid.uuid4().hex[:6]
    namespace = f"mem-{run_id}"
    extra = {"PYTHONPATH": args.pythonpath} if args.pythonpath else {}
    extra.update(item.split("=", 1) for item in args.env)
    log = Path(f"/tmp/bench-operator-memory-{run_id}.log")
    op = OperatorProcess(platform, log, "mem-*", extra)
    report: dict[str, Any] = {"finished": args.finished, "legacy": args.legacy, "operator_log": str(log)}
    op.start()
    try:
        assert op.proc is not None
        report["rss_idle_mib"] = settled_rss(op.proc.pid)
        print(f"idle: {report['rss_idle_mib']:.1f} MiB", file=sys.stderr, flush=True)
        k8s.CoreV1Api().create_namespace({"metadata": {"name": namespace}})
        wait_for(lambda: k8s.CoreV1Api().list_namespaced_service_account(namespace).items, 30, "the default account")
        names = [f"done-{i:05d}" for i in range(args.finished)]
        report["create_runs_per_s"] = create_finished_runs(namespace, names, labelled=True)
        print(f"{args.finished} finished runs created ({report['create_runs_per_s']:.0f}/s)", file=sys.stderr)
        report["rss_finished_mib"] = settled_rss(op.proc.pid)
        report["ratio_finished"] = report["rss_finished_mib"] / report["rss_idle_mib"]
        print(f"with {args.finished} finished: {report['rss_finished_mib']:.1f} MiB", file=sys.stderr, flush=True)
        if args.legacy:
            # As after an upgrade: the runs exist before this operator starts (created while it runs,
            # each would be followed as Pending until its status arrives, which is another test).
            op.stop()
            legacy = [f"legacy-{i:05d}" for i in range(args.legacy)]
            create_finished_runs(namespace, legacy, labelled=False)
            began = time.monotonic()
            op.start()
            wait_for(lambda: count_runs(namespace, f"{FINISHED_LABEL}!=true") == 0, 1800, "every legacy run labelled")
            report["legacy_labelled_in_s"] = time.monotonic() - began
            report["rss_after_legacy_mib"] = settled_rss(op.proc.pid)
            report["ratio_after_legacy"] = report["rss_after_legacy_mib"] / report["rss_idle_mib"]
        assert op.alive(), f"the operator exited; log {log}"
    finally:
        op.stop()
        if not args.keep:
            k8s.CoreV1Api().delete_namespace(namespace)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--finished", type=int, default=10_000, help="finished runs, labelled (default 10000)")
    parser.add_argument("--legacy", type=int, default=0, help="finished runs without the label (an upgrade)")
    parser.add_argument("--pythonpath", default="", help="run the operator from another checkout")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the operator (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the namespace")
    print(json.dumps(main(parser.parse_args()), indent=2))
