"""The contract's Temporal side: the one client factory and the one ``start_run``.

Every client (the worker, the operator, ``agent-tree submit``, tests, benchmarks and
``hack/record_histories.py``) connects with :func:`connect`, so all of them speak temporalio's Pydantic
data converter that the typed contract (:class:`~agent_tree.contract.RunInput`, ...) needs. Its JSON
of the run input is the object engine v1's default converter wrote (same keys, same values; v1 sorted
the keys and escaped non-ASCII, which no reader depends on), so either side reads the other's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from agent_tree import naming
from agent_tree.contract import (
    MEMO_REVISION,
    MEMO_RUN,
    PROGRESS_QUERY,
    RUN_WORKFLOW,
    TIMEOUT_GRACE_SECONDS,
    Progress,
    RunInput,
    RunResult,
)
from agent_tree.contract.control import DECIDE_UPDATE, ApprovalDecision, DecisionAck, DecisionError

DATA_CONVERTER: DataConverter = pydantic_data_converter
"""The data converter of every client and worker (and of the Replayer in tests)."""


async def connect(address: str, namespace: str = "default", **kwargs: Any) -> Client:
    """A Temporal client with the contract's data converter (``kwargs`` go to ``Client.connect``)."""
    return await Client.connect(address, namespace=namespace, data_converter=DATA_CONVERTER, **kwargs)


def run_workflow_id(inp: RunInput) -> str:
    """The run's workflow id: one per AgentRun (namespace, name, uid), so starting is idempotent."""
    return naming.workflow_id(inp.namespace, inp.name, inp.uid)


def run_task_queue(inp: RunInput) -> str:
    """The root agent's task queue: its workers run the run's workflow."""
    return naming.task_queue(inp.namespace, inp.tree, inp.spec["root"])


async def start_run(client: Client, inp: RunInput) -> WorkflowHandle[Any, dict[str, Any]]:
    """Start ``AgentRunWorkflow`` on the root agent's task queue, or attach to the run's workflow.

    Idempotent per AgentRun uid: a running workflow with this id is attached to
    (``USE_EXISTING``), and one that has closed is never started again (``REJECT_DUPLICATE``: the tree
    must not run twice for one AgentRun; the caller gets the closed workflow's handle). The tree
    revision and the AgentRun are kept in the memo, so a restarted operator reads the revision a run
    is pinned to from Temporal rather than from a tree that may have been edited meanwhile.

    The handle's result is the workflow's JSON object; read it with :func:`run_result`.
    """
    workflow_id = run_workflow_id(inp)
    try:
        return await client.start_workflow(
            RUN_WORKFLOW,
            inp,
            id=workflow_id,
            task_queue=run_task_queue(inp),
            execution_timeout=timedelta(seconds=inp.timeout_seconds + TIMEOUT_GRACE_SECONDS),
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            memo={MEMO_REVISION: inp.revision, MEMO_RUN: f"{inp.namespace}/{inp.name}"},
            result_type=dict,
        )
    except WorkflowAlreadyStartedError:
        return client.get_workflow_handle(workflow_id, result_type=dict)


async def run_result(handle: WorkflowHandle[Any, Any], **kwargs: Any) -> RunResult:
    """Wait for the run's workflow to close and parse its result (``kwargs`` go to ``handle.result``).

    Raises:
        temporalio.client.WorkflowFailureError: the workflow failed, was cancelled or terminated.
        pydantic.ValidationError: the result is not a :class:`RunResult`.
    """
    return RunResult.model_validate(await handle.result(**kwargs))


async def run_progress(handle: WorkflowHandle[Any, Any]) -> Progress:
    """The run's ``progress`` query, read in either casing (engine v1 answered in camelCase)."""
    return Progress.model_validate(await handle.query(PROGRESS_QUERY))


async def decide(client: Client, workflow_id: str, decision: ApprovalDecision) -> DecisionAck:
    """Send a person's decision on a pending approval to the run (the ``decide`` Update).

    Idempotent by ``decision.id``: the first decision stands, a repeated one (same or different)
    returns that first decision with ``accepted=False``.

    Raises:
        DecisionError: the run refused the decision (an id it never requested: the message lists the
            pending ids; an empty ``decided_by.username``), or the run has finished or does not exist.
    """
    handle = client.get_workflow_handle(workflow_id)
    try:
        return await handle.execute_update(DECIDE_UPDATE, decision, result_type=DecisionAck)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        raise DecisionError(f"run {workflow_id}: {getattr(cause, 'message', None) or cause}") from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise DecisionError(
                f"run {workflow_id} is not running (it has finished or never existed): {exc.message}; "
                "nothing was decided"
            ) from exc
        raise
