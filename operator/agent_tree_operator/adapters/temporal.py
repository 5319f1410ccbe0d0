"""The operator's Temporal client: start a run's workflow idempotently, follow it, cancel it.

Everything that crosses to the workers is the contract's (:mod:`agent_tree.contract`): the run's input
is a :class:`~agent_tree.contract.RunInput` built by :func:`~agent_tree.contract.run_input`, the start is
the one :func:`agent_tree.contract.temporal.start_run` (idempotent workflow id from namespace, name and
uid; the tree revision in the memo, so a restarted operator reads it back from Temporal rather than
from a tree that may have been edited meanwhile), the client speaks the contract's data converter,
and the workflow's progress and result are read as :class:`~agent_tree.contract.Progress` and
:class:`~agent_tree.contract.RunResult`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError, CancelledError, TerminatedError, TimeoutError
from temporalio.service import RPCError, RPCStatusCode

from agent_tree.contract import MEMO_REVISION, PROGRESS_QUERY, Progress, RunInput, RunResult
from agent_tree.contract import temporal as contract
from agent_tree.contract.control import (
    BUDGETS_UPDATE,
    ApprovalDecision,
    BudgetsAck,
    BudgetsChange,
    DecisionAck,
    DecisionError,
)
from agent_tree.settings import Settings

log = logging.getLogger(__name__)

QUERY_TIMEOUT = 5.0


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


class Undeliverable(RuntimeError):
    """A decision that can never reach the run (its workflow ended, or it refused the update)."""


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
                        self._client = await contract.connect(
                            self.settings.temporal_address, self.settings.temporal_namespace
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

    async def start_run(self, run: RunInput) -> WorkflowHandle:
        """Start the run's workflow unless one with its id exists (running or closed): the contract's start."""
        return await contract.start_run(await self.client(), run)

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
        try:
            parsed = RunResult.model_validate(
                result.model_dump(mode="json") if hasattr(result, "model_dump") else result
            )
        except ValidationError as exc:
            return Outcome(
                phase="Failed", reason="UnknownResult", message=f"unexpected workflow result {result!r:.200}: {exc}"
            )
        return Outcome(result=parsed.model_dump(mode="json"))

    async def progress(self, handle: WorkflowHandle) -> dict[str, Any] | None:
        """The workflow's ``progress`` query answer (snake_case, whichever casing the workflow answered
        in), or None when it cannot be asked right now."""
        try:
            async with asyncio.timeout(QUERY_TIMEOUT):
                return Progress.model_validate(await handle.query(PROGRESS_QUERY)).model_dump()
        except (RPCError, TimeoutError) as exc:
            log.debug("progress query of %s failed: %s", handle.id, exc)
            return None
        except Exception as exc:  # e.g. no worker registered the query yet
            log.debug("progress query of %s failed: %s", handle.id, exc)
            return None

    async def decide(self, workflow_id: str, decision: ApprovalDecision) -> DecisionAck:
        """Send the ``decide`` Update (the contract's helper; idempotent per approval id: a second
        decision gets the first back with ``accepted=False``).

        Raises:
            Undeliverable: the run has ended or never existed, or it refused the decision (an id it
                never requested, an empty decider): sending it again cannot help.
            Exception: anything else (Temporal away, no worker in time): the caller retries.
        """
        try:
            return await contract.decide(await self.client(), workflow_id, decision)
        except DecisionError as exc:
            raise Undeliverable(str(exc)) from exc
        except RPCError as exc:
            if exc.status == RPCStatusCode.FAILED_PRECONDITION:
                raise Undeliverable(f"run {workflow_id} cannot take a decision: {exc.message}") from exc
            raise

    async def set_budgets(self, workflow_id: str, budgets: dict[str, Any]) -> BudgetsAck | str:
        """Send the run's ``spec.budgets`` (the ``set_budgets`` update, idempotent: a whole value); the
        workflow's answer, or why it refused (e.g. a run started without budgets). Raises when Temporal
        cannot be reached (the caller retries)."""
        handle = await self.handle(workflow_id)
        try:
            return await handle.execute_update(BUDGETS_UPDATE, BudgetsChange(budgets=budgets), result_type=BudgetsAck)
        except WorkflowUpdateFailedError as exc:
            return str(exc.cause or exc)
        except RPCError as exc:
            if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                return f"the workflow is not running: {exc.message}"
            raise

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
