"""Backlog autoscaling and metrics end to end on the local platform (hack/): the operator as a real
process, workers as pods the pod runner runs as processes, real Temporal, PostgreSQL and Redis.

- 30 AgentRuns against the invoice tree whose specialist autoscales (min 0 / max 4, a slow ERP tool,
  2 activity slots per worker): the specialist's Deployment goes 0 -> 4 (the seconds from the first
  queued specialist turn to Running workers are measured and printed), every run succeeds, and it
  goes back to 0 after ``scaleDownDelaySeconds``.
- ``externalScaling: true``: the operator never writes that Deployment's replicas.
- A fixed workload (N invoice runs) moves the counters scraped over HTTP from the operator and from
  every worker pod by exactly the expected amounts.

Workers run with ``AGENT_TREE_METRICS_PORT=auto`` (the operator's ``AGENT_TREE_WORKER_METRICS_PORT``):
on this host all pods share one network, so each binds a free port and logs it; the test reads the
port from the pod's log. The operator watches ``oas-*`` namespaces only.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from operator_process import OperatorProcess, apply_crds, namespace, ok, running
from platformlib import REPO, Platform, wait_for
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e

INVOICE = REPO / "examples" / "invoice"
SPECIALIST = "invoice-invoice-specialist"
PORT_LINE = re.compile(rb"agent-tree worker: metrics on port (\d+)")
RUNS = 30
SCALE_DOWN_DELAY = 5
INVOICES = ["4790", "4821", "4822", "4823", "4824", "4825"]


class Operator(OperatorProcess):
    """The operator of these tests: ``oas-*`` namespaces, a 2 s autoscaler poll."""

    def __init__(self, platform: Platform, log: Path) -> None:
        super().__init__(platform, log, "oas-*", {"AGENT_TREE_AUTOSCALE_INTERVAL_SECONDS": "2"})

    def metrics(self) -> dict[tuple[str, tuple], float]:
        return scrape(self.metrics_port)


@pytest.fixture(scope="module")
def operator(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    apply_crds(platform)
    with running(Operator(platform, tmp_path_factory.mktemp("operator") / "operator.log")) as op:
        yield op


@pytest.fixture
def ns(platform: Platform, operator: Operator) -> Iterator[str]:
    with namespace(platform, operator, "oas", cleanup_timeout=120) as name:
        yield name


# --- helpers ---------------------------------------------------------------------------------------------


def scrape(port: int, host: str = "127.0.0.1") -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def get(platform: Platform, ns: str, kind: str, name: str | None = None, *args: str) -> Any:
    return json.loads(ok(platform.kubectl("get", kind, *([name] if name else []), "-n", ns, "-o", "json", *args)))


def apply(platform: Platform, ns: str, docs: Any) -> None:
    ok(
        platform.kubectl(
            "apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs if isinstance(docs, list) else [docs])
        )
    )


def invoice_tree(specialist_worker: dict | None = None, slow_seconds: float = 0.0) -> dict:
    """The invoice example with the test's slow ERP tool and the specialist's worker settings."""
    tree = yaml.safe_load((INVOICE / "agenttree.yaml").read_text())
    spec = tree["spec"]
    spec["worker"]["env"] = [
        {"name": "PYTHONPATH", "value": "examples/invoice:tests/e2e"},
        {"name": "SLOW_TOOL_SECONDS", "value": str(slow_seconds)},
    ]
    specialist = spec["agents"][2]
    specialist["tools"][0]["entrypoint"] = "slow_invoice_tools:erp_lookup"  # same tool name: erp_lookup
    if specialist_worker is not None:
        specialist["worker"] = specialist_worker
    return tree


def run_manifests(count: int, prefix: str = "run") -> list[dict]:
    return [
        {
            "apiVersion": "agenttree.io/v1alpha1",
            "kind": "AgentRun",
            "metadata": {"name": f"{prefix}-{i:02d}"},
            "spec": {
                "treeRef": {"name": "invoice"},
                "input": f"Why was invoice #{INVOICES[i % len(INVOICES)]} rejected?",
            },
        }
        for i in range(count)
    ]


def tree_ready(platform: Platform, ns: str) -> dict:
    def check() -> dict | None:
        tree = get(platform, ns, "agenttree", "invoice")
        status = tree.get("status") or {}
        ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
        return (
            tree
            if status.get("observedGeneration") == tree["metadata"]["generation"] and ready.get("status") == "True"
            else None
        )

    return wait_for(check, 120, f"AgentTree {ns}/invoice Ready")


def all_finished(platform: Platform, ns: str, count: int) -> list[dict]:
    items = get(platform, ns, "agentruns")["items"]
    done = [r for r in items if (r.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Cancelled")]
    return items if len(done) == count else []


def worker_pods(platform: Platform, ns: str, deployment: str | None = None) -> dict[str, dict]:
    """'<pod>' -> pod-runner record of the live worker processes of this namespace (optionally one Deployment)."""
    out = {}
    for key, info in platform.pod_processes().items():
        pod_ns, pod = key.split("/", 1)
        if pod_ns == ns and (deployment is None or pod.startswith(f"{deployment}-")):
            out[pod] = info
    return out


def pod_log(platform: Platform, ns: str, pod: str) -> bytes:
    path = platform.logs / "pods" / f"{ns}_{pod}.log"
    return path.read_bytes() if path.exists() else b""


def ready_workers(platform: Platform, ns: str, deployment: str) -> list[str]:
    return [p for p in worker_pods(platform, ns, deployment) if b"agent-tree worker ready" in pod_log(platform, ns, p)]


def metrics_port(platform: Platform, ns: str, pod: str) -> int | None:
    ports = PORT_LINE.findall(pod_log(platform, ns, pod))
    return int(ports[-1]) if ports else None


def replicas(platform: Platform, ns: str, deployment: str) -> int:
    return get(platform, ns, "deployment", deployment)["spec"].get("replicas", 1)


def turn_times(platform: Platform, ns: str, agent: str) -> tuple[float, float]:
    """When the first turn of ``agent`` in this namespace's runs was queued, and when the last one closed.

    Engine v2 runs a turn as activities on the agent's queue (no workflow to list): the supervisor
    writes the turn's ``agent_start`` (record_steps local activity) right before queueing it, and the
    turn's ``agent_end`` with the next write after it returned; PostgreSQL timestamps both.
    """

    async def query() -> tuple[Any, Any, int]:
        conn = await asyncpg.connect(platform.database_url, timeout=10)
        try:
            return await conn.fetchrow(
                "SELECT min(s.created_at) FILTER (WHERE s.type = 'agent_start'),"
                " max(s.created_at) FILTER (WHERE s.type = 'agent_end'),"
                " count(*) FILTER (WHERE s.type = 'agent_start')"
                " FROM steps s JOIN runs r ON r.workflow_id = s.run_id"
                " WHERE r.namespace = $1 AND s.agent = $2",
                ns,
                agent,
            )
        finally:
            await conn.close()

    first, last, turns = asyncio.run(query())
    assert turns, f"no turn of {agent} recorded in namespace {ns}"
    return first.timestamp(), last.timestamp()


def iso(value: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# --- the tests -------------------------------------------------------------------------------------------


def test_thirty_runs_scale_the_specialist_from_zero_to_four_and_back(platform: Platform, ns: str) -> None:
    autoscale = {"minReplicas": 0, "maxReplicas": 4, "targetBacklogPerReplica": 2,
                 "scaleDownDelaySeconds": SCALE_DOWN_DELAY}  # fmt: skip
    worker = {"autoscale": autoscale, "env": [{"name": "AGENT_TREE_MAX_CONCURRENT_ACTIVITIES", "value": "2"}]}
    apply(platform, ns, invoice_tree(worker, slow_seconds=1.5))
    # A new Deployment starts at 1 (the API server's default); idle, the autoscaler takes it to 0.
    wait_for(lambda: replicas(platform, ns, SPECIALIST) == 0 and not worker_pods(platform, ns, SPECIALIST),
             60 + SCALE_DOWN_DELAY, "the idle specialist scaled to zero")  # fmt: skip
    tree = tree_ready(platform, ns)
    assert not tree["metadata"].get("finalizers")  # autoscaling adds none: deleting the tree never waits
    wait_for(lambda: len(ready_workers(platform, ns, "invoice-supervisor")) == 1
             and len(ready_workers(platform, ns, "invoice-triage")) == 1
             and len(ready_workers(platform, ns, "invoice-verifier")) == 1, 120, "the fixed workers ready")  # fmt: skip

    began = time.time()
    apply(platform, ns, run_manifests(RUNS))
    timeline: dict[str, float] = {}
    peak = {"replicas": 0, "ready": 0}

    def watch() -> list[dict]:
        now = time.time()
        want = replicas(platform, ns, SPECIALIST)
        ready = len(ready_workers(platform, ns, SPECIALIST))
        peak["replicas"], peak["ready"] = max(peak["replicas"], want), max(peak["ready"], ready)
        if want > 0:
            timeline.setdefault("scaled_up", now)
        if ready >= 1:
            timeline.setdefault("first_ready", now)
        if want == 4:
            timeline.setdefault("max_replicas", now)
        if ready == 4:
            timeline.setdefault("max_ready", now)
        return all_finished(platform, ns, RUNS)

    items = wait_for(watch, 600, f"{RUNS} AgentRuns finished", interval=0.2)
    finished = time.time()
    phases = {r["metadata"]["name"]: r["status"]["phase"] for r in items}
    assert set(phases.values()) == {"Succeeded"}, {n: p for n, p in phases.items() if p != "Succeeded"}
    assert peak["replicas"] == 4, peak  # maxReplicas reached, never exceeded
    assert peak["ready"] >= 2, peak

    queued, last_turn = turn_times(platform, ns, "invoice-specialist")

    # Back to zero once idle for scaleDownDelaySeconds: Deployment and processes.
    wait_for(lambda: replicas(platform, ns, SPECIALIST) == 0 and not worker_pods(platform, ns, SPECIALIST),
             120, "the specialist back at zero")  # fmt: skip
    at_zero = time.time()
    report = {
        "runs": RUNS,
        "all runs (s)": round(finished - began, 1),
        # Negative: the pre-warm scales the specialist when its turn is announced, before it is queued.
        "first specialist turn queued -> replicas > 0 (s)": round(timeline["scaled_up"] - queued, 2),
        "first specialist turn queued -> first worker ready (s)": round(timeline["first_ready"] - queued, 2),
        "first specialist turn queued -> 4 replicas (s)": round(timeline.get("max_replicas", float("nan")) - queued, 2),
        "first specialist turn queued -> 4 workers ready (s)": round(
            timeline.get("max_ready", float("nan")) - queued, 2
        ),
        "last specialist turn closed -> 0 workers (s)": round(at_zero - last_turn, 1),
        "peak": peak,
    }
    print("\nautoscaling, measured:\n" + json.dumps(report, indent=2))
    assert at_zero - last_turn >= SCALE_DOWN_DELAY  # idle for scaleDownDelaySeconds before going to zero
    assert timeline["first_ready"] - queued < 60


def test_external_scaling_replicas_are_never_written(platform: Platform, operator: Operator, ns: str) -> None:
    worker = {"externalScaling": True, "autoscale": {"minReplicas": 0, "maxReplicas": 4, "scaleDownDelaySeconds": 0}}
    apply(platform, ns, invoice_tree(worker))
    tree_ready(platform, ns)
    ok(platform.kubectl("scale", "deployment", SPECIALIST, "-n", ns, "--replicas=3"))  # what an HPA would do
    apply(platform, ns, run_manifests(2, "ext"))
    wait_for(lambda: all_finished(platform, ns, 2), 180, "2 runs finished")
    dep = get(platform, ns, "deployment", SPECIALIST, "--show-managed-fields")
    assert dep["spec"]["replicas"] == 3
    owners = {m["manager"] for m in dep["metadata"]["managedFields"] if "f:replicas" in json.dumps(m.get("fieldsV1"))}
    assert "agent-tree-autoscaler" not in owners and "agent-tree-operator" not in owners, owners
    # Observed all the same: its backlog is exported (e.g. for a KEDA Prometheus trigger).
    labels = {"namespace": ns, "tree": "invoice", "agent": "invoice-specialist"}
    wait_for(lambda: any(name == "agent_tree_autoscaler_backlog" and set(labels.items()) <= set(ls)
                         for name, ls in operator.metrics()), 30, "the external agent's backlog gauge")  # fmt: skip


def test_metrics_count_a_fixed_workload_exactly(platform: Platform, operator: Operator, ns: str) -> None:
    n = 5
    apply(platform, ns, invoice_tree({"replicas": 1}))
    tree_ready(platform, ns)
    deployments = ("invoice-supervisor", "invoice-triage", SPECIALIST, "invoice-verifier")

    def ports() -> dict[str, int] | None:
        pods = {p: metrics_port(platform, ns, p) for p in worker_pods(platform, ns)}
        ready = [p for d in deployments for p in ready_workers(platform, ns, d)]
        return pods if len(ready) == 4 and len(pods) == 4 and all(pods.values()) else None

    pods = wait_for(ports, 120, "4 ready workers with their metrics ports")
    pids = {p: info["pid"] for p, info in worker_pods(platform, ns).items()}

    def workers() -> dict[tuple[str, tuple], float]:
        merged: dict[tuple[str, tuple], float] = {}
        for pod, port in pods.items():
            for key, value in scrape(port).items():
                merged[(key[0], (*key[1], ("pod", pod)))] = value
        return merged

    op_before, w_before = operator.metrics(), workers()
    apply(platform, ns, run_manifests(n, "fixed"))
    items = wait_for(lambda: all_finished(platform, ns, n), 300, f"{n} runs finished")
    assert {r["status"]["phase"] for r in items} == {"Succeeded"}
    op_after, w_after = operator.metrics(), workers()
    assert {p: info["pid"] for p, info in worker_pods(platform, ns).items()} == pids  # no worker restarted

    def op(name: str, **labels: str) -> float:
        return total(op_after, name, **labels) - total(op_before, name, **labels)

    def wk(name: str, **labels: str) -> float:
        return total(w_after, name, **labels) - total(w_before, name, **labels)

    observed = {
        "operator runs_started": op("agent_tree_operator_runs_started_total"),
        "operator runs_finished{Succeeded}": op("agent_tree_operator_runs_finished_total", phase="Succeeded"),
        "operator reconciles{AgentRun,started}": op(
            "agent_tree_operator_reconciles_total", kind="AgentRun", result="started"
        ),
        "operator reconciles{AgentRun,finished}": op(
            "agent_tree_operator_reconciles_total", kind="AgentRun", result="finished"
        ),
        "operator run_duration count{Succeeded}": op(
            "agent_tree_operator_run_duration_seconds_count", phase="Succeeded"
        ),
        "tool calls erp_lookup ok": wk("agent_tree_worker_tool_calls_total", tool="erp_lookup", result="ok"),
        "tool calls policy_search ok": wk("agent_tree_worker_tool_calls_total", tool="policy_search", result="ok"),
        "tool calls verify_answer ok": wk("agent_tree_worker_tool_calls_total", tool="verify_answer", result="ok"),
        "tool calls error": wk("agent_tree_worker_tool_calls_total", result="error"),
        "handoffs": wk("agent_tree_worker_handoffs_total"),
        "handoffs to supervisor": wk("agent_tree_worker_handoffs_total", to_agent="supervisor"),
        "turns triage": wk("agent_tree_worker_agent_turns_total", agent="triage", result="needs_more_info"),
        "turns invoice-specialist": wk("agent_tree_worker_agent_turns_total", agent="invoice-specialist"),
        "turns verifier ok": wk("agent_tree_worker_agent_turns_total", agent="verifier", result="ok"),
        "turns supervisor completed": wk("agent_tree_worker_agent_turns_total", agent="supervisor", result="completed"),
        "model calls": wk("agent_tree_worker_model_calls_total"),
        "temporal workflows completed": wk("temporal_workflow_completed_total"),
    }
    expected = {
        "operator runs_started": n,
        "operator runs_finished{Succeeded}": n,
        "operator reconciles{AgentRun,started}": n,
        "operator reconciles{AgentRun,finished}": n,
        "operator run_duration count{Succeeded}": n,
        "tool calls erp_lookup ok": n,
        "tool calls policy_search ok": n,
        "tool calls verify_answer ok": n,
        "tool calls error": 0,
        "handoffs": 3 * n,
        "handoffs to supervisor": 3 * n,
        "turns triage": n,
        "turns invoice-specialist": n,
        "turns verifier ok": n,
        "turns supervisor completed": n,
        "model calls": 0,
        "temporal workflows completed": n,  # engine v2: one workflow per run; its turns are activities
    }
    print(f"\nmetrics after {n} invoice runs (delta):\n" + json.dumps(observed, indent=2))
    assert observed == expected
    # Status patches: a few per run, never one per step (bounded as in docs/operator.md).
    patches = op("agent_tree_operator_status_patches_total", resource="agentruns")
    assert 2 * n <= patches <= 6 * n, patches
    # Every tool call was timed; the SDK's latencies are there too.
    assert wk("agent_tree_worker_tool_call_duration_seconds_count") == 3 * n
    assert wk("temporal_activity_execution_latency_seconds_count") > 0
    # No unbounded label: no run name, uid or workflow id anywhere in the label values.
    names = {r["metadata"]["name"] for r in items} | {r["metadata"]["uid"] for r in items}
    for key in (*op_after, *w_after):
        for _label, value in key[1]:
            assert value not in names and not value.startswith("agentrun."), key
