"""The contract's Temporal side with fake clients: the one start_run (policies, memo, timeout, attach on
an existing id) and the readers that parse what a workflow answers (the operator's Temporal adapter).
The same start runs against the real dev server in tests/integration and tests/unit/test_workflow_mocked.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from agent_tree_operator.adapters.temporal import Outcome, Temporal
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from agent_tree import naming
from agent_tree.contract import MEMO_REVISION, MEMO_RUN, RUN_WORKFLOW, TIMEOUT_GRACE_SECONDS, run_input
from agent_tree.contract.temporal import start_run
from agent_tree.settings import Settings

SPEC = {"root": "sup", "agents": [{"name": "sup", "children": ["a"]}, {"name": "a", "entrypoint": "m:f"}]}
RESULT = {
    "answer": "Invoice #4821 rejected due to missing PO number.",
    "status": "completed",
    "final_agent": "a",
    "payload": {"invoice_id": "4821"},
    "plan": None,
    "steps": 2,
    "token_usage": 0,
    "tree_revision": "r",
    "workflow_id": "w",
}


class FakeClient:
    def __init__(self, existing: bool = False) -> None:
        self.existing = existing
        self.starts: list[tuple[tuple, dict]] = []
        self.handles: list[str] = []

    async def start_workflow(self, *args: Any, **kwargs: Any) -> str:
        self.starts.append((args, kwargs))
        if self.existing:
            raise WorkflowAlreadyStartedError(kwargs["id"], RUN_WORKFLOW)
        return "started"

    def get_workflow_handle(self, workflow_id: str, **kwargs: Any) -> str:
        self.handles.append(workflow_id)
        return "attached"


def inp() -> Any:
    return run_input("team", "invoice", SPEC, name="why", uid="u1", input="Why?", timeout_seconds=60)


async def test_start_run_never_runs_a_tree_twice_and_pins_the_revision() -> None:
    client, run = FakeClient(), inp()
    assert await start_run(client, run) == "started"  # type: ignore[arg-type]
    (args, kw) = client.starts[0]
    assert args == (RUN_WORKFLOW, run)
    assert kw["id"] == naming.workflow_id("team", "why", "u1")
    assert kw["task_queue"] == naming.task_queue("team", "invoice", "sup")
    assert kw["id_reuse_policy"] == WorkflowIDReusePolicy.REJECT_DUPLICATE
    assert kw["id_conflict_policy"] == WorkflowIDConflictPolicy.USE_EXISTING
    assert kw["memo"] == {MEMO_REVISION: run.revision, MEMO_RUN: "team/why"}
    assert kw["execution_timeout"] == timedelta(seconds=60 + TIMEOUT_GRACE_SECONDS)


async def test_start_run_attaches_to_a_closed_workflow_of_the_same_run() -> None:
    # REJECT_DUPLICATE refuses a second start of a closed workflow: the caller follows the first one.
    client = FakeClient(existing=True)
    assert await start_run(client, inp()) == "attached"  # type: ignore[arg-type]
    assert client.handles == [naming.workflow_id("team", "why", "u1")]


class FakeHandle:
    id = "w"

    def __init__(self, result: Any = None, progress: Any = None) -> None:
        self._result, self._progress = result, progress

    async def result(self, **_: Any) -> Any:
        return self._result

    async def query(self, name: str) -> Any:
        assert name == "progress"
        return self._progress


async def test_the_operator_reads_progress_in_either_casing() -> None:
    temporal = Temporal(Settings())
    v1 = {"phase": "Running", "currentAgent": "a", "steps": 1, "tokenUsage": 7, "plan": None}
    v2 = {"phase": "Running", "current_agent": "a", "steps": 1, "token_usage": 7, "plan": None}
    # Fields a workflow did not answer (v1 and v2 before run control) read as their defaults.
    read = {**v2, "approvals": [], "paused": None, "usage": {}}
    assert await temporal.progress(FakeHandle(progress=v1)) == read  # type: ignore[arg-type]
    assert await temporal.progress(FakeHandle(progress=v2)) == read  # type: ignore[arg-type]
    assert await temporal.progress(FakeHandle(progress="garbage")) is None  # type: ignore[arg-type]


async def test_the_operator_parses_the_result_as_run_result() -> None:
    temporal = Temporal(Settings())
    assert await temporal.outcome(FakeHandle(result=RESULT)) == Outcome(result=RESULT)  # type: ignore[arg-type]
    odd = await temporal.outcome(FakeHandle(result={**RESULT, "status": "done"}))  # type: ignore[arg-type]
    assert (odd.phase, odd.reason) == ("Failed", "UnknownResult") and "status" in (odd.message or "")
    assert (await temporal.outcome(FakeHandle(result="text"))).reason == "UnknownResult"  # type: ignore[arg-type]
