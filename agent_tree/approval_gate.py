"""The approval gate in front of tool calls made in-process (embedded runs, Python agents' turns).

:meth:`RunContext.call_tool <agent_tree.context.RunContext.call_tool>` and the embedded model loop ask
:func:`check` before a tool runs. A tool whose ``approval`` requires a decision is put to the gate of
the current run (a context variable, so agents called as tools are gated too):

- :class:`EmbeddedGate` (set by :class:`~agent_tree.orchestrator.SupervisorOrchestrator`) awaits the
  run's async approval callback, at most ``timeoutSeconds`` (then ``onTimeout`` applies);
- the durable worker sets its own gate in a Python agent's turn (``agent_tree_worker.activities``),
  which ends the activity so the workflow can wait for a person durably.

With no gate set (a turn run by hand with :func:`~agent_tree.turns.run_turn`), such a tool is rejected:
nothing that needs a person's approval runs without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Protocol

from agent_tree import approvals
from agent_tree.calls import error_message, maybe_await
from agent_tree.contract.control import ApprovalDecision, ApprovalRequest, Decider
from agent_tree.hooks import OrchestratorHooks
from agent_tree.models import ToolResult

Approver = Callable[[ApprovalRequest], Any]
"""``async (request) -> decision``: an :class:`ApprovalDecision`, a dict with ``decision`` (and
``reason``, ``decided_by``), ``"approve"`` / ``"reject"``, or a bool (True approves)."""

NO_GATE = (
    "tool {tool!r} requires approval and nobody can decide in this run: run it with "
    "SupervisorOrchestrator(..., approve=callback), or agent-tree run --approve-all / --reject-all"
)


class Gate(Protocol):
    async def decide(self, agent: str, tool: str, args: dict[str, Any], approval: dict[str, Any]) -> ToolResult | None:
        """None: the call may run; a ToolResult: it was refused (status ``rejected``)."""
        ...


_GATE: ContextVar[Gate | None] = ContextVar("agent_tree_approval_gate", default=None)


@contextlib.contextmanager
def gated(gate: Gate) -> Iterator[None]:
    """Tool calls made inside the block (in this task and the tasks it starts) go through ``gate``."""
    token = _GATE.set(gate)
    try:
        yield
    finally:
        _GATE.reset(token)


def tool_approval(tools: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The approval a call of tool ``name`` needs (its ``approval`` block), or None."""
    return approvals.required(getattr(tools.get(name), "approval", None))


async def check(agent: Any, name: str, args: dict[str, Any]) -> ToolResult | None:
    """Before ``agent`` calls tool ``name``: None when it may run, else the rejected ToolResult."""
    approval = tool_approval(agent.tools, name)
    if approval is None:
        return None
    gate = _GATE.get()
    if gate is None:
        return ToolResult(tool_name=name, status="rejected", error=NO_GATE.format(tool=name), duration_ms=0.0)
    return await gate.decide(agent.name, name, args, approval)


def as_decision(request: ApprovalRequest, answer: Any, default_user: str) -> ApprovalDecision:
    """What an approval callback returned, as a decision on ``request``.

    Raises:
        ValueError: the answer is none of the accepted forms (the message says which are).
    """
    now = datetime.now(UTC).isoformat()
    if isinstance(answer, ApprovalDecision):
        return answer.model_copy(update={"id": request.id, "decided_at": answer.decided_at or now})
    if isinstance(answer, bool):
        answer = "approve" if answer else "reject"
    if isinstance(answer, str):
        answer = {"decision": answer}
    if isinstance(answer, Mapping) and answer.get("decision") in ("approve", "reject"):
        by = answer.get("decided_by") or {"username": default_user}
        return ApprovalDecision(
            id=request.id,
            decision=answer["decision"],
            decided_by=Decider.model_validate({"username": by} if isinstance(by, str) else by),
            reason=str(answer.get("reason") or ""),
            decided_at=now,
        )
    raise ValueError(
        f"the approval callback returned {answer!r}; return an ApprovalDecision, "
        "{'decision': 'approve'|'reject', 'reason': ...}, 'approve' / 'reject' or a bool"
    )


class EmbeddedGate:
    """The embedded run's gate: asks ``approver`` for each call, numbering requests ``a1``, ``a2``, ...

    Args:
        approver: the run's async approval callback.
        hooks: the run's hooks (``on_approval_requested(request)``, ``on_approval_decided(request,
            decision)`` fire around each wait).
        deadline: the run's deadline as a :data:`agent_tree.turns.clock` time (None: none), with
            ``clock`` that reads it; the wait never passes it (a call waiting at it is rejected).
        default_user: ``decided_by.username`` when the callback names nobody.
    """

    def __init__(
        self,
        approver: Approver,
        hooks: OrchestratorHooks | None = None,
        *,
        deadline: float | None = None,
        clock: Callable[[], float] | None = None,
        default_user: str = "embedded",
    ) -> None:
        self.approver = approver
        self.hooks = hooks or OrchestratorHooks()
        self.deadline = deadline
        self.clock = clock
        self.default_user = default_user
        self.count = 0

    async def decide(self, agent: str, tool: str, args: dict[str, Any], approval: dict[str, Any]) -> ToolResult | None:
        self.count += 1
        remaining = math.inf if self.deadline is None or self.clock is None else self.deadline - self.clock()
        request = approvals.make_request(
            f"a{self.count}", agent, tool, args, approval, datetime.now(UTC), min(remaining, 10 * 365 * 86400)
        )
        if math.isinf(remaining) and approval.get("timeoutSeconds") is None:
            request = request.model_copy(update={"expires_at": None})  # no deadline, no timeout: it waits
        await self.hooks.fire("on_approval_requested", request)
        seconds, at_deadline = approvals.wait_seconds(approval, remaining)
        decision = await self._ask(request, None if math.isinf(seconds) else seconds, at_deadline)
        await self.hooks.fire("on_approval_decided", request, decision)
        if decision.decision == "approve":
            return None
        return ToolResult.model_validate(approvals.rejected_result(tool, decision))

    async def _ask(self, request: ApprovalRequest, seconds: float | None, at_deadline: bool) -> ApprovalDecision:
        try:
            answer = await asyncio.wait_for(_ask(self.approver, request), seconds)
        except TimeoutError:
            return approvals.timeout_decision(request, datetime.now(UTC), at_deadline=at_deadline)
        except Exception as exc:
            answer = {"decision": "reject", "reason": f"the approval callback raised {error_message(exc)}"}
        try:
            return as_decision(request, answer, self.default_user)
        except ValueError as exc:
            return as_decision(request, {"decision": "reject", "reason": str(exc)}, self.default_user)


async def _ask(approver: Approver, request: ApprovalRequest) -> Any:
    return await maybe_await(approver(request))
