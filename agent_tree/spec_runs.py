"""The AgentRun resource's spec and status (``agenttree.io/v1alpha1``), budgets and forks, as models.

Part of the CRD schemas whose single source of truth is :mod:`agent_tree.spec` (which re-exports the
names used widely, e.g. ``AgentRunSpec``, ``AgentRunStatus``, ``Budgets``): what a run asks for
(:class:`AgentRunSpec`: the tree, the input, limits, :class:`Budgets` shared with the AgentTree's
defaults, and :class:`ForkFrom` to retry or fork an earlier run) and the summary the operator writes
(:class:`AgentRunStatus`, with :class:`BudgetUsage`, :class:`ForkedFrom` and the :class:`Condition`
shape both resources' statuses use). The CRD is generated from them by ``agent_tree_operator.crdgen``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent_tree.spec_approvals import RunApproval

RESOURCE_NAME_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
MAX_INPUT_CHARS = 65536


class _Model(BaseModel):
    # strict: a manifest with "replicas: '3'" is an error to fix, not something to guess about.
    model_config = ConfigDict(extra="forbid", strict=True)


class Budgets(_Model):
    """What a run may use, counted across every agent of the run (nested supervisors and agents called
    as tools included); see docs/run-control.md, "Budgets"."""

    maxTurns: int | None = Field(default=None, ge=1, description="Agent turns (nested ones and agents as tools).")
    maxToolCalls: int | None = Field(default=None, ge=1, description="Tool calls (agents called as tools included).")
    maxTokens: int | None = Field(
        default=None, ge=1, description="Tokens; each model call reserves its model.maxTokens before it is made."
    )
    maxCostUSD: float | None = Field(default=None, gt=0, description="USD, from the model agents' model.pricing.")
    onExhausted: Literal["fail", "pause"] | None = Field(
        default=None, description="fail (default): the run fails with reason BudgetExceeded; pause: it waits."
    )


class TreeRef(_Model):
    name: str = Field(pattern=RESOURCE_NAME_RE, max_length=253, description="AgentTree in the run's namespace.")


FORK_RUN_MESSAGE = (
    "spec.forkFrom.run must be the name of an AgentRun in this run's namespace (not NAMESPACE/NAME: a run is "
    "retried or forked in its own namespace); create this AgentRun in the source's namespace"
)


class ForkFrom(_Model):
    """Retry or fork an earlier run of the same namespace, reusing its recorded steps 1..``step``."""

    run: str = Field(
        min_length=1,
        max_length=253,
        description="An AgentRun name in this run's namespace (its latest run in the history; it may be deleted).",
    )
    step: int | None = Field(
        default=None,
        ge=1,
        description="Reuse the source's steps 1..step (as `agent-tree history` numbers them) and run live after; "
        "unset: retry, reusing every step before the source's first failed one.",
    )
    input: str | None = Field(default=None, min_length=1, max_length=MAX_INPUT_CHARS)
    context: dict[str, Any] | None = None
    treeRevision: Literal["source", "current"] = Field(
        default="source",
        description="source: the source run's pinned tree spec (from the history); current: the AgentTree as it is now.",
    )

    @field_validator("run")
    @classmethod
    def _same_namespace(cls, value: str) -> str:
        if not re.match(RESOURCE_NAME_RE, value):
            raise ValueError(FORK_RUN_MESSAGE)
        return value


class AgentRunSpec(_Model):
    """One execution of a tree. Immutable after creation, except ``budgets``."""

    treeRef: TreeRef | None = Field(
        default=None, description="Required unless forkFrom is set (then: the source's tree)."
    )
    input: str | None = Field(
        default=None, min_length=1, max_length=MAX_INPUT_CHARS, description="Required unless forkFrom is set."
    )
    context: dict[str, Any] = Field(default_factory=dict)
    maxSteps: int | None = Field(default=None, ge=1, le=100)
    timeoutSeconds: int = Field(default=3600, ge=1, le=7 * 86400)
    budgets: Budgets | None = Field(
        default=None, description="Limits of this run; unset fields come from the AgentTree's budgets."
    )
    ttlSecondsAfterFinished: int | None = Field(default=None, ge=0)
    forkFrom: ForkFrom | None = None

    @model_validator(mode="after")
    def _input_and_tree_or_fork(self) -> AgentRunSpec:
        if self.forkFrom is None:
            for name in ("treeRef", "input"):
                if getattr(self, name) is None:
                    raise ValueError(f"spec.{name} is required (unless spec.forkFrom names a run to retry or fork)")
        return self


class ForkedFrom(BaseModel):
    model_config = ConfigDict(extra="ignore")
    run: str
    step: int
    workflowId: str


ConditionStatus = Literal["True", "False", "Unknown"]
RunPhase = Literal["Pending", "Running", "AwaitingApproval", "Paused", "Succeeded", "Failed", "Cancelled"]
FINAL_PHASES = frozenset({"Succeeded", "Failed", "Cancelled"})


class Condition(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    lastTransitionTime: str | None = None
    observedGeneration: int | None = None


class BudgetUsage(BaseModel):
    """What a run used, against ``spec.budgets`` (set for runs with budgets)."""

    model_config = ConfigDict(extra="ignore")
    turns: int = 0
    toolCalls: int = 0
    tokens: int = 0
    costUSD: float = 0.0


class AgentRunStatus(BaseModel):
    model_config = ConfigDict(extra="ignore")
    phase: RunPhase | None = None
    currentAgent: str | None = None
    steps: int | None = None
    answer: str | None = Field(default=None, description="Short answer (truncated); full result in history.")
    result: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    tokenUsage: int | None = None
    usage: BudgetUsage | None = Field(default=None, description="Usage against spec.budgets.")
    treeRevision: str | None = None
    workflowId: str | None = None
    startedAt: str | None = None
    completedAt: str | None = None
    duration: str | None = Field(
        default=None, description="startedAt to completedAt, e.g. 1m32s; empty until the run finishes."
    )
    message: str | None = None
    forkedFrom: ForkedFrom | None = Field(default=None, description="The run this one retried or forked.")
    approvals: list[RunApproval] | None = Field(
        default=None, description="Tool calls waiting for a decision now (phase AwaitingApproval while any is)."
    )
    waiting: str | None = Field(
        default=None, description="What the run waits for, e.g. 'approval: issue_refund' (the Waiting column)."
    )
    observedGeneration: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
