"""The request and response bodies of the REST API (Pydantic; the OpenAPI document is generated from them).

They live in the core so that the API (``agent_tree_api``) and its client (:mod:`agent_tree.client`)
share one definition; ``agent_tree_api.models`` re-exports them.

Requests are strict and refuse unknown fields, like the CRDs: a body with ``"maxSteps": "3"`` or a
misspelt field is a 422 naming the field, not a guess. The AgentRun's ``spec`` is
:class:`agent_tree.spec_runs.AgentRunSpec` itself, the model the CRD is generated from.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent_tree.spec_approvals import REASON_MAX
from agent_tree.spec_runs import MAX_INPUT_CHARS, RESOURCE_NAME_RE, AgentRunSpec


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RunCreate(_Request):
    """A new AgentRun: ``name`` or ``generateName``, and its spec (created as the caller)."""

    name: str | None = Field(default=None, pattern=RESOURCE_NAME_RE, max_length=253)
    generateName: str | None = Field(default=None, pattern=r"^[a-z0-9]([-a-z0-9.]*)?$", max_length=200)
    labels: dict[str, str] = Field(default_factory=dict)
    spec: AgentRunSpec

    @model_validator(mode="after")
    def _a_name(self) -> RunCreate:
        if (self.name is None) == (self.generateName is None):
            raise ValueError('name: give exactly one of name and generateName (e.g. "generateName": "why-")')
        return self


class DecisionRequest(_Request):
    """Approve or reject one tool call; ``reason`` is recorded with who decided."""

    reason: str | None = Field(default=None, max_length=REASON_MAX)


class RetryRequest(_Request):
    name: str | None = Field(
        default=None, pattern=RESOURCE_NAME_RE, max_length=63, description="Default: RUN-retry-XXXXX."
    )
    currentTree: bool = Field(
        default=False, description="Run on the AgentTree as it is now, not the source's revision."
    )


class ForkRequest(RetryRequest):
    step: int = Field(ge=1, description="Reuse the source's steps 1..step (as the steps listing numbers them).")
    input: str | None = Field(default=None, min_length=1, max_length=MAX_INPUT_CHARS)
    context: dict[str, Any] | None = None


class ErrorItem(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """Every error response: a Kubernetes-style reason, a message, and the fields to fix."""

    status: int
    reason: str
    message: str
    errors: list[ErrorItem] = Field(default_factory=list)


class WhoAmI(BaseModel):
    """The caller as the Kubernetes API server authenticated their token (a TokenReview)."""

    username: str
    groups: list[str] = Field(default_factory=list)


class RunSummary(BaseModel):
    """One run: its AgentRun (when it still exists) merged with its latest row in the history."""

    namespace: str
    name: str
    uid: str | None = None
    workflowId: str | None = None
    tree: str | None = None
    phase: str | None = None
    currentAgent: str | None = None
    steps: int = 0
    tokens: int = 0
    answer: str | None = None
    startedAt: str | None = None
    finishedAt: str | None = None
    durationSeconds: float | None = None
    forkedFrom: str | None = None
    inCluster: bool = Field(description="False: the AgentRun was deleted; the history still has the run.")


class RunList(BaseModel):
    items: list[RunSummary]
    nextCursor: str | None = Field(default=None, description="Pass as ?cursor= for the next page; null on the last.")


class RunView(RunSummary):
    """A run in full: the summary plus the AgentRun's spec and status (when it exists) and the history's."""

    spec: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    input: str | None = None
    result: Any = None
    recordedSteps: int = Field(
        default=0, description="Steps in the history now (GET returns it; the SSE snapshot does not)."
    )
    lastPosition: str | None = Field(
        default=None,
        description="Position of the last recorded step: follow only what comes next with .../events?since=<it>.",
    )


class StepItem(BaseModel):
    """One recorded step, as the history and the event stream carry it."""

    number: int = Field(description="1-based, as `agent-tree history` and spec.forkFrom.step count.")
    position: str = Field(description="The step's ord as a dotted path: the SSE event id and ?after= of the steps.")
    ord: list[int]
    type: str
    agent: str | None = None
    data: dict[str, Any]
    ts: str


class StepPage(BaseModel):
    items: list[StepItem]
    nextCursor: str | None = None


class TreeView(BaseModel):
    namespace: str
    name: str
    spec: dict[str, Any]
    status: dict[str, Any] = Field(default_factory=dict)
    createdAt: str | None = None


class TreeList(BaseModel):
    items: list[TreeView]


class ApprovalView(BaseModel):
    """One tool call that waits (or waited) for a person, from its AgentApproval."""

    id: str
    name: str = Field(description="The AgentApproval's name.")
    agent: str
    tool: str
    arguments: str = ""
    requestedAt: str
    expiresAt: str | None = None
    pending: bool
    decision: str | None = None
    decidedBy: str | None = None
    reason: str | None = None
    delivered: bool = False


class ApprovalList(BaseModel):
    items: list[ApprovalView]


class DecisionResult(BaseModel):
    approval: ApprovalView
    message: str


class Created(BaseModel):
    namespace: str
    name: str
    uid: str
    createdBy: str = Field(description="Who the Kubernetes API server recorded as the creator (the caller).")
