"""The whole platform under load: AgentRuns through the operator vs bare Temporal workflows of the same shape.

Usage (against a running local platform, ``hack/platform up``)::

    .venv/bin/python bench/bench_platform.py [--runs 100] [--batches 10] [--bare-batches 3] [--active 100] [--sequential 20]

What it measures, each against a baseline taken in the same script:

1. **Throughput and latency from create to Succeeded** of AgentRuns of the invoice example tree
   (``kubectl``-style creates through the API server; the Succeeded phase seen on a watch), with the
   operator as a real process and the workers as pods the pod runner runs as processes: first
   ``--sequential`` runs one at a time (latency without queueing), then ``--runs`` AgentRuns created
   at once, ``--batches`` times. Baselines on the same dev server, ``--sequential`` one at a time and
   ``--runs`` at once ``--bare-batches`` times, one in-process worker per queue: **bare flat** (the
   headline baseline: the minimal Temporal program of the same shape, a workflow on the root's queue
   running per agent a turn activity and a tool activity on that agent's own queue: 3 turns + 3 tool
   calls, no child workflows) and **bare child** (a parent running 3 child workflows in turn, each on
   its own queue running one activity: engine v1's shape).
2. **Status patches per run**, counted from the API server's audit log, against the number of
   progress steps each run streamed (what a patch-per-step design would write).
3. **Operator memory** (RSS of the process): idle with no runs (the baseline), after
   ``runs x batches`` finished runs (1,000 by default), and with ``--active`` more runs active (held
   Running on a tree whose supervisor has 0 workers).

Prints a JSON report and a Markdown table for docs/benchmarks.md. Cleans up what it created (the
namespace, its runs, the held workflows) unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GROUP, VERSION = "agenttree.io", "v1alpha1"
FINAL = ("Succeeded", "Failed", "Cancelled")
INVOICES = ["4790", "4821", "4822", "4823", "4824", "4825"]
TURNS = 3


# --- the bare baseline: 3 child-workflow turns, one tool activity each --------------------------------


@activity.defn(name="bench.tool")
async def tool_activity(value: str) -> str:
    return value


@workflow.defn(name="BenchBareTurn")
class BareTurn:
    @workflow.run
    async def run(self, value: str) -> str:
        return await workflow.execute_activity(tool_activity, value, start_to_close_timeout=timedelta(seconds=60))


@workflow.defn(name="BenchBareFlatRun")
class BareFlatRun:
    """The minimal Temporal program of an invoice run's shape: per agent, a turn activity and a tool
    activity, each on that agent's own task queue; no child workflows (issue 11's baseline)."""

    @workflow.run
    async def run(self, queues: list[str]) -> int:
        for i, queue in enumerate(queues):
            for kind in ("turn", "tool"):
                await workflow.execute_activity(
                    tool_activity, f"{kind}-{i}", task_queue=queue, start_to_close_timeout=timedelta(seconds=60)
                )
        return 2 * len(queues)


@workflow.defn(name="BenchBareRun")
class BareRun:
    @workflow.run
    async def run(self, queues: list[str]) -> int:
        for i, queue in enumerate(queues):
            await workflow.execute_child_workflow(
                BareTurn.run, f"turn-{i}", id=f"{workflow.info().workflow_id}.{i}", task_queue=queue
            )
        return len(queues)


# --- helpers ----------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(latencies: list[float], throughputs: list[float]) -> dict[str, float]:
    return {
        "runs": len(latencies),
        "throughput_runs_per_s": statistics.median(throughputs),
        "latency_p50_s": percentile(latencies, 0.5),
        "latency_p99_s": percentile(latencies, 0.99),
        "latency_mean_s": statistics.fmean(latencies),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def settled_rss(pid: int, seconds: float = 5.0, pause: float = 0.0) -> float:
    """Median RSS over ``seconds`` of samples, taken after ``pause`` seconds of quiet."""
    time.sleep(pause)
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(rss_mib(pid))
        time.sleep(0.5)
    return statistics.median(samples)


def wait_for(check: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Operator:
    """`agent-tree operator` as a process watching only the bench's namespaces."""

    def __init__(self, platform: Any, log: Path, glob: str) -> None:
        self.platform, self.log, self.glob = platform, log, glob
        self.health_port, self.metrics_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = self.platform.process_env()
        env.pop("AGENT_TREE_WATCH_NAMESPACE", None)
        env.update(
            AGENT_TREE_HEALTH_PORT=str(self.health_port),
            AGENT_TREE_METRICS_PORT=str(self.metrics_port),
            AGENT_TREE_WORKER_METRICS_PORT="auto",
            PYTHONUNBUFFERED="1",
        )
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "agent-tree"), "operator", "--namespace", self.glob],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True,
            )  # fmt: skip
        wait_for(self.healthy, 90, f"the operator (log {self.log})")

    def healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"the operator exited; see {self.log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


class Finals:
    """A watch on the namespace's AgentRuns: when each one was first seen in a final phase."""

    def __init__(self, api: Any, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.seen: dict[str, tuple[float, str]] = {}
        self.phases: dict[str, str] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from kubernetes import watch

        while not self.stop.is_set():
            w = watch.Watch()
            try:
                for event in w.stream(
                    self.api.list_namespaced_custom_object, GROUP, VERSION, self.namespace, "agentruns",
                    timeout_seconds=30,
                ):  # fmt: skip
                    obj = event["object"]
                    name = obj["metadata"]["name"]
                    phase = (obj.get("status") or {}).get("phase") or "Pending"
                    now = time.monotonic()
                    with self.lock:
                        self.phases[name] = phase
                        if phase in FINAL and name not in self.seen:
                            self.seen[name] = (now, phase)
                    if self.stop.is_set():
                        break
            except Exception:  # the watch expired or the connection dropped: watch again
                time.sleep(0.2)

    def count(self, names: list[str], phases: tuple[str, ...] = FINAL) -> int:
        with self.lock:
            return sum(1 for n in names if self.phases.get(n) in phases)


def invoice_tree(name: str = "invoice", held: bool = False) -> dict[str, Any]:
    import yaml

    tree = yaml.safe_load((REPO / "examples" / "invoice" / "agenttree.yaml").read_text())
    tree["metadata"]["name"] = name
    if held:  # no supervisor workers: its runs start and stay Running
        tree["spec"]["agents"][0]["worker"] = {"replicas": 0}
    return tree


def run_body(name: str, tree: str, i: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentRun",
        "metadata": {"name": name},
        "spec": {"treeRef": {"name": tree}, "input": f"Why was invoice #{INVOICES[i % len(INVOICES)]} rejected?"},
    }


def workers_ready(platform: Any, namespace: str, expected: int) -> bool:
    ready = 0
    for key in platform.pod_processes():
        ns, pod = key.split("/", 1)
        log = platform.logs / "pods" / f"{ns}_{pod}.log"
        if ns == namespace and log.exists() and b"agent-tree worker ready" in log.read_bytes():
            ready += 1
    return ready >= expected


def tree_ready(api: Any, namespace: str, name: str) -> bool:
    tree = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "agenttrees", name)
    status = tree.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
    return status.get("observedGeneration") == tree["metadata"]["generation"] and ready.get("status") == "True"


# --- the phases ---------------------------------------------------------------------------------------------


def agentrun_sequential(api: Any, finals: Finals, namespace: str, count: int) -> dict[str, Any]:
    """Latency with one run in flight: create, wait for Succeeded, next."""
    latencies = []
    for i in range(count):
        name = f"seq-{i:03d}"
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, "agentruns", run_body(name, "invoice", i))
        created = time.monotonic()
        wait_for(lambda name=name: finals.count([name]) == 1, 300, f"run {name} final", 0.05)
        with finals.lock:
            done, phase = finals.seen[name]
        if phase != "Succeeded":
            raise RuntimeError(f"{name} ended {phase}")
        latencies.append(done - created)
    return summary(latencies, [1 / statistics.fmean(latencies)])


def agentrun_batches(
    api: Any, finals: Finals, namespace: str, runs: int, batches: int, pid: int
) -> tuple[dict[str, Any], list[float]]:
    rss: list[float] = []
    latencies: list[float] = []
    throughputs: list[float] = []
    failed: list[str] = []
    for b in range(batches):
        names = [f"run-{b:02d}-{i:03d}" for i in range(runs)]
        created: dict[str, float] = {}
        for i, name in enumerate(names):
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, "agentruns", run_body(name, "invoice", i))
            created[name] = time.monotonic()
        wait_for(lambda names=names: finals.count(names) == len(names), 900, f"batch {b}: {runs} runs final", 0.2)
        with finals.lock:
            done = {n: finals.seen[n] for n in names}
        failed += [n for n, (_, phase) in done.items() if phase != "Succeeded"]
        latencies += [done[n][0] - created[n] for n in names]
        throughputs.append(runs / (max(t for t, _ in done.values()) - min(created.values())))
        rss.append(rss_mib(pid))
        print(f"  batch {b + 1}/{batches}: {runs} runs, {throughputs[-1]:.2f} runs/s, operator RSS {rss[-1]:.0f} MiB",
              file=sys.stderr, flush=True)  # fmt: skip
    if failed:
        raise RuntimeError(f"{len(failed)} runs did not succeed, e.g. {failed[:5]}")
    return summary(latencies, throughputs), rss


async def bare_batches(address: str, runs: int, batches: int, sequential: int, flat: bool) -> dict[str, Any]:
    """Bare workflows ``runs`` at once, ``batches`` times: ``flat`` = BareFlatRun, else BareRun (child workflows)."""
    sys.path.insert(0, str(HERE))
    import bench_platform as mod  # the module the workflow sandbox imports
    from temporalio.worker import Worker
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    from agent_tree.contract.temporal import connect

    client = await connect(address)
    prefix = f"bench-bare-{uuid.uuid4().hex[:6]}"
    root, turns = f"{prefix}.root", [f"{prefix}.agent{i}" for i in range(TURNS)]
    runner = SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("bench_platform")
    )
    parent = mod.BareFlatRun if flat else mod.BareRun
    workers = [Worker(client, task_queue=root, workflows=[parent], workflow_runner=runner)] + [
        Worker(client, task_queue=q, workflows=[mod.BareTurn], activities=[mod.tool_activity], workflow_runner=runner)
        for q in turns
    ]
    latencies: list[float] = []
    throughputs: list[float] = []
    for w in workers:
        await w.__aenter__()
    try:
        await client.execute_workflow(parent.run, turns, id=f"{prefix}-warmup", task_queue=root)

        async def one(i: int, b: int) -> tuple[float, float]:
            began = time.monotonic()
            await client.execute_workflow(parent.run, turns, id=f"{prefix}-{b}-{i}", task_queue=root)
            return began, time.monotonic()

        seq = []
        for i in range(sequential):
            began, end = await one(i, -1)
            seq.append(end - began)
        for b in range(batches):
            results = await asyncio.gather(*(one(i, b) for i in range(runs)))
            latencies += [end - began for began, end in results]
            throughputs.append(runs / (max(e for _, e in results) - min(s for s, _ in results)))
            what = "bare flat" if flat else "bare child-workflow"
            print(f"  {what} batch {b + 1}/{batches}: {throughputs[-1]:.2f} runs/s", file=sys.stderr, flush=True)
    finally:
        for w in workers:
            await w.__aexit__(None, None, None)
    return {"sequential": summary(seq, [1 / statistics.fmean(seq)]), "batches": summary(latencies, throughputs)}


def status_patches(platform: Any, namespace: str, names: list[str]) -> dict[str, float]:
    import redis

    patches: dict[str, int] = {}
    for event in platform.audit_events():
        ref = event.get("objectRef") or {}
        if (
            ref.get("namespace") == namespace
            and ref.get("resource") == "agentruns"
            and ref.get("subresource") == "status"
            and event.get("verb") == "patch"
            and event.get("stage") == "ResponseComplete"
            and (event.get("responseStatus") or {}).get("code", 500) < 300
        ):
            patches[ref["name"]] = patches.get(ref["name"], 0) + 1
    counts = [patches.get(n, 0) for n in names]
    r = redis.Redis.from_url(platform.redis_url)
    sample = names[:: max(1, len(names) // 50)]
    entries = []
    from kubernetes import client as k8s

    api = k8s.CustomObjectsApi()
    for name in sample:
        run = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "agentruns", name)
        entries.append(r.xlen(f"agent-tree:run:{run['status']['workflowId']}"))
    return {
        "patches_per_run_mean": statistics.fmean(counts),
        "patches_per_run_max": max(counts),
        "stream_entries_per_run_mean": statistics.fmean(entries),
    }


async def terminate(address: str, workflow_ids: list[str]) -> None:
    from agent_tree.contract.temporal import connect

    client = await connect(address)
    for wid in workflow_ids:
        try:
            await client.get_workflow_handle(wid).terminate("bench cleanup")
        except Exception:
            pass


def main(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "hack"))
    import platformlib
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    platform, _started = platformlib.ensure_up()
    os.environ.update(platform.env)
    k8s_config.load_kube_config(platform.kubeconfig)
    api = k8s.CustomObjectsApi()
    subprocess.run([str(platform.bin / "kubectl"), f"--kubeconfig={platform.kubeconfig}", "apply", "-f",
                    str(REPO / "crds")], check=True, capture_output=True)  # fmt: skip

    run_id = uuid.uuid4().hex[:6]
    namespace = f"bench-{run_id}"
    log = Path(f"/tmp/bench-platform-{run_id}-operator.log")
    operator = Operator(platform, log, "bench-*")
    report: dict[str, Any] = {
        "runs_per_batch": args.runs, "batches": args.batches, "active": args.active, "sequential": args.sequential,
    }  # fmt: skip
    operator.start()
    finals: Finals | None = None
    try:
        assert operator.proc is not None
        report["operator_rss_idle_mib"] = settled_rss(operator.proc.pid)
        k8s.CoreV1Api().create_namespace({"metadata": {"name": namespace}})
        wait_for(lambda: k8s.CoreV1Api().list_namespaced_service_account(namespace).items, 30, "the default account")
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, "agenttrees", invoice_tree())
        wait_for(lambda: tree_ready(api, namespace, "invoice"), 120, "the invoice tree Ready")
        wait_for(lambda: workers_ready(platform, namespace, 5), 120, "5 worker processes ready")
        finals = Finals(api, namespace)
        finals.thread.start()

        print(f"AgentRuns: {args.sequential} one at a time ...", file=sys.stderr, flush=True)
        report["agentrun_sequential"] = agentrun_sequential(api, finals, namespace, args.sequential)
        print(f"AgentRuns: {args.batches} x {args.runs} at once ...", file=sys.stderr, flush=True)
        report["agentrun"], report["operator_rss_after_each_batch_mib"] = agentrun_batches(
            api, finals, namespace, args.runs, args.batches, operator.proc.pid
        )
        names = [f"run-{b:02d}-{i:03d}" for b in range(args.batches) for i in range(args.runs)]
        report["status"] = status_patches(platform, namespace, names)
        print(f"bare workflows: {args.bare_batches} x {args.runs} at once ...", file=sys.stderr, flush=True)
        bare = asyncio.run(bare_batches(platform.temporal_address, args.runs, args.bare_batches, args.sequential, True))
        report["bare_sequential"], report["bare"] = bare["sequential"], bare["batches"]
        child = asyncio.run(
            bare_batches(platform.temporal_address, args.runs, args.bare_batches, args.sequential, False)
        )
        report["bare_child_sequential"], report["bare_child"] = child["sequential"], child["batches"]
        report["operator_rss_finished_mib"] = settled_rss(operator.proc.pid)

        api.create_namespaced_custom_object(GROUP, VERSION, namespace, "agenttrees", invoice_tree("held", held=True))
        wait_for(lambda: tree_ready(api, namespace, "held"), 120, "the held tree Ready")
        held = [f"held-{i:03d}" for i in range(args.active)]
        for i, name in enumerate(held):
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, "agentruns", run_body(name, "held", i))
        wait_for(lambda: finals.count(held, ("Running",)) == len(held), 300, f"{len(held)} held runs Running")
        report["operator_rss_finished_and_active_mib"] = settled_rss(operator.proc.pid, 10.0)
        report["operator_metrics_sample"] = [
            line for line in operator.metrics().splitlines()
            if line.startswith(("agent_tree_operator_runs{", "agent_tree_operator_runs_active",
                                "agent_tree_operator_status_patches_total"))
        ]  # fmt: skip

        a, bare = report["agentrun"], report["bare"]
        a1, b1 = report["agentrun_sequential"], report["bare_sequential"]
        report["ratios"] = {
            "latency_p50_one_at_a_time_agentrun_vs_bare": a1["latency_p50_s"] / b1["latency_p50_s"],
            "latency_p99_one_at_a_time_agentrun_vs_bare": a1["latency_p99_s"] / b1["latency_p99_s"],
            "throughput_agentrun_vs_bare": a["throughput_runs_per_s"] / bare["throughput_runs_per_s"],
            "throughput_agentrun_vs_bare_child": a["throughput_runs_per_s"]
            / report["bare_child"]["throughput_runs_per_s"],
            "latency_p50_agentrun_vs_bare": a["latency_p50_s"] / bare["latency_p50_s"],
            "latency_p99_agentrun_vs_bare": a["latency_p99_s"] / bare["latency_p99_s"],
            "status_patches_vs_stream_entries": report["status"]["patches_per_run_mean"]
            / report["status"]["stream_entries_per_run_mean"],
            "rss_finished_vs_idle": report["operator_rss_finished_mib"] / report["operator_rss_idle_mib"],
            "rss_finished_and_active_vs_idle": report["operator_rss_finished_and_active_mib"]
            / report["operator_rss_idle_mib"],
        }
        if not args.keep:
            held_ids = []
            for name in held:
                run = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "agentruns", name)
                held_ids.append((run.get("status") or {}).get("workflowId"))
            subprocess.run([str(platform.bin / "kubectl"), f"--kubeconfig={platform.kubeconfig}", "delete",
                            "agentruns", "--all", "-n", namespace, "--timeout=300s"], capture_output=True)  # fmt: skip
            asyncio.run(terminate(platform.temporal_address, [w for w in held_ids if w]))
        return report
    finally:
        if finals is not None:
            finals.stop.set()
        operator.stop()
        if not args.keep:
            subprocess.run([str(platform.bin / "kubectl"), f"--kubeconfig={platform.kubeconfig}", "delete",
                            "namespace", namespace, "--wait=false"], capture_output=True)  # fmt: skip
        print(f"operator log: {log}", file=sys.stderr)


def markdown(r: dict[str, Any]) -> str:
    a, b, s, q = r["agentrun"], r["bare"], r["status"], r["ratios"]
    a1, b1 = r["agentrun_sequential"], r["bare_sequential"]
    return "\n".join(
        [
            "| measure | AgentRun (operator + workers) | baseline | ratio |",
            "|---|---:|---:|---:|",
            f"| latency create -> Succeeded, one at a time, p50 (s) | {a1['latency_p50_s']:.2f} | "
            f"{b1['latency_p50_s']:.2f} (bare) | {q['latency_p50_one_at_a_time_agentrun_vs_bare']:.1f} |",
            f"| latency create -> Succeeded, one at a time, p99 (s) | {a1['latency_p99_s']:.2f} | "
            f"{b1['latency_p99_s']:.2f} (bare) | {q['latency_p99_one_at_a_time_agentrun_vs_bare']:.1f} |",
            f"| throughput, {r['runs_per_batch']} at once (runs/s, median of batches) | {a['throughput_runs_per_s']:.2f} | "
            f"{b['throughput_runs_per_s']:.2f} (bare flat) | {q['throughput_agentrun_vs_bare']:.2f} |",
            f"| throughput, {r['runs_per_batch']} at once, vs child-workflow baseline | {a['throughput_runs_per_s']:.2f} | "
            f"{r['bare_child']['throughput_runs_per_s']:.2f} (bare, 3 child workflows) | "
            f"{q['throughput_agentrun_vs_bare_child']:.2f} |",
            f"| latency, {r['runs_per_batch']} at once, p50 (s) | {a['latency_p50_s']:.2f} | {b['latency_p50_s']:.2f} (bare) | "
            f"{q['latency_p50_agentrun_vs_bare']:.1f} |",
            f"| latency, {r['runs_per_batch']} at once, p99 (s) | {a['latency_p99_s']:.2f} | {b['latency_p99_s']:.2f} (bare) | "
            f"{q['latency_p99_agentrun_vs_bare']:.1f} |",
            f"| status patches per run (mean / max) | {s['patches_per_run_mean']:.2f} / {s['patches_per_run_max']} | "
            f"{s['stream_entries_per_run_mean']:.1f} (stream entries = one patch per step) | "
            f"{q['status_patches_vs_stream_entries']:.2f} |",
            f"| operator RSS, {a['runs']} finished runs (MiB) | {r['operator_rss_finished_mib']:.0f} | "
            f"{r['operator_rss_idle_mib']:.0f} (idle, no runs) | {q['rss_finished_vs_idle']:.2f} |",
            f"| operator RSS, {a['runs']} finished + {r['active']} active (MiB) | "
            f"{r['operator_rss_finished_and_active_mib']:.0f} | {r['operator_rss_idle_mib']:.0f} (idle) | "
            f"{q['rss_finished_and_active_vs_idle']:.2f} |",
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--runs", type=int, default=100, help="AgentRuns (and bare workflows) created at once per batch"
    )
    parser.add_argument("--batches", type=int, default=10, help="AgentRun batches (runs x batches finished runs)")
    parser.add_argument("--bare-batches", type=int, default=3, help="batches of bare workflows")
    parser.add_argument("--active", type=int, default=100, help="runs held Running for the memory measurement")
    parser.add_argument("--sequential", type=int, default=20, help="runs one at a time (latency without queueing)")
    parser.add_argument("--keep", action="store_true", help="leave the namespace and its runs in place")
    parsed = parser.parse_args()
    result = main(parsed)
    print(json.dumps(result, indent=2))
    print()
    print(markdown(result))
