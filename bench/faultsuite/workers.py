"""Workers killed with SIGKILL at chosen points: mid tool call, mid model call, while a run awaits approval.

Runs of a Python tree and of a model tree (the fake OpenAI endpoint) start directly on Temporal, as the
operator would start them; a decider approves each pending approval after a random delay; a killer
waits for the point it wants, kills the worker process that holds it and starts its replacement.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from pathlib import Path
from typing import Any

import fault_agents as fa

from agent_tree.contract import run_input
from agent_tree.contract.control import ApprovalDecision, Decider
from agent_tree.contract.temporal import decide, run_progress, start_run
from faultsuite.observe import History, side_effects
from faultsuite.stack import Stack, poll

POINTS = ("tool", "model", "approval")
APPROVER = Decider(username="flt-approver")


class Run:
    def __init__(self, tree: str, handle: Any, key: str, calls: list[str]) -> None:
        self.tree, self.handle, self.key, self.calls = tree, handle, key, calls
        self.pending: list[str] = []
        self.result: dict[str, Any] | None = None


async def decider(runs: list[Run], client: Any, delay: tuple[float, float], rng: random.Random) -> None:
    """Approve every pending approval some random seconds after it is first seen (runs forever)."""
    first_seen: dict[tuple[str, str], float] = {}
    while True:
        for run in runs:
            if run.result is not None:
                continue
            try:
                progress = await asyncio.wait_for(run_progress(run.handle), 3)
            except Exception:  # the worker holding the workflow may be dead right now
                continue
            run.pending = [a.id for a in progress.approvals]
            for approval_id in run.pending:
                seen = first_seen.setdefault((run.handle.id, approval_id), time.monotonic() + rng.uniform(*delay))
                if time.monotonic() >= seen:
                    try:
                        await asyncio.wait_for(
                            decide(client, run.handle.id, ApprovalDecision(id=approval_id, decision="approve",
                                                                            decided_by=APPROVER)), 5)  # fmt: skip
                    except Exception:  # retried on the next pass
                        pass
        await asyncio.sleep(0.2)


def holder_of_tool_call(root: Path, workers: dict[str, Any]) -> tuple[Any, str] | None:
    """(worker, key) of a counting tool call in progress in a live worker process."""
    pids = {w.proc.pid: w for w in workers.values() if w.proc and w.proc.poll() is None}
    for marker in (root / "inflight").iterdir():
        key, _, pid = marker.name.rsplit(".", 2)
        if int(pid) in pids:
            return pids[int(pid)], key
    return None


async def worker_kills(stack: Stack, kills: int, runs: int, seed: int = 1, within: float = 300) -> dict[str, Any]:
    """kill -9 ``kills`` times across ``runs`` concurrent runs (half Python, half model agents, each with an
    approval)."""
    rng = random.Random(seed)
    # calls long enough that the runs are still in flight for the last kills (1 s for the reduced size;
    # kills / 4 let the full size's runs end after 9 of 20 kills)
    stack.set_tool_seconds(max(1.0, kills / 2))
    stack.model.seconds = max(1.0, kills / 2)
    workers = stack.tree_workers
    flat = {f"{t}/{a}": w for (t, a), w in workers.items()}
    started: list[Run] = []
    for i in range(runs):
        tree = "py" if i % 2 == 0 else "llm"
        key = f"flt-key-{uuid.uuid4().hex[:10]}"
        text = f"book {key}" if tree == "py" else fa.model_input(key, True)
        inp = run_input(stack.namespace, tree, stack.trees[tree], name=f"w{i}-{key[-6:]}", uid=uuid.uuid4().hex[:8],
                        input=text, context={"approval": True})  # fmt: skip
        calls = fa.python_calls(True) if tree == "py" else fa.model_calls(True)
        started.append(Run(tree, await start_run(stack.client, inp), key, calls))
    history = History(stack.postgres.url)
    deciding = asyncio.create_task(decider(started, stack.client, (3.0, 6.0), rng))
    waiting = [asyncio.create_task(_result(r, within)) for r in started]
    kill_log: list[dict[str, Any]] = []
    recoveries: list[asyncio.Task] = []
    try:
        points = [POINTS[i % len(POINTS)] for i in range(kills)]
        rng.shuffle(points)
        for point in points:
            if all(t.done() for t in waiting):
                break
            record, recovering = await _kill_at(point, stack, workers, flat, started, history, rng)
            kill_log.append(record)
            recoveries.append(recovering)
            await asyncio.sleep(rng.uniform(0.5, 2.0))
        await asyncio.gather(*waiting, *recoveries)
    finally:
        deciding.cancel()
        for t in [*waiting, *recoveries]:
            t.cancel()
    completed = sum(1 for r in started if (r.result or {}).get("status") == "completed")
    duplicated, _ = await history.duplicates([r.handle.id for r in started])
    effects = side_effects(stack.root, {r.key: r.calls for r in started})
    return {
        "fault": "worker kill -9 (tool, model, approval)",
        "repetitions": len(kill_log),
        "requested_repetitions": kills,
        "runs": runs,
        "completed": completed,
        "lost": runs - completed,
        "duplicated_steps": duplicated,
        "duplicated_side_effects": effects["duplicated"],
        "side_effects": effects,
        "max_recover_seconds": max((k.get("recover_seconds", float("inf")) for k in kill_log), default=0.0),
        "kills": kill_log,
        "lost_runs": {r.handle.id: r.result for r in started if (r.result or {}).get("status") != "completed"},
    }


async def _result(run: Run, within: float) -> None:
    try:
        run.result = await asyncio.wait_for(run.handle.result(), within)
    except Exception as exc:  # a lost run is a finding, not a crash of the suite
        run.result = {"status": f"lost: {type(exc).__name__}: {exc}"}


async def _kill_at(point: str, stack: Stack, workers: dict, flat: dict, runs: list[Run], history: History,
                   rng: random.Random) -> tuple[dict[str, Any], asyncio.Task]:  # fmt: skip
    """Wait (up to 30 s) for ``point`` in a ready worker, kill that worker and start its replacement.

    Returns the kill's record and a task that fills in its recovery: the seconds from the kill until the
    affected run recorded its next step (or finished).
    """

    def find() -> tuple[Any, Run | None] | None:
        # Readiness is looked at on every poll: a replacement that becomes ready during the wait counts
        # (a set taken once before the wait left a just-killed agent out for all 30 s, and the full run
        # then killed random workers instead of its points: 5 of 20 kills happened).
        ready = {id(w) for w in flat.values() if getattr(w, "is_ready", True)}
        if point == "tool":
            found = holder_of_tool_call(stack.root, {k: w for k, w in flat.items() if id(w) in ready})
            return (found[0], next((r for r in runs if r.key == found[1]), None)) if found else None
        if point == "model":
            for model, key in stack.model.in_progress():
                worker = workers[("llm", "clerk" if model == "flt-clerk" else "desk")]
                run = next((r for r in runs if r.key == key and r.result is None), None)
                if run is not None and id(worker) in ready:
                    return worker, run
            return None
        for run in runs:
            worker = workers[(run.tree, "office" if run.tree == "py" else "desk")]
            if run.pending and run.result is None and id(worker) in ready:
                return worker, run
        return None

    try:
        worker, run = await poll(find, f"a {point} point", 30, interval=0.05)
        hit = point
    except TimeoutError:
        worker, run, hit = rng.choice(list(flat.values())), None, f"{point} (not reached: random worker)"
    affected = [run] if run else [r for r in runs if r.result is None]
    ids = [r.handle.id for r in affected]
    before = await history.step_count(ids)
    killed_at = time.monotonic()
    record = {"point": hit, "worker": worker.agent, "pid": worker.proc.pid, "at": time.strftime("%H:%M:%S"),
              "runs": ids}  # fmt: skip
    worker.kill()
    worker.is_ready = False
    worker.start()

    async def recovery() -> None:
        await worker.ready(180)
        worker.is_ready = True
        record["replacement_ready_seconds"] = round(time.monotonic() - killed_at, 2)

        async def progressed() -> bool:
            return all(r.result is not None for r in affected) or await history.step_count(ids) > before

        try:
            await poll(progressed, "progress after the kill", 300)
            record["recover_seconds"] = round(time.monotonic() - killed_at, 2)
        except TimeoutError:
            record["recover_seconds"] = float("inf")

    return record, asyncio.create_task(recovery())
