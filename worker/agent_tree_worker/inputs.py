"""Inputs of the workflows and activities: one model or dataclass each (the Pydantic data converter carries them).

The run's input, the activity names and the step type are the contract's (:mod:`agent_tree.contract`),
re-exported here so workflow code keeps using ``t.RunInput``, ``t.PLAN``, ... Kept free of heavy
imports: workflow code imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent_tree.contract import (
    FINISH_RUN,
    MODEL_CALL,
    PLAN,
    PYTHON_TURN,
    RECORD_STEPS,
    REUSE_DECISION,
    START_RUN,
    TOOL_CALL,
    RunInput,
    Step,
)

__all__ = [
    "BUDGET_USED",
    "FINISH_RUN",
    "MODEL_CALL",
    "PLAN",
    "PYTHON_TURN",
    "RECORD_STEPS",
    "REUSE_DECISION",
    "START_RUN",
    "TOOL_CALL",
    "FinishRunInput",
    "ModelCallInput",
    "PlanInput",
    "PythonTurnInput",
    "ReuseDecisionInput",
    "RunInput",
    "StartRunInput",
    "Step",
    "StepsInput",
    "ToolCallInput",
    "TurnInput",
    "TurnResult",
]


@dataclass
class TurnInput:
    """Input of ``AgentWorkflow``: one turn of one agent (or its call as a tool)."""

    run_id: str  # the run's workflow id: the key of its history
    namespace: str
    tree: str
    spec: dict[str, Any]
    agent: str
    input: str
    context: dict[str, Any]
    ord: list[int]
    plan: dict[str, Any] | None = None
    step: int = 0
    max_steps: int = 10
    to_agent: str = "supervisor"
    as_tool: bool = False  # called as a tool: no lifecycle events, like AgentNode.as_tool
    deadline: float | None = None  # epoch seconds
    steps: list[Step] = field(default_factory=list)  # steps to write first (piggybacked)


@dataclass
class TurnResult:
    handoff: dict[str, Any]
    steps: list[Step] = field(default_factory=list)  # steps emitted last, for the parent to write


@dataclass
class StartRunInput:
    run: dict[str, Any]
    steps: list[Step] = field(default_factory=list)


@dataclass
class FinishRunInput:
    run_id: str
    result: dict[str, Any]
    steps: list[Step] = field(default_factory=list)


@dataclass
class StepsInput:
    run_id: str
    steps: list[Step]
    # audit_log rows to write with the steps ({key, actor, action, details}; key unique in the run), e.g.
    # an approval's decision. Absent from older histories.
    audit: list[dict[str, Any]] | None = None


@dataclass
class ReuseDecisionInput:
    run_id: str
    ord: list[int]  # the approval_decided step's ord: the decision's key in recorded_calls
    tool: str


@dataclass
class PlanInput:
    run_id: str
    spec: dict[str, Any]
    input: str
    steps: list[Step] = field(default_factory=list)
    agent: str | None = None  # set: route with this model supervisor; unset: the tree's planner entrypoint
    ord: list[int] | None = None  # the ord of the step that will record the plan: the call's key (forks)


@dataclass
class PythonTurnInput:
    run_id: str
    spec: dict[str, Any]
    agent: str
    input: str
    context: dict[str, Any]
    ord: list[int]
    plan: dict[str, Any] | None = None
    step: int = 0
    max_steps: int = 10
    to_agent: str = "supervisor"
    quiet: bool = False
    steps: list[Step] = field(default_factory=list)
    # Set only in trees with a tool that requires approval (absent from older histories): the turn's
    # journal key, stable across the activity's re-runs (default: "<workflow run id>/<activity id>"), and
    # the decisions taken so far by their call's number in the turn ({"1": ApprovalDecision as JSON}).
    journal_key: str | None = None
    decisions: dict[str, dict[str, Any]] | None = None
    budget: dict[str, Any] | None = None
    """The run's budgets and usage so far (``{"budgets", "used"}``) when it has budgets: the turn's
    in-process calls are checked against them, and the handoff carries :data:`BUDGET_USED` back."""


BUDGET_USED = "budget_used"
"""Key of a Python turn's handoff (popped by the workflow): what the turn used, as ``Usage.to_dict()``."""


@dataclass
class ModelCallInput:
    run_id: str
    spec: dict[str, Any]
    agent: str
    messages: list[dict[str, Any]]
    router: bool = False
    steps: list[Step] = field(default_factory=list)
    ord: list[int] | None = None  # the ord of the first step that will record the reply: the call's key (forks)


@dataclass
class ToolCallInput:
    run_id: str
    spec: dict[str, Any]
    agent: str
    tool: str
    args: dict[str, Any]
    ord_start: list[int]
    ord_end: list[int]
    quiet: bool = False
    steps: list[Step] = field(default_factory=list)
