"""Replay safety without a server: committed histories replay on today's workflow code.

``tests/unit/histories/<engine>/<scenario>/*.json`` are histories of real runs recorded by
``hack/record_histories.py`` (Temporal dev server, PostgreSQL, Redis, in-process workers): ``v1`` by the
engine that ran one child workflow per agent turn. Runs started by an older engine are still running
when a new worker is deployed, so every committed history must keep replaying (docs/durable-runs.md,
"Changing workflow code"). The Replayer needs no server: it runs the workflow code against the events.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from agent_tree_worker import inputs as t
from agent_tree_worker.main import PASSTHROUGH
from agent_tree_worker.workflows import AgentRunWorkflow, AgentWorkflow
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from agent_tree.contract.temporal import DATA_CONVERTER

HISTORIES = Path(__file__).resolve().parent / "histories"
FILES = sorted(p for p in HISTORIES.glob("*/*/*.json") if p.name != "workflow_ids.json")


def load(path: Path) -> WorkflowHistory:
    ids = json.loads((path.parent / "workflow_ids.json").read_text())
    return WorkflowHistory.from_json(ids[path.stem], json.loads(path.read_text()))


def replayer(*workflows: type) -> Replayer:
    return Replayer(
        workflows=list(workflows),
        data_converter=DATA_CONVERTER,  # the contract's: what every client and worker speaks
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH, __name__)
        ),
    )


def test_histories_are_committed_for_every_scenario() -> None:
    scenarios = {(p.parent.parent.name, p.parent.name) for p in FILES}
    assert {("v1", "invoice"), ("v1", "llm-tools"), ("v1", "nested-tools"), ("v1", "cancelled")} <= scenarios
    assert any(p.stem.endswith("AgentRunWorkflow") for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}/{p.stem}")
async def test_committed_history_replays_on_current_code(path: Path) -> None:
    result = await replayer(AgentRunWorkflow, AgentWorkflow).replay_workflow(load(path), raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.relative_to(HISTORIES)} no longer replays: {result.replay_failure}"


@workflow.defn(name="AgentRunWorkflow")
class IncompatibleRunWorkflow(AgentRunWorkflow):
    """A deliberately incompatible change: an extra activity before anything else, without a patch."""

    @workflow.run
    async def run(self, inp: t.RunInput) -> dict:
        await workflow.execute_activity(
            t.RECORD_STEPS, t.StepsInput("x", []), start_to_close_timeout=timedelta(seconds=5)
        )
        return await super().run(inp)


async def test_an_incompatible_workflow_change_fails_the_replay() -> None:
    # The check above is only worth something if it can fail: the same history, an unpatched change.
    path = next(p for p in FILES if p.parent.name == "invoice" and p.stem.endswith("AgentRunWorkflow"))
    result = await replayer(IncompatibleRunWorkflow, AgentWorkflow).replay_workflow(
        load(path), raise_on_replay_failure=False
    )
    assert result.replay_failure is not None
    assert (
        "nondeterminism" in str(result.replay_failure).lower()
        or "Nondeterminism" in type(result.replay_failure).__name__
    )
