"""Tool approvals, the part both executors share: which call needs one, the request, the rejected result.

A tool whose spec has ``approval: {required: true}`` runs only after a person approved the call. The
durable workflow waits for a ``decide`` Update (``agent_tree_worker.approvals``); the embedded executor
asks an async callback (:mod:`agent_tree.approval_gate`). Both build the request, apply ``onTimeout``
and turn a rejection into the tool result the agent sees with the functions below, so the same
decisions give the same answer in both. Pure: no I/O, no clock (callers pass the time).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from agent_tree.contract.control import (
    ARGUMENTS_MAX_BYTES,
    TIMEOUT_DECIDER,
    ApprovalDecision,
    ApprovalRequest,
    Approvers,
    Decider,
    DecisionAck,
)
from agent_tree.contract.steps import dumps

ID_MAX = 40
DEADLINE_REASON = "no decision before the run's deadline (AgentRun spec.timeoutSeconds)"


def required(approval: dict[str, Any] | None) -> dict[str, Any] | None:
    """The tool spec's ``approval`` block when it requires a decision, else None."""
    if isinstance(approval, dict) and approval.get("required", True):
        return approval
    return None


def tool_approval(agent: dict[str, Any] | None, tool: str) -> dict[str, Any] | None:
    """The ``approval`` block requiring a decision for ``tool`` of ``agent`` (an AgentSpec as JSON)."""
    for spec in (agent or {}).get("tools") or ():
        if spec.get("name") == tool:
            return required(spec.get("approval"))
    return None


def tree_has_approvals(spec: dict[str, Any]) -> bool:
    """Whether any tool of the tree (an AgentTreeSpec as JSON) requires a decision."""
    return any(required(t.get("approval")) for a in spec.get("agents") or () for t in a.get("tools") or ())


def request_id(ord_: list[int]) -> str:
    """The approval id of the step at ``ord_``: ``"a3-1-2"`` (a DNS label; a hash when over 40 chars)."""
    text = "a" + "-".join(str(i) for i in ord_)
    if len(text) <= ID_MAX:
        return text
    return "a" + hashlib.sha256(text.encode()).hexdigest()[: ID_MAX - 1]


def cut_arguments(args: Any) -> Any:
    """``args`` as they are when their JSON fits :data:`ARGUMENTS_MAX_BYTES`, else their JSON cut to it."""
    text = dumps(args)
    data = text.encode()
    if len(data) <= ARGUMENTS_MAX_BYTES:
        return args
    return data[: ARGUMENTS_MAX_BYTES - 3].decode(errors="ignore") + "..."


def wait_seconds(approval: dict[str, Any], remaining: float) -> tuple[float, bool]:
    """How long to wait for a decision, and whether that wait ends at the run's deadline (not at
    ``timeoutSeconds``): the deadline wins when it comes first or no timeout is set."""
    timeout = approval.get("timeoutSeconds")
    if timeout is None or float(timeout) >= remaining:
        return max(0.0, remaining), True
    return float(timeout), False


def make_request(
    id_: str, agent: str, tool: str, args: Any, approval: dict[str, Any], now: datetime, remaining: float
) -> ApprovalRequest:
    """The request for one call: its arguments cut, ``expires_at`` when it will be decided by itself."""
    seconds, _ = wait_seconds(approval, remaining)
    return ApprovalRequest(
        id=id_,
        agent=agent,
        tool=tool,
        arguments=cut_arguments(args),
        requested_at=now.isoformat(),
        expires_at=(now + timedelta(seconds=seconds)).isoformat(),
        on_timeout=approval.get("onTimeout") or "reject",
        approvers=Approvers.model_validate(approval.get("approvers") or {}),
    )


def timeout_decision(request: ApprovalRequest, now: datetime, *, at_deadline: bool) -> ApprovalDecision:
    """The decision nobody took: ``onTimeout`` after ``timeoutSeconds``; reject at the run's deadline
    (nothing may run after it)."""
    if at_deadline:
        decision, reason = "reject", DEADLINE_REASON
    else:
        expires = datetime.fromisoformat(request.expires_at) if request.expires_at else now
        waited = (expires - datetime.fromisoformat(request.requested_at)).total_seconds()
        decision, reason = (
            request.on_timeout,
            f"no decision within {waited:g}s (approval.onTimeout: {request.on_timeout})",
        )
    return ApprovalDecision(
        id=request.id,
        decision=decision,
        decided_by=Decider(username=TIMEOUT_DECIDER),
        reason=reason,
        decided_at=now.isoformat(),
    )


def ack(decision: ApprovalDecision, accepted: bool) -> DecisionAck:
    return DecisionAck(
        id=decision.id,
        decision=decision.decision,
        decided_by=decision.decided_by,
        reason=decision.reason,
        accepted=accepted,
    )


def decided_step_data(decision: ApprovalDecision, tool: str) -> dict[str, Any]:
    """The ``approval_decided`` step's data: id, decision, decided_by, reason, decided_at, and the tool."""
    return {**decision.model_dump(mode="json"), "tool": tool}


def rejection_text(tool: str, decision: ApprovalDecision) -> str:
    """What the agent reads of a rejected call: who rejected it and why, so a model can explain."""
    who = decision.decided_by.username
    if who == TIMEOUT_DECIDER:
        return f"the call of tool {tool!r} was not approved: {decision.reason or 'no decision in time'}"
    why = f": {decision.reason}" if decision.reason else " (no reason given)"
    return f"the call of tool {tool!r} was rejected by {who}{why}"


def rejected_result(tool: str, decision: ApprovalDecision) -> dict[str, Any]:
    """The tool result (a ToolResult as a dict) of a rejected call: status ``rejected``, nothing ran."""
    return {
        "tool_name": tool,
        "output": None,
        "status": "rejected",
        "error": rejection_text(tool, decision),
        "duration_ms": 0.0,
    }


def audit_details(request: ApprovalRequest, decision: ApprovalDecision) -> dict[str, Any]:
    """The audit_log row's details of a decision."""
    return {
        "id": decision.id,
        "agent": request.agent,
        "tool": request.tool,
        "decision": decision.decision,
        "reason": decision.reason,
        "groups": decision.decided_by.groups,
        "decided_at": decision.decided_at,
    }
