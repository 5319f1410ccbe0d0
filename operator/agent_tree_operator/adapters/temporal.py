"""The operator's Temporal client: start a run's workflow idempotently, follow it, cancel it.

The workflow's input is the worker's :class:`agent_tree_worker.inputs.RunInput`, built with the worker's
own :func:`agent_tree_worker.client.run_input` (imported, not redefined, so the two sides cannot drift). The workflow id comes from
:func:`agent_tree.naming.workflow_id` (namespace, name, uid): starting twice (an operator restart
between the start and the status write) finds the same workflow instead of running the tree again.
The tree revision a run is pinned to is kept in the workflow's memo, so a restarted operator reads
it back from Temporal rather than from a tree that may have been edited meanwhile.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from agent_tree_worker.client import RUN_WORKFLOW, TIMEOUT_GRACE_SECONDS
from agent_tree_worker.inputs import RunInput
from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    TerminatedError,
    TimeoutError,
    WorkflowAlreadyStartedError,
)
from temporalio.service import RPCError, RPCStatusCode

from agent_tree.settings import Settings

log = logging.getLogger(__name__)

WORKFLOW = RUN_WORKFLOW
PROGRESS_QUERY = "progress"
QUERY_TIMEOUT = 5.0
MEMO_REVISION = "treeRevision"
MEMO_RUN = "agentRun"
TIMEOUT_GRACE = dt.timedelta(seconds=TIMEOUT_GRACE_SECONDS)  # the workflow ends itself; this is the backstop


@dataclass(frozen=True)
class Described:
    """What the operator needs from DescribeWorkflowExecution."""

    running: bool
    revision: str | None


@dataclass(frozen=True)
class Outcome:
    """How a workflow ended: its result summary, or the phase/reason/message of a failure."""

    result: dict[str, Any] | None = None
    phase: str | None = None
    reason: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class Backlog:
    """Tasks waiting in one agent's task queue, workflow and activity types together."""

    count: int = 0
    age_seconds: float = 0.0  # of the oldest waiting task


QUEUE_TYPES = (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)


class TemporalUnavailable(RuntimeError):
    """Temporal cannot be reached; the caller retries with backoff."""


class Temporal:
    """Lazily connected, shared by every handler of the operator."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    try:
                        self._client = await Client.connect(
                            self.settings.temporal_address, namespace=self.settings.temporal_namespace
                        )
                    except Exception as exc:
                        raise TemporalUnavailable(
                            f"cannot connect to Temporal at {self.settings.temporal_address}: {exc}"
                        ) from exc
        return self._client

    async def handle(self, workflow_id: str) -> WorkflowHandle:
        return (await self.client()).get_workflow_handle(workflow_id)

    async def describe(self, workflow_id: str) -> Described | None:
        """The workflow's state and pinned revision, or None when no such workflow exists."""
        handle = await self.handle(workflow_id)
        try:
            desc = await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        try:
            memo = await desc.memo()
        except Exception:  # a memo we cannot decode does not stop following the run
            memo = {}
        return Described(running=desc.status == WorkflowExecutionStatus.RUNNING, revision=memo.get(MEMO_REVISION))

    async def start_run(self, workflow_id: str, task_queue: str, run: RunInput) -> WorkflowHandle:
        """Start ``AgentRunWorkflow`` unless a workflow with this id exists (running or closed)."""
        client = await self.client()
        try:
            return await client.start_workflow(
                WORKFLOW,
                run,
                id=workflow_id,
                task_queue=task_queue,
                execution_timeout=dt.timedelta(seconds=run.timeout_seconds) + TIMEOUT_GRACE,
                # A closed workflow with this id is this run's: never run the tree twice.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                memo={MEMO_REVISION: run.revision, MEMO_RUN: f"{run.namespace}/{run.name}"},
                result_type=dict,
            )
        except WorkflowAlreadyStartedError:
            return client.get_workflow_handle(workflow_id)

    async def outcome(self, handle: WorkflowHandle) -> Outcome:
        """Wait for the workflow to close and say how it ended."""
        try:
            result = await handle.result(follow_runs=True)
        except WorkflowFailureError as exc:
            cause = exc.cause
            if isinstance(cause, CancelledError):
                return Outcome(phase="Cancelled", reason="Cancelled", message="the workflow was cancelled")
            if isinstance(cause, TerminatedError):
                return Outcome(phase="Failed", reason="Terminated", message=f"the workflow was terminated: {cause}")
            if isinstance(cause, TimeoutError):
                return Outcome(phase="Failed", reason="Timeout", message="the run exceeded spec.timeoutSeconds")
            if isinstance(cause, ApplicationError):
                return Outcome(phase="Failed", reason="WorkflowFailed", message=str(cause) or cause.type or "failed")
            return Outcome(phase="Failed", reason="WorkflowFailed", message=str(cause or exc))
        if hasattr(result, "model_dump"):
            result = result.model_dump(mode="json")
        if not isinstance(result, dict):
            return Outcome(
                phase="Failed", reason="UnknownResult", message=f"unexpected workflow result {result!r:.200}"
            )
        return Outcome(result=result)

    async def progress(self, handle: WorkflowHandle) -> Any:
        """The workflow's ``progress`` query answer, or None when it cannot be asked right now."""
        try:
            async with asyncio.timeout(QUERY_TIMEOUT):
                return await handle.query(PROGRESS_QUERY)
        except (RPCError, TimeoutError) as exc:
            log.debug("progress query of %s failed: %s", handle.id, exc)
            return None
        except Exception as exc:  # e.g. no worker registered the query yet
            log.debug("progress query of %s failed: %s", handle.id, exc)
            return None

    async def cancel(self, workflow_id: str) -> bool:
        """Request cancellation; False when there is nothing to cancel (no workflow, or closed)."""
        handle = await self.handle(workflow_id)
        try:
            await handle.cancel()
        except RPCError as exc:
            if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                return False
            raise
        return True

    async def backlog(self, task_queue: str) -> Backlog:
        """The approximate backlog of ``task_queue`` (DescribeTaskQueue with ``report_stats``).

        Both task types count: a child turn (``AgentWorkflow``) waits as a workflow task, a model or
        tool call as an activity task. The server caches the stats for a few seconds
        (``matching.TaskQueueInfoByBuildIdTTL``, 5 s by default) and excludes sticky queues; both are
        fine for scaling decisions taken every few seconds.
        """
        client = await self.client()

        async def one(kind: int) -> tuple[int, float]:
            response = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=self.settings.temporal_namespace,
                    task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
                    task_queue_type=kind,
                    report_stats=True,
                ),
                timeout=dt.timedelta(seconds=QUERY_TIMEOUT),
            )
            stats = response.stats
            return int(stats.approximate_backlog_count), stats.approximate_backlog_age.ToTimedelta().total_seconds()

        results = await asyncio.gather(*(one(kind) for kind in QUEUE_TYPES))
        return Backlog(count=sum(c for c, _ in results), age_seconds=max(a for _, a in results))
