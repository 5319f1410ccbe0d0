"""A run's approvals, pure: approval steps and progress -> pending approvals, Events, AgentApprovals.

The workflow reports each tool call that waits for a person as an ``approval_requested`` step (data:
an :class:`~agent_tree.contract.control.ApprovalRequest`) and each decision as ``approval_decided``
(who, when, why; ``system:timeout`` when ``onTimeout`` applied); its ``progress`` query lists the
pending ones (``Progress.approvals``). :class:`RunApprovals` folds both into what the AgentRun shows
(``status.approvals``, ``status.waiting``, phase ``AwaitingApproval``, Events) and what the operator
writes: one AgentApproval per pending request (:func:`approval_manifest`, created idempotently) and,
once the run decided, that AgentApproval's status (:func:`decided_status`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from agent_tree import naming
from agent_tree.contract.control import (
    ARGUMENTS_MAX_BYTES,
    TIMEOUT_DECIDER,
    ApprovalDecision,
    ApprovalRequest,
    Decider,
    DecisionAck,
)
from agent_tree.spec_approvals import RunApproval

KIND = "AgentApproval"
PLURAL = "agentapprovals"
WAITING_MAX = 120
EVENT_ARGS_MAX = 160


@dataclass
class Notice:
    """A Kubernetes Event to post on the run (same shape as ``reconcile.runs.K8sEvent``)."""

    type: str
    reason: str
    message: str


def arguments_text(arguments: Any, limit: int = ARGUMENTS_MAX_BYTES) -> str:
    """A call's arguments as JSON text of at most ``limit`` bytes (cut on a character boundary)."""
    if arguments is None:
        return ""
    # Sorted keys: the same call reads the same whether it came from the stream or the progress query.
    text = (
        arguments
        if isinstance(arguments, str)
        else json.dumps(arguments, ensure_ascii=False, sort_keys=True, default=str)
    )
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode(errors="ignore") + "…"


def parse_request(data: Any) -> ApprovalRequest | None:
    """An ``approval_requested`` step's data (or a progress entry) as a request; None when malformed."""
    if not isinstance(data, Mapping):
        return None
    try:
        return ApprovalRequest.model_validate(dict(data))
    except ValidationError:
        return None


def decider_name(data: Mapping[str, Any]) -> str:
    by = data.get("decided_by") or data.get("decidedBy") or {}
    return str(by.get("username") if isinstance(by, Mapping) else by or "unknown")


def approval_manifest(namespace: str, run: str, run_uid: str, request: ApprovalRequest) -> dict[str, Any]:
    """The AgentApproval the operator creates for a pending request (owned by the run: deleted with it)."""
    return {
        "apiVersion": naming.API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": naming.approval_name(run, request.id),
            "namespace": namespace,
            "labels": {
                naming.LABEL_RUN: naming.run_label(run),
                naming.LABEL_APPROVAL_ID: naming.approval_id_label(request.id),
                naming.LABEL_MANAGED_BY: naming.MANAGED_BY,
                "app.kubernetes.io/part-of": naming.PART_OF,
            },
            "ownerReferences": [
                {"apiVersion": naming.API_VERSION, "kind": "AgentRun", "name": run, "uid": run_uid, "controller": True}
            ],
        },
        "spec": {
            "request": {
                "run": run,
                "runUID": run_uid,
                "id": request.id,
                "agent": request.agent,
                "tool": request.tool,
                "arguments": arguments_text(request.arguments),
                "requestedAt": request.requested_at,
                **({"expiresAt": request.expires_at} if request.expires_at else {}),
                "onTimeout": request.on_timeout,
                "approvers": {"users": list(request.approvers.users), "groups": list(request.approvers.groups)},
            }
        },
    }


def decided_status(data: Mapping[str, Any]) -> dict[str, Any]:
    """The AgentApproval status once the run holds a decision (an ``approval_decided`` step's data)."""
    decision = data.get("decision")
    by = data.get("decided_by") or {}
    status = {
        "phase": "Approved" if decision == "approve" else "Rejected",
        "decision": decision,
        "decidedBy": {"username": decider_name(data), "groups": list(by.get("groups") or [])}
        if isinstance(by, Mapping)
        else {"username": decider_name(data), "groups": []},
        "reason": data.get("reason") or None,
        "decidedAt": data.get("decided_at") or None,
        "message": (
            f"onTimeout applied ({decision}): nobody decided before the approval expired"
            if decider_name(data) == TIMEOUT_DECIDER
            else None
        ),
    }
    return {key: value for key, value in status.items() if value is not None}  # a merge patch: None deletes


def needs_delivery(spec: Mapping[str, Any] | None, status: Mapping[str, Any] | None) -> bool:
    """An approver decided (``spec.decision``) and the run has not got it yet (nor can it never)."""
    status = status or {}
    return bool((spec or {}).get("decision")) and not status.get("delivered") and status.get("phase") != "Undeliverable"


def workflow_of(namespace: str, spec: Mapping[str, Any]) -> str:
    request = spec["request"]
    return naming.workflow_id(namespace, request["run"], request["runUID"])


def decision_of(spec: Mapping[str, Any], decided_at: str) -> ApprovalDecision:
    """The ``decide`` Update's input from an AgentApproval's spec (as the API server admitted it)."""
    by = spec.get("decidedBy") or {}
    return ApprovalDecision(
        id=spec["request"]["id"],
        decision=spec["decision"],
        decided_by=Decider(username=str(by.get("username") or ""), groups=list(by.get("groups") or [])),
        reason=spec.get("reason") or "",
        decided_at=decided_at,
    )


def delivered_status(ack: DecisionAck, sent: ApprovalDecision) -> dict[str, Any]:
    """The AgentApproval status once the run answered the Update: what it holds, and whether it was ours."""
    status: dict[str, Any] = {
        "phase": "Approved" if ack.decision == "approve" else "Rejected",
        "decision": ack.decision,
        "decidedBy": ack.decided_by.model_dump(),
        "reason": ack.reason or None,
        "delivered": True,
        "accepted": ack.accepted,
    }
    if not ack.accepted:
        status["message"] = (
            f"the run had been decided before ({ack.decision} by {ack.decided_by.username}); "
            f"this {sent.decision} by {sent.decided_by.username} was not taken"
        )
    return {key: value for key, value in status.items() if value is not None}


@dataclass
class RunApprovals:
    """The approvals of one run as the operator knows them; ``ref`` is ``NAMESPACE/NAME`` of the run."""

    ref: str = ""
    pending: dict[str, RunApproval] = field(default_factory=dict)
    requests: dict[str, ApprovalRequest] = field(default_factory=dict)
    """Full requests of pending ids (what an AgentApproval is made from); after a restart an id may
    be pending with its status entry only, until the stream or the progress query brings it back."""
    announced: set[str] = field(default_factory=set)
    decided: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Decisions seen and not yet written to their AgentApproval (the follower pops them)."""
    closed: set[str] = field(default_factory=set)

    @classmethod
    def from_status(cls, ref: str, entries: Any) -> RunApprovals:
        """Resume from ``status.approvals``: those ids are pending and their Events were posted."""
        out = cls(ref=ref)
        for entry in entries or []:
            try:
                item = RunApproval.model_validate(entry)
            except ValidationError:
                continue
            out.pending[item.id] = item
            out.announced.add(item.id)
        return out

    def entry(self, request: ApprovalRequest) -> RunApproval:
        run = self.ref.rsplit("/", 1)[-1]
        return RunApproval(
            id=request.id,
            agent=request.agent,
            tool=request.tool,
            arguments=arguments_text(request.arguments),
            requestedAt=request.requested_at,
            expiresAt=request.expires_at,
            approval=naming.approval_name(run, request.id),
        )

    def request(self, data: Any) -> list[Notice]:
        """An ``approval_requested`` step."""
        request = parse_request(data)
        if request is None or request.id in self.closed:
            return []
        self.pending[request.id] = self.entry(request)
        self.requests[request.id] = request
        if request.id in self.announced:
            return []
        self.announced.add(request.id)
        args = arguments_text(request.arguments, EVENT_ARGS_MAX)
        expires = f"; {request.on_timeout} at {request.expires_at} without one" if request.expires_at else ""
        return [
            Notice(
                "Normal",
                "ApprovalRequested",
                f"{request.agent} wants to call {request.tool}({args}): waiting for a decision on approval "
                f"{request.id}{expires}; agent-tree approve {self.ref} {request.id} (or reject)",
            )
        ]

    def decide(self, data: Any) -> list[Notice]:
        """An ``approval_decided`` step: the run holds this decision now."""
        if not isinstance(data, Mapping) or not data.get("id"):
            return []
        approval_id = str(data["id"])
        if approval_id in self.closed:
            return []
        self.closed.add(approval_id)
        entry = self.pending.pop(approval_id, None)
        self.requests.pop(approval_id, None)
        self.decided[approval_id] = dict(data)
        tool = entry.tool if entry is not None else "the tool"
        who = decider_name(data)
        verb = "approved" if data.get("decision") == "approve" else "rejected"
        how = " (onTimeout: nobody decided in time)" if who == TIMEOUT_DECIDER else ""
        reason = f": {data['reason']}" if data.get("reason") else ""
        return [Notice("Normal", "ApprovalDecided", f"{tool} call {approval_id} {verb} by {who}{how}{reason}")]

    def replace(self, requests: Any) -> list[Notice]:
        """The ``progress`` query's pending list (the workflow's own view) replaces what is pending."""
        out: list[Notice] = []
        seen = set()
        for data in requests or []:
            request = parse_request(data.model_dump() if hasattr(data, "model_dump") else data)
            if request is not None:
                seen.add(request.id)
                out += self.request(request.model_dump())
        for approval_id in list(self.pending):
            if approval_id not in seen:  # decided meanwhile; who decided comes with the step
                self.pending.pop(approval_id)
                self.requests.pop(approval_id, None)
        return out

    def status(self) -> list[dict[str, Any]] | None:
        """``status.approvals`` (None when nothing waits: the key is then removed from the status)."""
        return [item.model_dump(exclude_none=True) for item in self.pending.values()] or None

    def waiting(self) -> str | None:
        """``status.waiting``: the tools whose calls wait, e.g. ``approval: issue_refund``."""
        if not self.pending:
            return None
        tools = ", ".join(dict.fromkeys(item.tool for item in self.pending.values()))
        text = f"approval: {tools}"
        return text if len(text) <= WAITING_MAX else text[: WAITING_MAX - 1] + "…"

    def message(self) -> str:
        """The Reconciling condition's message while the run waits."""
        first = next(iter(self.pending.values()))
        more = f" (+{len(self.pending) - 1} more)" if len(self.pending) > 1 else ""
        return (
            f"waiting for a decision: {first.agent} wants to call {first.tool} (approval {first.id}){more}; "
            f"agent-tree approve {self.ref} {first.id} (or reject)"
        )
