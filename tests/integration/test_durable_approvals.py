"""Tool approvals on the real engine: Temporal, PostgreSQL, Redis, workers (in-process and as processes)
and the local fake OpenAI endpoint. An LLM tree whose ``issue_refund`` (a COUNTING tool: one line in
refunds.log per execution) requires approval: the run waits, the progress query shows the request,
``decide`` approves or rejects it, history and the audit log name who decided; a kill -9 of the worker
that holds the waiting run loses nothing; a Python agent's call waits the same way and its earlier
calls come from the journal."""

from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from agent_tree_worker import reader
from agent_tree_worker.store import HistoryStore
from durable_agents import refund_tree, refunds_done
from durable_support import WorkerProcess, in_process_workers, tree_spec, unique, wait_for, worker_env
from fake_openai import FakeOpenAI
from temporalio.client import Client

from agent_tree import naming
from agent_tree.compiler import compile_tree
from agent_tree.contract import Progress, run_input
from agent_tree.contract.control import ApprovalDecision, Decider, ForkSource, fork_point
from agent_tree.contract.temporal import decide, run_progress, start_run

pytestmark = pytest.mark.integration

ALICE = Decider(username="alice", groups=["finance"])


def echo_tool_result(request: dict[str, Any]) -> dict[str, Any]:
    """The model's final reply: what the refund tool said (so the answer reflects a rejection)."""
    return {"content": f"Refund outcome: {request['messages'][-1]['content']}"}


def llm_tree(server: FakeOpenAI, case: str) -> Any:
    server.scripts[f"router-{case}"] = [{"tool_calls": [("transfer_to_refunds", {"reason": "refund"})]}]
    server.scripts[f"refunds-{case}"] = [
        {"content": "Refunding.", "tool_calls": [("issue_refund", {"invoice": "4821", "amount": 120})]},
        echo_tool_result,
    ]
    return tree_spec(
        {
            "root": "desk",
            "agents": [
                {
                    "name": "desk",
                    "description": "Front desk",
                    "children": ["refunds"],
                    "model": {"name": f"router-{case}", "baseUrl": server.base_url},
                },
                {
                    "name": "refunds",
                    "description": "Issues refunds.",
                    "model": {"name": f"refunds-{case}", "baseUrl": server.base_url},
                    "tools": [
                        {
                            "name": "issue_refund",
                            "entrypoint": "durable_agents:issue_refund",
                            "approval": {"required": True, "approvers": {"users": ["alice"], "groups": ["finance"]}},
                        }
                    ],
                },
            ],
        }
    )


async def start(client: Client, namespace: str, spec: Any, **kw: Any):
    inp = run_input(namespace, "refunds", spec, name=unique("apw-run"), uid=uuid.uuid4().hex[:8], **kw)
    return await start_run(client, inp)


async def pending(handle: Any, within: float = 60) -> Progress:
    async def waiting() -> Progress | None:
        try:
            progress = await run_progress(handle)
        except Exception:
            return None
        return progress if progress.approvals else None

    return await wait_for(waiting, "the approval request in the progress query", within=within)


def queues(namespace: str, *agents: str) -> list[str]:
    return [naming.task_queue(namespace, "refunds", a) for a in agents]


async def audit_rows(store: HistoryStore, run_id: str) -> list[dict[str, Any]]:
    rows = await store._run(
        lambda c: c.fetch(
            "SELECT actor, action, details FROM audit_log WHERE run_id = $1 AND action = 'approval_decided'", run_id
        )
    )
    return [dict(r) for r in rows]


@pytest.mark.parametrize("decision", ["approve", "reject"])
async def test_llm_tree_waits_for_the_decision_and_history_names_who(
    client: Client,
    database_url: str,
    redis_url: str,
    store: HistoryStore,
    fake_openai: FakeOpenAI,
    test_dir: Path,
    decision: str,
) -> None:
    namespace = unique("apw-llm")
    spec = llm_tree(fake_openai, decision)
    async with in_process_workers(client, queues(namespace, "desk", "refunds"), database_url, redis_url):
        handle = await start(client, namespace, spec, input="Refund invoice 4821")
        progress = await pending(handle)
        [request] = progress.approvals
        assert progress.phase == "AwaitingApproval"
        assert (request.agent, request.tool, request.arguments) == (
            "refunds",
            "issue_refund",
            {"invoice": "4821", "amount": 120},
        )
        assert request.approvers.users == ["alice"]
        # Written to PostgreSQL at once: followers and the operator see the request while the run waits.
        steps = await store.steps(handle.id)
        assert [s["data"]["id"] for s in steps if s["type"] == "approval_requested"] == [request.id]
        assert refunds_done() == []
        reason = "checked the invoice" if decision == "approve" else "over the refund limit"
        ack = await decide(
            client, handle.id, ApprovalDecision(id=request.id, decision=decision, decided_by=ALICE, reason=reason)
        )
        assert ack.accepted
        result = await asyncio.wait_for(handle.result(), 60)
    assert result["status"] == "completed", result
    if decision == "approve":
        assert refunds_done() == ["4821 120"]
        assert result["answer"] == 'Refund outcome: {"invoice": "4821", "refunded": 120}'
    else:
        assert refunds_done() == []
        assert result["answer"] == (
            'Refund outcome: {"status": "rejected", "error": "the call of tool \'issue_refund\' was rejected by '
            'alice: over the refund limit"}'
        )
    steps = await store.steps(handle.id)
    [decided] = [s for s in steps if s["type"] == "approval_decided"]
    assert decided["data"]["decided_by"] == {"username": "alice", "groups": ["finance"]}
    assert (decided["data"]["decision"], decided["data"]["reason"]) == (decision, reason)
    [row] = await audit_rows(store, handle.id)
    assert (
        row["actor"] == "alice" and row["details"]["decision"] == decision and row["details"]["tool"] == "issue_refund"
    )
    out = io.StringIO()
    await reader.print_history(store, handle.id, as_json=False, out=out)
    verb = "approved" if decision == "approve" else "rejected"
    assert f"{request.id}: {verb} by alice (finance): {reason}" in out.getvalue()


async def test_kill_9_the_worker_holding_the_waiting_run_then_decide(
    client: Client,
    temporal_address: str,
    database_url: str,
    redis_url: str,
    store: HistoryStore,
    fake_openai: FakeOpenAI,
    test_dir: Path,
) -> None:
    """The root agent's worker runs the workflow: killed (-9) during the wait, a new one takes over;
    the decision completes the run and the counting tool ran exactly once."""
    namespace = unique("apw-kill")
    spec = llm_tree(fake_openai, "kill")
    env = worker_env(
        temporal_address, database_url, redis_url, DURABLE_TEST_DIR=str(test_dir), AGENT_TREE_MODEL_API_KEY="sk-test"
    )
    desk = WorkerProcess(namespace, "refunds", "desk", env, test_dir).start()
    refunds = WorkerProcess(namespace, "refunds", "refunds", env, test_dir).start()
    try:
        await desk.ready()
        await refunds.ready()
        handle = await start(client, namespace, spec, input="Refund invoice 4821")
        [request] = (await pending(handle)).approvals
        desk.kill()
        desk.start()
        await desk.ready()
        # The new worker replays to the same wait: the query answers with the same request.
        assert [r.id for r in (await pending(handle, within=90)).approvals] == [request.id]
        assert refunds_done() == []
        await decide(client, handle.id, ApprovalDecision(id=request.id, decision="approve", decided_by=ALICE))
        result = await asyncio.wait_for(handle.result(), 90)
    finally:
        desk.stop()
        refunds.stop()
    assert result["status"] == "completed", result
    assert refunds_done() == ["4821 120"]
    steps = await store.steps(handle.id)
    assert [s["type"] for s in steps].count("approval_requested") == 1
    assert [s["type"] for s in steps].count("approval_decided") == 1


def python_tree() -> Any:
    return tree_spec(refund_tree({"required": True}))


async def test_python_agent_call_waits_and_earlier_calls_come_from_the_journal(
    client: Client, database_url: str, redis_url: str, store: HistoryStore, test_dir: Path
) -> None:
    namespace = unique("apw-py")
    async with in_process_workers(client, queues(namespace, "desk", "refunder"), database_url, redis_url):
        handle = await start(client, namespace, python_tree(), input="refund", context={"invoice": "4821"})
        [request] = (await pending(handle)).approvals
        assert (request.agent, request.tool) == ("refunder", "issue_refund")
        await decide(client, handle.id, ApprovalDecision(id=request.id, decision="approve", decided_by=ALICE))
        result = await asyncio.wait_for(handle.result(), 60)
    assert (result["status"], result["answer"]) == ("completed", "refunded 120")
    assert refunds_done() == ["4821 120"]
    # The call before the approval ran once: the turn's second run got it from the journal.
    log = (test_dir / "executions.log").read_text().splitlines()
    assert log == ["4821 lookup", "4821 after"]
    calls = sorted(await store.tool_calls(handle.id), key=lambda c: c["seq"])
    assert [c["tool"] for c in calls] == ["ledger_step", "issue_refund", "ledger_step"]
    assert len({c["journal_key"] for c in calls}) == 1
    steps = await store.steps(handle.id)
    kinds = [(s["type"], s["data"].get("id") or s["data"].get("tool")) for s in steps if s["agent"] == "refunder"]
    assert kinds.count(("tool_start", "ledger_step")) == 2  # each event once, though the turn ran twice


@pytest.mark.parametrize("decision", ["approve", "reject"])
async def test_embedded_and_durable_give_the_same_answer_for_the_same_decision(
    client: Client, database_url: str, redis_url: str, test_dir: Path, decision: str
) -> None:
    bob = ApprovalDecision(id="-", decision=decision, decided_by=Decider(username="bob"), reason="per policy AP-7")
    embedded = (
        await compile_tree(python_tree()).orchestrator(approve=lambda request: bob).run("refund", {"invoice": "4821"})
    )
    namespace = unique("apw-same")
    async with in_process_workers(client, queues(namespace, "desk", "refunder"), database_url, redis_url):
        handle = await start(client, namespace, python_tree(), input="refund", context={"invoice": "4821"})
        [request] = (await pending(handle)).approvals
        await decide(client, handle.id, bob.model_copy(update={"id": request.id}))
        durable = await asyncio.wait_for(handle.result(), 60)
    assert (durable["status"], durable["answer"]) == (embedded.status, embedded.answer)
    assert (durable["final_agent"], durable["payload"]) == (embedded.final_agent, embedded.payload)
    assert refunds_done() == (["4821 120"] * 2 if decision == "approve" else [])


async def test_a_fork_past_the_approval_reuses_the_decision_and_asks_nobody(
    client: Client, database_url: str, redis_url: str, store: HistoryStore, fake_openai: FakeOpenAI, test_dir: Path
) -> None:
    """Fork an approved run after its refund: the approval and the refund are the source's (nobody is
    asked, the counting tool does not run again); the model's last call runs live."""
    namespace = unique("apw-fork")
    spec = llm_tree(fake_openai, "fork")
    async with in_process_workers(client, queues(namespace, "desk", "refunds"), database_url, redis_url):
        source = await start(client, namespace, spec, input="Refund invoice 4821")
        [request] = (await pending(source)).approvals
        await decide(client, source.id, ApprovalDecision(id=request.id, decision="approve", decided_by=ALICE))
        assert (await asyncio.wait_for(source.result(), 60))["status"] == "completed"
        steps = await store.steps(source.id)
        step = next(
            i for i, s in enumerate(steps, 1) if s["type"] == "tool_end" and s["data"]["tool"] == "issue_refund"
        )
        row = await store.get_run(source.id)
        number, until = fork_point(steps, step, row["name"])
        fork = ForkSource(workflow_id=source.id, name=row["name"], step=number, until_ord=until)
        forked = await start(client, namespace, spec, input="Refund invoice 4821", fork=fork)
        result = await asyncio.wait_for(forked.result(), 60)
    assert result["status"] == "completed", result
    assert result["answer"] == 'Refund outcome: {"invoice": "4821", "refunded": 120}'
    assert refunds_done() == ["4821 120"]  # once, in the source
    fork_steps = await store.steps(forked.id)
    [decided] = [s for s in fork_steps if s["type"] == "approval_decided"]
    assert decided["data"]["reused"] is True and decided["data"]["decided_by"]["username"] == "alice"
    assert await audit_rows(store, forked.id) == []  # the decision was taken (and audited) in the source
