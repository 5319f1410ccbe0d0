"""Run control across process boundaries: approvals, budget changes, forks.

A person takes part in a durable run through the Kubernetes API (an ``AgentApproval`` decided by an
approver, an AgentRun's ``spec.budgets`` raised); the operator turns what changed into a Temporal
Update of the run's workflow, typed by the models below. Updates are idempotent: an approval id is
decided once (a second decision gets the first one back, ``accepted=False``), and budgets are a
whole value (sending the same budgets twice changes nothing).

The step types that record these decisions are in :mod:`agent_tree.contract.steps`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DECIDE_UPDATE = "decide"
"""Temporal Update of ``AgentRunWorkflow``: :class:`ApprovalDecision` in, :class:`DecisionAck` out."""
BUDGETS_UPDATE = "set_budgets"
"""Temporal Update of ``AgentRunWorkflow``: :class:`BudgetsChange` in, :class:`BudgetsAck` out."""

Decision = Literal["approve", "reject"]
TIMEOUT_DECIDER = "system:timeout"
"""``decided_by.username`` of a decision that ``onTimeout`` took (no person decided)."""
ARGUMENTS_MAX_BYTES = 2048
"""An approval request's ``arguments`` in status and in the AgentApproval are cut to this size."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Approvers(_Model):
    """Who may decide (empty lists: anyone RBAC lets decide)."""

    users: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)


class ApprovalRequest(_Model):
    """A tool call waiting for a person: what the workflow reports (progress query, history step)."""

    id: str
    """Unique in the run, stable across replays and worker restarts (derived from the step's ord)."""
    agent: str
    tool: str
    arguments: Any = None
    """The call's arguments, cut to :data:`ARGUMENTS_MAX_BYTES` (the full ones are in history)."""
    requested_at: str
    expires_at: str | None = None
    on_timeout: Decision = "reject"
    approvers: Approvers = Field(default_factory=Approvers)


class Decider(_Model):
    """The authenticated Kubernetes identity that decided (``request.userInfo``)."""

    username: str
    groups: list[str] = Field(default_factory=list)


class ApprovalDecision(_Model):
    """The ``decide`` update's input."""

    id: str
    decision: Decision
    decided_by: Decider
    reason: str = ""
    decided_at: str | None = None


class DecisionError(ValueError):
    """A decision the run refused (unknown id, empty decider) or could not take (the run has finished);
    the message says which and what to do."""


class DecisionAck(_Model):
    """The ``decide`` update's answer: the decision the run holds for this id."""

    id: str
    decision: Decision
    decided_by: Decider
    reason: str = ""
    accepted: bool
    """False when the id had been decided before (the first decision stands)."""


class BudgetsChange(_Model):
    """The ``set_budgets`` update's input: the AgentRun's whole ``spec.budgets`` (camelCase keys)."""

    budgets: dict[str, Any]


class BudgetsAck(_Model):
    budgets: dict[str, Any]
    resumed: bool
    """True when the run was paused on an exhausted budget and the new budgets let it go on."""


class ForkSource(_Model):
    """``RunInput.fork``: where a forked or retried run takes its recorded steps from."""

    workflow_id: str
    """The source run's workflow id (its history in PostgreSQL; the AgentRun may be gone)."""
    name: str
    step: int
    """Steps 1..step of the source (as ``agent-tree history`` numbers them) are reused, not re-run."""
    until_ord: list[int]
    """The ord of step ``step``: a call whose step ord is <= this is answered from the source."""


def reused(key: list[int], until_ord: list[int]) -> bool:
    """Whether the call recorded at ``key`` is answered from the fork's source (``until_ord``: the
    ord of the source's last reused step).

    ``key`` is the ord of the step that records the call's outcome (a tool call's ``tool_end``, a
    model call's or the planner's first ``reasoning`` / ``model_usage`` step); a key below the step
    (a longer ord that starts with it) belongs to it. Ords compare as PostgreSQL compares
    ``integer[]``: element by element, a prefix first.
    """
    return list(key[: len(until_ord)]) <= list(until_ord)


class ForkPointError(ValueError):
    """A fork or retry that cannot start as asked; the message names the field and the fix."""


def fork_point(steps: list[dict[str, Any]], step: int | None, source: str) -> tuple[int, list[int]]:
    """``(step, until_ord)`` of a fork of the run whose history is ``steps`` (in ord order).

    ``step`` numbers the steps from 1 as ``agent-tree history`` does. Without it (a retry), the fork
    reuses every step before the first that failed: a ``tool_end`` with status ``error`` or an
    ``agent_end`` with status ``failed`` (the tool or the agent's turn then runs again, live).

    Raises:
        ForkPointError: the step does not exist, or a retry of a run where no step failed.
    """
    if not steps:
        raise ForkPointError(f"spec.forkFrom.run: run {source!r} has no recorded steps; nothing can be reused")
    if step is None:
        for number, s in enumerate(steps, 1):
            status = (s.get("data") or {}).get("status")
            if (s["type"] == "tool_end" and status == "error") or (s["type"] == "agent_end" and status == "failed"):
                if number == 1:
                    break
                return number - 1, list(steps[number - 2]["ord"])
        raise ForkPointError(
            f"spec.forkFrom.step: run {source!r} has no failed step (no tool_end with an error, no failed "
            "agent_end) to retry from; set spec.forkFrom.step to the step to fork after "
            f"(1..{len(steps)}, see `agent-tree history`)"
        )
    if step > len(steps):
        raise ForkPointError(
            f"spec.forkFrom.step: run {source!r} has {len(steps)} steps, there is no step {step}; "
            f"choose 1..{len(steps)} (see `agent-tree history`)"
        )
    return step, list(steps[step - 1]["ord"])
