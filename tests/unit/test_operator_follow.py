"""The per-run follower with fake clients: waiting for the tree, idempotent start, coalesced patches,
restart convergence, cancellation, TTL. (The same paths run against the real platform in tests/e2e.)"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest
from agent_tree_operator.adapters import stream
from agent_tree_operator.adapters.stream import Subscription
from agent_tree_operator.adapters.temporal import Described, Outcome
from agent_tree_operator.config import OperatorConfig
from agent_tree_operator.follow import RunFollower
from agent_tree_operator.handlers.context import OperatorContext

from agent_tree import naming
from agent_tree.contract import decode_step, encode_model_delta, encode_step
from agent_tree.contract.temporal import run_task_queue, run_workflow_id

NS, NAME, UID = "team", "why-4821", "u-1"
WID = naming.workflow_id(NS, NAME, UID)
TREE = {"root": "sup", "agents": [{"name": "sup", "children": ["a"]}, {"name": "a", "entrypoint": "m:f"}]}
RESULT = {
    "answer": "Invoice #4821 rejected due to missing PO number.",
    "status": "completed",
    "final_agent": "a",
    "payload": {"invoice_id": "4821"},
    "plan": None,
    "steps": 2,
    "token_usage": 0,
}


class Stopped:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    def is_set(self) -> bool:
        return self.event.is_set()

    def wait(self):
        return self.event.wait()


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[dict] = []
        self.deleted: list[tuple] = []
        self.status: dict = {}

    async def patch_status(self, plural, namespace, name, status):
        assert (plural, namespace, name) == ("agentruns", NS, NAME)
        self.patches.append(status)
        self.status.update(status)
        return {"status": self.status}

    async def delete(self, plural, namespace, name, uid=None):
        self.deleted.append((plural, namespace, name, uid))
        return True


class FakeTemporal:
    def __init__(self, existing: Described | None = None) -> None:
        self.existing = existing
        self.started: list[Any] = []
        self.cancelled: list[str] = []
        self.result: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.snapshot: dict | None = None
        self.budgets_sent: list[dict] = []
        self.budgets_answer: Any = "ok"

    async def describe(self, workflow_id):
        assert workflow_id == WID
        return self.existing

    async def start_run(self, run):
        # The id and queue the contract's start_run derives from the input (what the test checks).
        self.started.append((run_workflow_id(run), run_task_queue(run), run))
        return object()

    async def handle(self, workflow_id):
        return object()

    async def outcome(self, handle):
        return await asyncio.shield(self.result)

    async def progress(self, handle):
        return self.snapshot

    async def set_budgets(self, workflow_id, budgets):
        assert workflow_id == WID
        self.budgets_sent.append(budgets)
        return self.budgets_answer

    async def cancel(self, workflow_id):
        self.cancelled.append(workflow_id)
        if not self.result.done():
            self.result.set_result(Outcome(phase="Cancelled", reason="Cancelled", message="the workflow was cancelled"))
        return True


class FakeHub:
    def __init__(self, available: bool = True) -> None:
        self.url = "redis://fake" if available else None
        self.available = available
        self.subs: list[Subscription] = []

    def subscribe(self, workflow_id, last_id="0-0"):
        sub = Subscription(key=naming.stream_key(workflow_id))
        self.subs.append(sub)
        return sub

    def unsubscribe(self, sub):
        self.subs.remove(sub)

    def push(self, *events: dict) -> None:
        for sub in self.subs:
            for event in events:
                sub.queue.put_nowait(
                    (
                        f"{time.monotonic_ns()}-0",
                        {"type": event["type"], "agent": event.get("agent"), "data": event, "ord": [], "ts": ""},
                    )
                )


def make(interval_ms=200, existing=None, hub=True, trees=None, spec=None, status=None, annotations=None):
    ctx = OperatorContext(
        config=OperatorConfig(status_interval_ms=interval_ms),
        kube=FakeKube(),
        temporal=FakeTemporal(existing),
        hub=FakeHub(hub),
    )
    body = {
        "metadata": {
            "namespace": NS,
            "name": NAME,
            "uid": UID,
            "generation": 1,
            "annotations": annotations or {},
            "creationTimestamp": "2999-01-01T00:00:00Z",
        },
        "spec": spec
        or {"treeRef": {"name": "invoice"}, "input": "Why was invoice #4821 rejected?", "timeoutSeconds": 3600},
        "status": status or {},
    }
    trees = {(NS, "invoice"): [{"spec": TREE}]} if trees is None else trees
    stopped = Stopped()
    return ctx, body, stopped, RunFollower(ctx, body, stopped, trees)


async def until(predicate, what: str, deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_start_follow_and_finish_with_coalesced_patches():
    ctx, _body, _stopped, follower = make(interval_ms=200)
    task = asyncio.create_task(follower.run())
    await until(lambda: ctx.temporal.started and ctx.hub.subs, "the workflow start")
    workflow_id, queue, run = ctx.temporal.started[0]
    assert workflow_id == WID and queue == naming.task_queue(NS, "invoice", "sup")
    assert run.spec["root"] == "sup" and run.input.startswith("Why") and run.revision
    assert ctx.kube.patches[0]["phase"] == "Running" and ctx.kube.patches[0]["treeRevision"] == run.revision
    began = time.monotonic()
    for burst in range(5):  # 5 bursts of 20 events, 0.1 s apart: 100 events over ~0.5 s
        for i in range(20):
            ctx.hub.push({"type": "agent_start", "agent": f"agent-{burst}-{i}"})
        ctx.hub.push({"type": "handoff", "agent": "a", "to_agent": "sup", "status": "ok", "summary": "s"})
        await asyncio.sleep(0.1)
    ctx.temporal.result.set_result(Outcome(result=RESULT))
    await asyncio.wait_for(task, 5)
    elapsed = time.monotonic() - began
    final = ctx.kube.status
    assert final["phase"] == "Succeeded" and final["answer"] == RESULT["answer"] and final["steps"] == 2
    assert final["currentAgent"] == "a" and final["completedAt"]
    bound = 2 + math.ceil(elapsed / 0.2)
    assert len(ctx.kube.patches) <= bound, (len(ctx.kube.patches), bound)
    assert len(ctx.kube.patches) < 105 / 10  # never one per step


async def test_pending_until_the_tree_appears():
    trees: dict = {}
    ctx, _body, _stopped, follower = make(trees=trees)
    task = asyncio.create_task(follower.run())
    await until(lambda: ctx.kube.patches, "the Pending status")
    assert ctx.kube.patches[0]["phase"] == "Pending"
    assert "spec.treeRef.name" in ctx.kube.patches[0]["conditions"][0]["message"]
    assert ctx.temporal.started == []
    trees[(NS, "invoice")] = [{"spec": TREE}]
    ctx.signals.notify((NS, "invoice"))
    await until(lambda: ctx.temporal.started, "the start after the tree appeared")
    await until(lambda: ctx.kube.status["phase"] == "Running", "the Running status")
    ctx.temporal.result.set_result(Outcome(result=RESULT))
    await asyncio.wait_for(task, 5)
    assert ctx.kube.status["phase"] == "Succeeded"


async def test_invalid_tree_keeps_the_run_pending_with_the_reason():
    bad = {"root": "a", "agents": [{"name": "a", "children": ["b"]}, {"name": "b", "children": ["a"]}]}
    ctx, _body, stopped, follower = make(trees={(NS, "invoice"): [{"spec": bad}]})
    task = asyncio.create_task(follower.run())
    await until(lambda: ctx.kube.patches, "the Pending status")
    cond = ctx.kube.patches[0]["conditions"][0]
    assert cond["reason"] == "TreeInvalid" and "spec.agents" in cond["message"]
    stopped.event.set()
    await asyncio.wait_for(task, 5)
    assert ctx.temporal.started == []


async def test_after_a_restart_the_existing_workflow_is_followed_not_restarted():
    status = {
        "phase": "Running",
        "currentAgent": "a",
        "steps": 1,
        "treeRevision": "pinned",
        "workflowId": WID,
        "startedAt": "2026-01-01T00:00:00Z",
    }
    ctx, _body, _stopped, follower = make(existing=Described(running=True, revision="pinned"), status=status, trees={})
    task = asyncio.create_task(follower.run())
    await until(lambda: ctx.hub.subs, "following")
    ctx.temporal.result.set_result(Outcome(result=RESULT))
    await asyncio.wait_for(task, 5)
    assert ctx.temporal.started == []
    assert ctx.kube.status["phase"] == "Succeeded" and "treeRevision" not in ctx.kube.status  # still "pinned"


async def test_progress_query_when_redis_is_away():
    ctx, _body, _stopped, follower = make(hub=False, interval_ms=100)
    ctx.temporal.snapshot = {"currentAgent": "a", "steps": 1, "tokenUsage": 5}
    task = asyncio.create_task(follower.run())
    await until(lambda: ctx.kube.status.get("currentAgent") == "a", "the polled progress")
    assert ctx.kube.status["steps"] == 1 and ctx.kube.status["tokenUsage"] == 5
    ctx.temporal.result.set_result(Outcome(result=RESULT))
    await asyncio.wait_for(task, 5)


async def test_cancel_annotation_cancels_the_workflow():
    ctx, body, _stopped, follower = make()
    task = asyncio.create_task(follower.run())
    await until(lambda: ctx.temporal.started, "the start")
    body["metadata"]["annotations"]["agenttree.io/cancel"] = "true"
    await asyncio.wait_for(task, 5)
    assert ctx.temporal.cancelled == [WID]
    assert ctx.kube.status["phase"] == "Cancelled"


async def test_stopped_daemon_exits_without_writing_a_final_state():
    ctx, _body, stopped, follower = make()
    task = asyncio.create_task(follower.run())
    await until(lambda: ctx.hub.subs, "following")
    stopped.event.set()
    await asyncio.wait_for(task, 5)
    assert ctx.kube.status["phase"] == "Running" and ctx.hub.subs == []


@pytest.mark.parametrize("ttl", [0, 3600])
async def test_ttl_after_finished(ttl):
    status = {"phase": "Succeeded", "completedAt": "2020-01-01T00:00:00Z" if ttl == 0 else "2999-01-01T00:00:00Z"}
    spec = {"treeRef": {"name": "invoice"}, "input": "x", "ttlSecondsAfterFinished": ttl}
    ctx, _body, stopped, follower = make(status=status, spec=spec)
    task = asyncio.create_task(follower.run())
    if ttl:
        await asyncio.sleep(0.05)
        assert not task.done()
        stopped.event.set()
    await asyncio.wait_for(task, 5)
    assert ctx.kube.deleted == ([("agentruns", NS, NAME, UID)] if ttl == 0 else [])
    assert ctx.temporal.started == []


async def test_replayed_stream_after_a_restart_counts_and_announces_each_handoff_once():
    status = {
        "phase": "Running",
        "currentAgent": "a",
        "steps": 2,
        "treeRevision": "pinned",
        "workflowId": WID,
        "startedAt": "2026-01-01T00:00:00Z",
    }
    ctx, _body, _stopped, follower = make(existing=Described(running=True, revision="pinned"), status=status)
    posted = []
    follower._event = posted.append
    task = asyncio.create_task(follower.run())
    await until(lambda: ctx.hub.subs, "following")
    handoff = {"type": "handoff", "agent": "a", "to_agent": "sup", "status": "needs_more_info", "summary": "s"}
    ctx.hub.push(handoff, handoff, {"type": "agent_start", "agent": "b"}, handoff)  # 2 replayed, 1 new
    await until(lambda: ctx.kube.status.get("steps") == 3, "the third step")
    assert [e.reason for e in posted] == ["Handoff"]
    assert all(p.get("steps", 3) >= 2 for p in ctx.kube.patches)  # never goes backwards
    ctx.temporal.result.set_result(Outcome(result=RESULT))
    await asyncio.wait_for(task, 5)


async def test_temporal_unavailable_keeps_the_run_pending_with_the_reason(monkeypatch):
    from agent_tree_operator import follow
    from agent_tree_operator.adapters.temporal import TemporalUnavailable

    monkeypatch.setattr(follow, "RETRY", (0.05,))
    ctx, _body, _stopped, follower = make()
    failures = {"left": 3}
    describe = ctx.temporal.describe

    async def flaky(workflow_id):
        if failures["left"]:
            failures["left"] -= 1
            raise TemporalUnavailable("cannot connect to Temporal at localhost:7233: refused")
        return await describe(workflow_id)

    ctx.temporal.describe = flaky
    task = asyncio.create_task(follower.run())
    await until(lambda: ctx.kube.patches, "the Pending status")
    cond = ctx.kube.patches[0]["conditions"][0]
    assert ctx.kube.patches[0]["phase"] == "Pending" and cond["reason"] == "TemporalUnavailable"
    assert "waiting for Temporal at localhost:7233" in cond["message"]
    await until(lambda: ctx.temporal.started, "the start once Temporal is back")
    await until(lambda: ctx.kube.status["phase"] == "Running", "Running")
    ctx.temporal.result.set_result(Outcome(result=RESULT))
    await asyncio.wait_for(task, 5)


class FakeAutoscaler:
    """Records the pre-warm requests of the follower."""

    def __init__(self) -> None:
        self.prewarmed: list[tuple[str, str, str | None]] = []

    async def prewarm(self, namespace, tree, agent):
        self.prewarmed.append((namespace, tree, agent))
        return True

    def prewarm_soon(self, namespace, tree, agent):
        self.prewarmed.append((namespace, tree, agent))


async def test_prewarm_of_the_root_at_start_and_of_each_announced_child_and_run_activity():
    from prometheus_client import REGISTRY

    ctx, _body, _stopped, follower = make()
    ctx.autoscaler = FakeAutoscaler()
    finished = REGISTRY.get_sample_value("agent_tree_operator_runs_finished_total", {"phase": "Succeeded"}) or 0
    durations = REGISTRY.get_sample_value("agent_tree_operator_run_duration_seconds_count", {"phase": "Succeeded"}) or 0
    task = asyncio.create_task(follower.run())
    await until(lambda: ctx.temporal.started and ctx.hub.subs, "the workflow start")
    assert ctx.autoscaler.prewarmed == [(NS, "invoice", "sup")]  # the root, before its workflow starts
    assert ctx.activity.active(NS, "invoice") == 1 and ctx.activity.in_progress(NS, "invoice", "sup") == 1
    ctx.hub.push({"type": "agent_start", "agent": "a"})
    await until(lambda: len(ctx.autoscaler.prewarmed) == 2, "the child's pre-warm")
    assert ctx.autoscaler.prewarmed[-1] == (NS, "invoice", "a")
    assert ctx.activity.in_progress(NS, "invoice", "a") == 1 and ctx.activity.in_progress(NS, "invoice", "sup") == 0
    ctx.temporal.result.set_result(Outcome(result=RESULT))
    await asyncio.wait_for(task, 5)
    assert ctx.activity.active(NS, "invoice") == 0  # a finished run keeps no agent busy
    assert REGISTRY.get_sample_value("agent_tree_operator_runs_finished_total", {"phase": "Succeeded"}) == finished + 1
    assert (
        REGISTRY.get_sample_value("agent_tree_operator_run_duration_seconds_count", {"phase": "Succeeded"})
        == durations + 1
    )


async def test_progress_query_fallback_also_prewarms_the_current_agent():
    ctx, _body, _stopped, follower = make(hub=False, interval_ms=100)
    ctx.autoscaler = FakeAutoscaler()
    ctx.temporal.snapshot = {"currentAgent": "a", "steps": 1}
    task = asyncio.create_task(follower.run())
    await until(lambda: (NS, "invoice", "a") in ctx.autoscaler.prewarmed, "the pre-warm from the progress query")
    ctx.temporal.result.set_result(Outcome(result=RESULT))
    await asyncio.wait_for(task, 5)


async def test_degraded_tree_keeps_the_run_pending_quoting_the_tree_then_it_starts():
    refused = "spec.agents[0] (sup): worker pods refused (FailedCreate): pods is forbidden: exceeded quota: no-pods"
    status = {"conditions": [{"type": "Degraded", "status": "True", "reason": "WorkersRefused", "message": refused}]}
    trees = {(NS, "invoice"): [{"spec": TREE, "status": status}]}
    ctx, _body, _stopped, follower = make(trees=trees)
    task = asyncio.create_task(follower.run())
    await until(lambda: ctx.kube.patches, "the Pending status")
    pending = ctx.kube.status
    reconciling = next(c for c in pending["conditions"] if c["type"] == "Reconciling")
    assert pending["phase"] == "Pending" and reconciling["status"] == "True"
    assert reconciling["reason"] == "TreeDegraded"
    assert "(WorkersRefused)" in reconciling["message"] and refused in reconciling["message"]
    assert pending["message"] == reconciling["message"] and ctx.temporal.started == []
    # The quota goes: the tree's Degraded clears and the waiting run starts.
    trees[(NS, "invoice")] = [{"spec": TREE, "status": {"conditions": [{"type": "Degraded", "status": "False"}]}}]
    ctx.signals.notify((NS, "invoice"))
    await until(lambda: ctx.temporal.started, "the start after the tree recovered")
    ctx.temporal.result.set_result(Outcome(result=RESULT))
    await asyncio.wait_for(task, 5)
    assert ctx.kube.status["phase"] == "Succeeded"


async def test_a_run_shorter_than_the_interval_writes_running_then_final_and_nothing_else():
    """Issue 11 item 5: no Pending write when the tree is ready, Running first, the final write at once."""
    ctx, _body, _stopped, follower = make(interval_ms=5000)
    task = asyncio.create_task(follower.run())
    await until(lambda: ctx.temporal.started and ctx.hub.subs, "the workflow start")
    for agent in ("a", "sup", "a"):
        ctx.hub.push({"type": "agent_start", "agent": agent})
        ctx.hub.push({"type": "handoff", "agent": agent, "to_agent": "sup", "status": "ok", "summary": "s"})
        await asyncio.sleep(0.05)
    began = time.monotonic()
    ctx.temporal.result.set_result(Outcome(result=RESULT))
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - began < 1.0  # the final write did not wait for the 5 s interval
    assert [p["phase"] for p in ctx.kube.patches] == ["Running", "Succeeded"]
    assert ctx.kube.patches[0]["currentAgent"] == "sup"


async def test_a_run_paused_on_a_budget_is_raised_through_set_budgets():
    """budget_exhausted -> phase Paused (reason BudgetExhausted, kstatus InProgress, an Event); a change
    of spec.budgets goes to the workflow as set_budgets (once per value); budgets_changed resumed ->
    Running; the result's usage lands in status.usage."""
    spec = {"treeRef": {"name": "invoice"}, "input": "q", "budgets": {"maxTokens": 10, "onExhausted": "pause"}}
    ctx, body, _stopped, follower = make(interval_ms=10, spec=spec)
    task = asyncio.create_task(follower.run())
    await until(lambda: ctx.temporal.started and ctx.hub.subs, "the workflow start")
    assert ctx.temporal.started[0][2].budgets == spec["budgets"]
    usage = {"turns": 1, "toolCalls": 0, "tokens": 8, "costUSD": 0.0}
    message = "budget exhausted: spec.budgets.maxTokens is 10; ...; the run is paused: raise it"
    ctx.hub.push({"type": "budget_exhausted", "budget": "maxTokens", "message": message, "usage": usage})
    await until(lambda: ctx.kube.status.get("phase") == "Paused", "the Paused phase")
    status = ctx.kube.status
    assert status["usage"] == usage and status["message"] == message
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Reconciling"]["status"] == "True" and conditions["Reconciling"]["reason"] == "BudgetExhausted"
    assert conditions["Stalled"]["status"] == "False"
    assert ctx.temporal.budgets_sent == []  # unchanged budgets are not sent
    body["spec"] = {**spec, "budgets": {"maxTokens": 100, "onExhausted": "pause"}}
    await until(lambda: ctx.temporal.budgets_sent, "the set_budgets update")
    ctx.hub.push({"type": "budgets_changed", "budgets": body["spec"]["budgets"], "resumed": True})
    await until(lambda: ctx.kube.status.get("phase") == "Running", "the Running phase again")
    assert ctx.temporal.budgets_sent == [{"maxTokens": 100, "onExhausted": "pause"}]  # once
    ctx.temporal.result.set_result(Outcome(result={**RESULT, "usage": {**usage, "tokens": 20}}))
    await asyncio.wait_for(task, 5)
    assert ctx.kube.status["phase"] == "Succeeded" and ctx.kube.status["usage"]["tokens"] == 20


async def test_live_model_text_never_counts_as_a_step_nor_moves_the_status():
    ctx, _body, _stopped, follower = make(interval_ms=100)
    posted = []
    follower._event = posted.append
    task = asyncio.create_task(follower.run())
    await until(lambda: ctx.temporal.started and ctx.hub.subs, "the workflow start")
    ctx.hub.push({"type": "agent_start", "agent": "a"})
    await until(lambda: follower.live.current_agent == "a", "the agent_start")
    seen, last_id = set(follower.live.seen), follower.live.last_stream_id
    delta = encode_model_delta(agent="b", model="m", call="2", seq=0, text="Hel", ts="")
    for sub in ctx.hub.subs:
        sub.queue.put_nowait((f"{time.monotonic_ns()}-0", decode_step(delta)))
    ctx.hub.push({"type": "handoff", "agent": "a", "to_agent": "sup", "status": "ok", "summary": "s"})
    await until(lambda: follower.live.handoffs == 1, "the handoff after the delta")
    # The delta was skipped: not recorded as a seen entry, agent and steps moved by the steps only.
    assert len(follower.live.seen) == len(seen) + 1 and follower.live.last_stream_id != last_id
    assert follower.live.current_agent == "a" and follower.live.steps == 1
    ctx.temporal.result.set_result(Outcome(result=RESULT))
    await asyncio.wait_for(task, 5)


class FakeRedis:
    """xread hands out one batch, then blocks like an idle stream."""

    def __init__(self, batch):
        self.batch = batch

    async def xread(self, streams, block, count):
        if self.batch is None:
            await asyncio.sleep(block / 1000)
            return []
        batch, self.batch = self.batch, None
        return batch

    async def aclose(self):
        pass


async def test_the_stream_hub_passes_steps_and_drops_live_model_text(monkeypatch):
    key = naming.stream_key(WID)
    step = encode_step({"ord": [1], "type": "agent_start", "agent": "a", "data": {"type": "agent_start"}, "ts": ""})
    delta = encode_model_delta(agent="a", model="m", call="2", seq=0, text="Hel", ts="")
    raw = [{k.encode(): v.encode() for k, v in e.items()} for e in (step, delta, step)]
    batch = [(key.encode(), [(b"1-0", raw[0]), (b"2-0", raw[1]), (b"3-0", raw[2])])]
    monkeypatch.setattr(stream.aioredis.Redis, "from_url", lambda *a, **k: FakeRedis(batch))
    hub = stream.StreamHub("redis://fake", block_ms=50)
    sub = hub.subscribe(WID)
    hub.start()
    try:
        await until(lambda: sub.last_id == "3-0", "the batch")
        got = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
    finally:
        await hub.close()
    assert [(entry_id, s["type"]) for entry_id, s in got] == [("1-0", "agent_start"), ("3-0", "agent_start")]
