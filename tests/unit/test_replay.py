"""Replay safety without a server: committed histories replay on today's workflow code.

``tests/unit/histories/<engine>/<scenario>/*.json`` are histories of real runs recorded by
``hack/record_histories.py`` (Temporal dev server, PostgreSQL, Redis, in-process workers): ``v1`` by the
engine that ran one child workflow per agent turn, ``v2`` by today's engine (one workflow per run, its
turns inline behind ``workflow.patched("one-workflow-per-run")``). Runs started by an older engine are still running
when a new worker is deployed, so every committed history must keep replaying (docs/durable-runs.md,
"Engine generations, changing workflow code, upgrading"). The Replayer needs no server: it runs the
workflow code against the events.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from agent_tree_worker import approvals, executor
from agent_tree_worker import inputs as t
from agent_tree_worker.executor import AgentWorkflow
from agent_tree_worker.main import PASSTHROUGH
from agent_tree_worker.workflows import AgentRunWorkflow
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
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
    for engine in ("v1", "v2"):
        assert {(engine, s) for s in ("invoice", "llm-tools", "nested-tools", "cancelled")} <= scenarios
    assert ("v2", "continued") in scenarios  # a run that continued as new: every run of its chain
    # Runs waiting for a person (for hours) live through deployments: approvals must keep replaying.
    assert {("v2", "approval-llm"), ("v2", "approval-python")} <= scenarios
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


def test_v2_runs_are_one_workflow_and_v1_runs_had_children() -> None:
    """The engine generations differ in shape: v2 histories start no child workflow, v1's do."""
    child = EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
    for path in FILES:
        engine = path.parent.parent.name
        if not path.stem.endswith("AgentRunWorkflow") or engine not in ("v1", "v2"):
            continue
        starts_children = any(e.event_type == child for e in load(path).events)
        assert starts_children == (engine == "v1"), path.relative_to(HISTORIES)
    assert not [p for p in FILES if p.parent.parent.name == "v2" and not p.stem.endswith("AgentRunWorkflow")]


@pytest.mark.parametrize("scenario", ["approval-llm", "approval-python"])
async def test_approval_histories_hold_the_decide_update_and_fail_without_the_approval_wait(
    scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The committed approval runs went through the decide Update (accepted, then completed); replayed
    on code that never asks (the patch reported absent) they are nondeterministic: the check bites."""
    path = next(p for p in FILES if p.parent.name == scenario and "AgentRun" in p.stem)
    kinds = [e.event_type for e in load(path).events]
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED in kinds
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED in kinds
    patched = workflow.patched
    monkeypatch.setattr(
        workflow, "patched", lambda patch_id: False if patch_id == approvals.TOOL_APPROVALS else patched(patch_id)
    )
    result = await replayer(AgentRunWorkflow, AgentWorkflow).replay_workflow(load(path), raise_on_replay_failure=False)
    assert result.replay_failure is not None


@pytest.mark.parametrize("scenario", ["invoice", "nested-tools"])
async def test_engine_v2_without_its_patch_would_break_v1_runs(scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Had v2 replaced the child workflows without ``workflow.patched``, the runs v1 started would fail to
    replay on the new workers (nondeterminism) instead of ending on v1's path: the patch is load-bearing."""
    patched = workflow.patched
    monkeypatch.setattr(
        workflow, "patched", lambda patch_id: True if patch_id == executor.ONE_WORKFLOW_PER_RUN else patched(patch_id)
    )
    path = next(p for p in FILES if p.parent.parent.name == "v1" and p.parent.name == scenario and "AgentRun" in p.stem)
    result = await replayer(AgentRunWorkflow, AgentWorkflow).replay_workflow(load(path), raise_on_replay_failure=False)
    assert result.replay_failure is not None
    assert "nondetermin" in f"{type(result.replay_failure).__name__} {result.replay_failure}".lower()
