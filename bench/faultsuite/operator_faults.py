"""Faults under the operator: the operator killed with SIGKILL, and PostgreSQL, Redis, the Temporal dev
server and the kube-apiserver restarted, each with AgentRuns in flight (created through the API server,
run by the operator and the workers). A watch on the AgentRuns sees every status write meanwhile."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from typing import Any

import fault_agents as fa
import platformlib

from faultsuite.observe import FINAL, History, RunWatch, executions_per_workflow, side_effects
from faultsuite.stack import Stack, create_runs, poll


async def _settle(stack: Stack, watch: RunWatch, runs: dict[str, str], within: float) -> dict[str, Any]:
    """Wait until every run has a final phase; then count what the runs did (completed, lost, duplicates)."""
    try:
        await poll(lambda: all(watch.phases().get(n) in FINAL for n in runs), "every AgentRun final", within, 0.5)
    except TimeoutError:
        pass
    phases = watch.phases()
    ids = [((watch.objects.get(n) or {}).get("status") or {}).get("workflowId") for n in runs]
    ids = [i for i in ids if i]
    history = History(stack.postgres.url)
    duplicated, counts = await history.duplicates(ids)
    executions = await executions_per_workflow(stack.client, ids)
    effects = side_effects(stack.root, {key: fa.python_calls(False) for key in runs.values()})
    completed = sum(1 for n in runs if phases.get(n) == "Succeeded")
    return {
        "runs": len(runs),
        "completed": completed,
        "lost": len(runs) - completed,
        "duplicated_steps": duplicated,
        "duplicated_side_effects": effects["duplicated"],
        "side_effects": effects,
        "started_twice": sum(1 for n in executions.values() if n > 1),
        "step_rows": counts,
        "phases": {n: phases.get(n) for n in runs if phases.get(n) != "Succeeded"},
    }


async def operator_kills(stack: Stack, kills: int, runs: int, seed: int = 2, within: float = 300) -> dict[str, Any]:
    """kill -9 the operator ``kills`` times at random moments while ``runs`` AgentRuns are in flight."""
    rng = random.Random(seed)
    # a run makes 3 counted calls: ~12 s of work per kill keeps runs in flight through every kill
    stack.set_tool_seconds(4.0 * max(1, kills))
    op = stack.operator
    watch = RunWatch(stack.kube.kubeconfig, stack.namespace).start()  # type: ignore[union-attr]
    kill_log: list[dict[str, Any]] = []
    try:
        names = create_runs(stack, runs, "op")
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(0.2, 4.0))
            killed_at = time.monotonic()
            op.kill()  # type: ignore[union-attr]
            changes = watch.changes
            op.start()  # type: ignore[union-attr]
            await op.ready()  # type: ignore[union-attr]
            up = time.monotonic()
            pending = [n for n in names if watch.phases().get(n) not in FINAL]
            try:
                await poll(lambda c=changes, p=pending: watch.changes > c or not p, "a status write", 120)
                recover = time.monotonic() - killed_at
            except TimeoutError:
                recover = float("inf")
            kill_log.append({"at": time.strftime("%H:%M:%S"), "operator_ready_seconds": round(up - killed_at, 2),
                             "recover_seconds": round(recover, 2), "in_flight": len(pending)})  # fmt: skip
        last = time.monotonic()
        outcome = await _settle(stack, watch, names, within)
        outcome["converge_seconds"] = round(time.monotonic() - last, 2)
        outcome["status_regressions"] = watch.regressions()
    finally:
        watch.stop()
    return {
        "fault": "operator kill -9",
        "repetitions": len(kill_log),
        **outcome,
        "max_recover_seconds": max([k["recover_seconds"] for k in kill_log] + [outcome["converge_seconds"]]),
        "kills": kill_log,
    }


def _restart(stack: Stack, service: str) -> None:
    """Stop ``service`` (SIGKILL for Redis, a clean stop for the others) and start it again on its port."""
    if service == "postgres":
        stack.postgres.stop()
        stack.postgres.start()
    elif service == "redis":
        stack.redis.stop(signal.SIGKILL)
        stack.redis.start()
    elif service == "temporal":
        stack.temporal.stop()
        stack.temporal.start()
    elif service == "apiserver":
        platformlib.stop(stack.kube.dir, ["apiserver"], lambda _m: None)  # type: ignore[union-attr]
        platformlib.up(stack.kube.dir, ["apiserver"], lambda _m: None)  # type: ignore[union-attr]
    else:
        raise ValueError(f"unknown service {service!r}: postgres, redis, temporal or apiserver")


SERVICES = ("postgres", "redis", "temporal", "apiserver")
_EXPECTED: dict[int, int] = {}


async def _expected_steps(stack: Stack, watch: RunWatch) -> int:
    """Steps one undisturbed run of the Python tree records (a baseline run, once per stack)."""
    if id(stack) not in _EXPECTED:
        names = create_runs(stack, 1, "baseline")
        outcome = await _settle(stack, watch, names, 120)
        if outcome["completed"] != 1:
            raise RuntimeError(f"the baseline run did not succeed: {outcome}")
        _EXPECTED[id(stack)] = next(iter(outcome["step_rows"].values()))
    return _EXPECTED[id(stack)]


NAMES = {
    "postgres": "PostgreSQL restart",
    "redis": "Redis kill -9",
    "temporal": "Temporal dev server restart",
    "apiserver": "kube-apiserver restart",
}
TOTALS = ("runs", "completed", "lost", "duplicated_steps", "duplicated_side_effects", "started_twice", "rows_lost")


async def service_restarts(stack: Stack, service: str, repetitions: int, runs: int, within: float = 300) -> dict:
    """Restart ``service`` ``repetitions`` times, each with ``runs`` fresh AgentRuns in flight."""
    stack.set_tool_seconds(1.0)
    watch = RunWatch(stack.kube.kubeconfig, stack.namespace).start()  # type: ignore[union-attr]
    reps = []
    try:
        for _ in range(repetitions):
            reps.append(await _restart_once(stack, watch, service, runs, within))
    finally:
        watch.stop()
    return {
        "fault": NAMES[service],
        "repetitions": len(reps),
        **{key: sum(r[key] for r in reps) for key in TOTALS},
        "max_recover_seconds": max((r["recover_seconds"] for r in reps), default=0.0),
        "status_regressions": watch.regressions(),
        "repeats": reps,
    }


async def _restart_once(stack: Stack, watch: RunWatch, service: str, runs: int, within: float) -> dict[str, Any]:
    history = History(stack.postgres.url)
    expected = await _expected_steps(stack, watch)
    names = create_runs(stack, runs, service[:4])

    def started() -> list[str]:
        objs = [watch.objects.get(n) or {} for n in names]
        ids = [w for w in ((o.get("status") or {}).get("workflowId") for o in objs) if w]
        return ids if len(ids) == len(names) else []

    ids = await poll(started, "every run started", 120)

    async def begun() -> bool:
        return await history.step_count(ids) > 0

    await poll(begun, "the runs' first steps", 120)
    before_steps, before_changes = await history.step_count(ids), watch.changes
    began = time.monotonic()
    await asyncio.to_thread(_restart, stack, service)
    up = time.monotonic()

    async def progressed() -> bool:
        if service == "apiserver":
            return watch.changes > before_changes
        finished = all(watch.phases().get(n) in FINAL for n in names)
        return finished or await history.step_count(ids) > before_steps

    try:
        await poll(progressed, f"progress after the {service} restart", 180)
        recover = time.monotonic() - up
    except TimeoutError:
        recover = float("inf")
    outcome = await _settle(stack, watch, names, within)
    rows = outcome["step_rows"]
    outcome["rows_lost"] = sum(max(0, expected - n) for n in rows.values()) + expected * (len(names) - len(rows))
    return {"down_seconds": round(up - began, 2), "recover_seconds": round(recover, 2), **outcome}
