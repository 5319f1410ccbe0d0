"""Tool approvals in the durable run: the workflow's requests and decisions, and the durable wait.

A call of a tool whose spec requires approval records an ``approval_requested`` step at once (a local
activity, so followers and the operator see it), shows the request in the ``progress`` query (phase
``AwaitingApproval``) and waits in ``workflow.wait_condition`` for the ``decide`` Update, at most
``timeoutSeconds`` (else until the run's deadline). Temporal keeps the wait: a worker killed during it
loses nothing, and the next worker replays to the same point. The decision is recorded as an
``approval_decided`` step and an audit_log row (actor: who decided) before the tool runs or is
refused. See docs/run-control.md, "Approvals: the workflow side".
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Protocol

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from agent_tree import approvals as policy
    from agent_tree.contract import APPROVAL_DECIDED, APPROVAL_REQUESTED
    from agent_tree.contract.control import TIMEOUT_DECIDER, ApprovalDecision, ApprovalRequest, DecisionAck, reused
    from agent_tree_worker import inputs as t

TOOL_APPROVALS = "tool-approvals"
"""Patch id (workflow.patched) of asking for approval before a tool call; only a call that needs one
records the marker, so runs that use no approval issue exactly the commands they did before."""


class Recording(Protocol):
    """What the wait needs of the workflow's executor (``executor.Executor``)."""

    deadline: float
    run_id: str

    async def record_now(self, steps: list[t.Step], audit: list[dict[str, Any]] | None = None) -> None: ...


def _step(kind: str, agent: str, ord_: list[int], data: dict[str, Any]) -> t.Step:
    return {
        "ord": list(ord_),
        "type": kind,
        "agent": agent,
        "data": {"type": kind, **data},
        "ts": workflow.now().isoformat(),
    }  # type: ignore[typeddict-item]


class Approvals:
    """The run's approval requests (pending) and decisions; the ``decide`` Update reads and writes it."""

    def __init__(self, progress: dict[str, Any]) -> None:
        self.progress = progress
        self.pending: dict[str, ApprovalRequest] = {}
        self.decided: dict[str, ApprovalDecision] = {}
        # A retried or forked run: approvals at or before this ord take the source's decision.
        self.fork_until: list[int] | None = None

    # --- the decide Update ------------------------------------------------------------------------

    def validate(self, decision: ApprovalDecision) -> None:
        """Reject (before anything is written to history) a decision the run cannot take."""
        if not decision.decided_by.username.strip():
            raise ApplicationError(
                "decided_by.username is empty: a decision names who took it", type="InvalidDecision", non_retryable=True
            )
        if decision.decided_by.username == TIMEOUT_DECIDER and decision.id not in self.decided:
            raise ApplicationError(
                f"decided_by.username {TIMEOUT_DECIDER!r} is reserved for decisions taken by approval.onTimeout",
                type="InvalidDecision",
                non_retryable=True,
            )
        if decision.id in self.pending or decision.id in self.decided:
            return
        waiting = ", ".join(sorted(self.pending)) or "none"
        raise ApplicationError(
            f"approval id {decision.id!r} was never requested by this run (pending approvals: {waiting})",
            type="UnknownApproval",
            non_retryable=True,
        )

    def decide(self, decision: ApprovalDecision) -> DecisionAck:
        """Store the first decision of an id; a later one gets the first back with ``accepted=False``."""
        first = self.decided.get(decision.id)
        if first is not None:
            return policy.ack(first, accepted=False)
        if decision.decided_at is None:
            decision = decision.model_copy(update={"decided_at": workflow.now().isoformat()})
        self.decided[decision.id] = decision
        return policy.ack(decision, accepted=True)

    # --- continue-as-new ----------------------------------------------------------------------------

    def carry(self) -> dict[str, Any]:
        """Decisions taken so far (a later duplicate is still answered after continuing as new)."""
        return {k: v.model_dump(mode="json") for k, v in self.decided.items()}

    def restore(self, decided: dict[str, Any] | None) -> None:
        self.decided = {k: ApprovalDecision.model_validate(v) for k, v in (decided or {}).items()}

    # --- the wait -----------------------------------------------------------------------------------

    def _show(self) -> None:
        self.progress["approvals"] = [r.model_dump(mode="json") for r in self.pending.values()]
        if self.progress.get("phase") in ("Running", "AwaitingApproval"):
            self.progress["phase"] = "AwaitingApproval" if self.pending else "Running"

    async def ask(
        self,
        ex: Recording,
        agent: str,
        tool: str,
        args: Any,
        approval: dict[str, Any],
        ords: tuple[list[int], list[int]],
        pending_steps: list[t.Step],
    ) -> ApprovalDecision:
        """Request a decision for one call and wait for it (or for the timeout); returns the decision.

        ``ords``: where the ``approval_requested`` and ``approval_decided`` steps go; the request's id
        derives from the first. ``pending_steps``: steps emitted before, written with the request.
        """
        now = workflow.now()
        remaining = ex.deadline - now.timestamp()
        request = policy.make_request(policy.request_id(ords[0]), agent, tool, args, approval, now, remaining)
        asked = _step(APPROVAL_REQUESTED, agent, ords[0], request.model_dump(mode="json"))
        if self.fork_until is not None and reused(ords[1], self.fork_until):
            source = await self._source_decision(ex, ords[1], tool)
            if source is not None:  # decided in the source run (its audit row is there): no one is asked
                self.decided.setdefault(request.id, source)
                decided = _step(APPROVAL_DECIDED, agent, ords[1], policy.decided_step_data(source, tool))
                await ex.record_now([*pending_steps, asked, decided])
                return source
        self.pending[request.id] = request
        self._show()
        await ex.record_now([*pending_steps, asked])
        seconds, at_deadline = policy.wait_seconds(approval, ex.deadline - workflow.now().timestamp())
        if request.id not in self.decided and seconds > 0:
            try:
                await workflow.wait_condition(lambda: request.id in self.decided, timeout=timedelta(seconds=seconds))
            except TimeoutError:
                pass
        if request.id not in self.decided:
            self.decided[request.id] = policy.timeout_decision(request, workflow.now(), at_deadline=at_deadline)
        decision = self.decided[request.id]
        del self.pending[request.id]
        self._show()
        audit = {
            "key": f"{request.id}:approval_decided",
            "actor": decision.decided_by.username,
            "action": "approval_decided",
            "details": policy.audit_details(request, decision),
        }
        decided = _step(APPROVAL_DECIDED, agent, ords[1], policy.decided_step_data(decision, tool))
        await ex.record_now([decided], [audit])
        return decision

    @staticmethod
    async def _source_decision(ex: Recording, ord_: list[int], tool: str) -> ApprovalDecision | None:
        """The decision the fork's source recorded at ``ord_`` (None: the worker keeps no history)."""
        found = await workflow.execute_local_activity(
            t.REUSE_DECISION,
            t.ReuseDecisionInput(ex.run_id, ord_, tool),
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=timedelta(hours=1),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=0.5), maximum_interval=timedelta(seconds=5)),
            result_type=dict,
        )
        return None if found is None else ApprovalDecision.model_validate(found)
