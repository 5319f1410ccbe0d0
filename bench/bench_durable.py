"""Durable runs per second and per-step overhead vs a bare Temporal workflow with the same activities.

Usage::

    .venv/bin/python bench/bench_durable.py [--runs 200] [--concurrency 20] [--sequential 30]

Uses TEMPORAL_ADDRESS / DATABASE_URL / REDIS_URL when set (``hack/platform up``), otherwise starts a
private Temporal dev server, PostgreSQL and Redis (tests/integration/services.py). Everything runs in
ONE process with one worker per task queue, like the baseline, so the numbers compare code paths,
not process counts. The tree: a supervisor with two Python children (``intake`` answers
needs_more_info, ``answer`` answers ok, one tool call each). A run of it executes 4 activities
(start_run, two python turns, finish_run) and 2 child workflows. The baselines, in the same script:
``bare-activities`` runs 4 no-op activities in one workflow; ``bare-shape`` adds 2 child workflows
(each with one no-op activity) to match the durable run's shape.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ACTIVITIES_PER_RUN = 4


# --- the agents of the benchmark tree -------------------------------------------------------------


def noop_tool(value: str) -> dict[str, Any]:
    return {"value": value}


async def intake(ctx: Any) -> Any:
    out = await ctx.call_tool("noop", value="intake")
    return ctx.needs_more_info("routing on", {"seen": out.output["value"]})


async def answer(ctx: Any) -> Any:
    out = await ctx.call_tool("noop", value="answer")
    return ctx.ok(f"done after {ctx.context.get('seen')}", {"value": out.output["value"]})


TREE = {
    "root": "sup",
    "agents": [
        {"name": "sup", "children": ["intake", "answer"]},
        {
            "name": "intake",
            "entrypoint": "bench_durable:intake",
            "tools": [{"name": "noop", "entrypoint": "bench_durable:noop_tool"}],
        },
        {
            "name": "answer",
            "entrypoint": "bench_durable:answer",
            "tools": [{"name": "noop", "entrypoint": "bench_durable:noop_tool"}],
        },
    ],
}


# --- the bare baselines ---------------------------------------------------------------------------


@activity.defn(name="bench.noop")
async def noop_activity(value: str) -> str:
    return value


@workflow.defn(name="BareChild")
class BareChild:
    @workflow.run
    async def run(self, value: str) -> str:
        return await workflow.execute_activity(noop_activity, value, start_to_close_timeout=timedelta(seconds=30))


@workflow.defn(name="BareWorkflow")
class BareWorkflow:
    @workflow.run
    async def run(self, shape: bool) -> int:
        opts = {"start_to_close_timeout": timedelta(seconds=30)}
        if not shape:
            for i in range(ACTIVITIES_PER_RUN):
                await workflow.execute_activity(noop_activity, f"a{i}", **opts)
            return ACTIVITIES_PER_RUN
        await workflow.execute_activity(noop_activity, "start", **opts)
        for i in range(2):
            await workflow.execute_child_workflow(BareChild.run, f"c{i}", id=f"{workflow.info().workflow_id}.{i}")
        await workflow.execute_activity(noop_activity, "finish", **opts)
        return ACTIVITIES_PER_RUN


# --- driver ---------------------------------------------------------------------------------------


async def measure(start_one, runs: int, concurrency: int, sequential: int) -> dict[str, float]:
    for _ in range(3):  # warm up (imports, sticky caches)
        await start_one()
    latencies = []
    for _ in range(sequential):
        t0 = time.perf_counter()
        await start_one()
        latencies.append(time.perf_counter() - t0)
    sem = asyncio.Semaphore(concurrency)

    async def bounded() -> None:
        async with sem:
            await start_one()

    t0 = time.perf_counter()
    await asyncio.gather(*(bounded() for _ in range(runs)))
    elapsed = time.perf_counter() - t0
    return {
        "runs_per_s": runs / elapsed,
        "latency_p50_ms": statistics.median(latencies) * 1000,
        "latency_mean_ms": statistics.fmean(latencies) * 1000,
        "ms_per_activity": statistics.fmean(latencies) * 1000 / ACTIVITIES_PER_RUN,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    sys.path[:0] = [str(HERE), str(REPO / "worker"), str(REPO), str(REPO / "tests" / "integration")]
    import bench_durable as mod  # the module the sandbox and the entrypoints import
    from agent_tree_worker.activities import Activities
    from agent_tree_worker.config import WorkerConfig
    from agent_tree_worker.main import build_worker
    from agent_tree_worker.store import HistoryStore
    from agent_tree_worker.stream import StepStream
    from services import Postgres, Redis, Temporal
    from temporalio.worker import Worker
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    from agent_tree import naming
    from agent_tree.contract import run_input
    from agent_tree.contract.temporal import connect, start_run
    from agent_tree.spec import AgentTreeSpec

    root = Path(tempfile.mkdtemp(prefix="bench-durable-"))
    started: list[Any] = []
    address = os.environ.get("TEMPORAL_ADDRESS")
    if not address:
        started.append(Temporal(root).start())
        address = started[-1].address
    db = os.environ.get("DATABASE_URL")
    if not db:
        started.append(Postgres(root).start())
        db = started[-1].url
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        (root / "redis").mkdir()
        started.append(Redis(root / "redis").start())
        redis_url = started[-1].url
    try:
        client = await connect(address)
        spec = AgentTreeSpec.model_validate(TREE)
        results: dict[str, Any] = {"runs": args.runs, "concurrency": args.concurrency, "sequential": args.sequential}

        bare_queue = f"bench-bare-{uuid.uuid4().hex[:6]}"
        async with Worker(
            client,
            task_queue=bare_queue,
            workflows=[mod.BareWorkflow, mod.BareChild],
            activities=[mod.noop_activity],
            workflow_runner=SandboxedWorkflowRunner(
                restrictions=SandboxRestrictions.default.with_passthrough_modules("bench_durable")
            ),
        ):
            for shape in (False, True):

                async def bare(shape: bool = shape) -> None:
                    await client.execute_workflow(
                        mod.BareWorkflow.run, shape, id=f"bare-{uuid.uuid4().hex}", task_queue=bare_queue
                    )

                results["bare-shape" if shape else "bare-activities"] = await measure(
                    bare, args.runs, args.concurrency, args.sequential
                )

        for label, url, rurl in (("durable-no-history", None, None), ("durable-history", db, redis_url)):
            store = HistoryStore(url) if url else None
            if store:
                await store.migrate()
            stream = StepStream(rurl)
            namespace = f"bench{uuid.uuid4().hex[:6]}"
            workers = [
                build_worker(
                    client,
                    WorkerConfig.load(task_queue=naming.task_queue(namespace, "b", a["name"]), env={}),
                    Activities(store, stream, identity="bench"),
                    "bench",
                )
                for a in TREE["agents"]
            ]
            for w in workers:
                await w.__aenter__()
            try:

                async def durable(namespace: str = namespace) -> None:
                    inp = run_input(namespace, "b", spec, name="r", uid=uuid.uuid4().hex, input="go")
                    result = await (await start_run(client, inp)).result()
                    assert result["status"] == "completed", result

                results[label] = await measure(durable, args.runs, args.concurrency, args.sequential)
            finally:
                for w in workers:
                    await w.__aexit__(None, None, None)
                await stream.close()
                if store:
                    await store.close()
        base = results["bare-activities"]["ms_per_activity"]
        for label in ("bare-shape", "durable-no-history", "durable-history"):
            results[label]["overhead_ms_per_step_vs_bare"] = results[label]["ms_per_activity"] - base
        return results
    finally:
        for service in reversed(started):
            (service.cleanup if hasattr(service, "cleanup") else service.stop)()


def report(results: dict[str, Any]) -> str:
    lines = [
        "| variant | runs/s | p50 latency (ms) | ms per step | overhead per step vs bare (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label in ("bare-activities", "bare-shape", "durable-no-history", "durable-history"):
        r = results[label]
        lines.append(
            f"| {label} | {r['runs_per_s']:.1f} | {r['latency_p50_ms']:.0f} | {r['ms_per_activity']:.1f} | "
            f"{r.get('overhead_ms_per_step_vs_bare', 0.0):+.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="runs per variant in the throughput phase")
    parser.add_argument("--concurrency", type=int, default=20, help="runs in flight in the throughput phase")
    parser.add_argument("--sequential", type=int, default=30, help="runs one at a time for latency")
    parser.add_argument("--json", action="store_true")
    ns = parser.parse_args()
    out = asyncio.run(main(ns))
    print(json.dumps(out, indent=2) if ns.json else report(out))
