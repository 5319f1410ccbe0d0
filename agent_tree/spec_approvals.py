"""The AgentApproval resource (``agenttree.io/v1alpha1``) and an AgentRun's pending approvals, as models.

The operator creates one AgentApproval per tool call that waits for a person (``spec.request``, taken
from the workflow's :class:`agent_tree.contract.control.ApprovalRequest`); an approver decides by
updating it (``spec.decision``, ``spec.reason``, ``spec.decidedBy``), which ``agent-tree approve`` /
``reject`` do with the caller's credentials. The API server checks who may decide and that
``spec.decidedBy`` is the caller (the chart's ValidatingAdmissionPolicy, docs/run-control.md); the
CRD's CEL rules keep the request as the operator wrote it and a decision, once made, as it is.

The CRD (``crds/agentapprovals.yaml``) is generated from these models like the AgentTree and AgentRun
ones (``agent_tree_operator.crdgen``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Decision = Literal["approve", "reject"]
ARGUMENTS_MAX_CHARS = 4096
"""Characters of ``arguments`` in the schema (the operator cuts them to 2 KB, ``ARGUMENTS_MAX_BYTES``)."""
REASON_MAX = 1024
"""Characters of ``spec.reason`` (a note for the history, not a document)."""
ApprovalPhase = Literal["Pending", "Approved", "Rejected", "Undeliverable"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApproverList(_Model):
    """Who may decide; both empty: anyone whom RBAC lets update AgentApprovals in the namespace."""

    users: list[str] = Field(default_factory=list, max_length=100)
    groups: list[str] = Field(default_factory=list, max_length=100)


class RequestSpec(_Model):
    """What waits for a decision; written by the operator at creation and never changed."""

    run: str = Field(max_length=253, description="Name of the AgentRun (same namespace).")
    runUID: str = Field(max_length=64, description="uid of the AgentRun (its workflow id derives from it).")
    id: str = Field(max_length=128, description="The approval's id in the run.")
    agent: str = Field(max_length=64)
    tool: str = Field(max_length=64)
    arguments: str = Field(
        default="", max_length=ARGUMENTS_MAX_CHARS, description="The call's arguments as JSON, cut to 2 KB."
    )
    requestedAt: str = Field(max_length=64)
    expiresAt: str | None = Field(default=None, max_length=64, description="When onTimeout applies (none: never).")
    onTimeout: Decision = "reject"
    approvers: ApproverList = Field(default_factory=ApproverList)


class DecidedBy(_Model):
    """The Kubernetes identity that decided; the API server refuses any other than the caller's own."""

    username: str = Field(min_length=1, max_length=512)
    groups: list[str] = Field(default_factory=list, max_length=100)


class AgentApprovalSpec(_Model):
    """One approval: the request, and the decision an approver writes into it."""

    request: RequestSpec
    decision: Decision | None = Field(default=None, description="Set by an approver: approve or reject.")
    reason: str | None = Field(default=None, max_length=REASON_MAX)
    decidedBy: DecidedBy | None = Field(
        default=None, description="The deciding user, as the API server authenticated them (request.userInfo)."
    )


class AgentApprovalStatus(BaseModel):
    """What the run holds for this approval (written by the operator only)."""

    model_config = ConfigDict(extra="ignore")
    phase: ApprovalPhase | None = None
    decision: Decision | None = Field(default=None, description="The decision the run took (first one wins).")
    decidedBy: DecidedBy | None = None
    reason: str | None = None
    decidedAt: str | None = None
    delivered: bool | None = Field(default=None, description="spec.decision reached the run's workflow.")
    accepted: bool | None = Field(
        default=None, description="False when the run had been decided before (e.g. by onTimeout)."
    )
    message: str | None = None


class RunApproval(BaseModel):
    """One entry of an AgentRun's ``status.approvals``: a tool call waiting for a decision now."""

    model_config = ConfigDict(extra="ignore")
    id: str
    agent: str
    tool: str
    arguments: str = ""
    requestedAt: str
    expiresAt: str | None = None
    approval: str = Field(description="Name of the AgentApproval to decide (agent-tree approve NS/RUN ID).")
