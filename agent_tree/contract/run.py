"""A run's typed input, progress and result, the tree revision hash and the one input builder.

These models cross process boundaries through Temporal (temporalio's Pydantic data converter, see
:mod:`agent_tree.contract.temporal`): their JSON is the history's, so a field is never renamed or
reordered (committed histories in ``tests/unit/histories/`` replay against them).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, get_args

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_serializer

from agent_tree.contract.control import ApprovalRequest, ForkSource
from agent_tree.spec import AgentTreeSpec, cost_problems
from agent_tree.spec_runs import MAX_INPUT_CHARS

RunStatus = Literal["completed", "failed", "max_steps_reached", "cancelled"]
"""How a durable run ended (the result's ``status``; ``agent_tree.models.RunStatus`` plus cancelled)."""
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
"""Every final status: the history's ``runs.status`` of a run that has ended."""


class RunInputError(ValueError):
    """A run that cannot be started as given; the message names the field."""


RESUME_FIELDS = ("continue_after_events", "resume", "fork")
"""RunInput fields a run's JSON carries only when set."""


class RunInput(BaseModel):
    """Input of ``AgentRunWorkflow``: everything a run needs, including the pinned tree spec."""

    model_config = ConfigDict(extra="ignore")

    namespace: str
    tree: str
    name: str
    uid: str
    spec: dict[str, Any]
    revision: str
    input: str
    context: dict[str, Any] = Field(default_factory=dict)
    max_steps: int | None = None
    timeout_seconds: int = 3600
    budgets: dict[str, Any] | None = None
    # Engine v2, continue-as-new between the root's turns (docs/durable-runs.md, "History size"); absent
    # from the JSON while unset, so a run that never continues has v1's input byte for byte.
    continue_after_events: int | None = None
    """History length at which the run continues as new before its next root turn (None: 10,000)."""
    resume: dict[str, Any] | None = None
    """Set only by the workflow itself when it continues as new: the run's state at a turn boundary."""
    fork: ForkSource | None = None
    """A retried or forked run: calls up to the source's step are answered from its recorded results
    (docs/run-control.md, "Retry and fork"). Absent from the JSON while unset."""

    @model_serializer(mode="wrap")
    def _without_unset_engine_fields(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        for key in RESUME_FIELDS:
            if data.get(key) is None:
                data.pop(key, None)
        return data


class Progress(BaseModel):
    """The ``progress`` query's answer (followers use it when Redis is away).

    Written in snake_case; engine v1 answered in camelCase (``currentAgent``, ``tokenUsage``), and
    both spellings are read, so a run started by v1 is still followed after an upgrade.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    phase: str = "Pending"
    current_agent: str | None = Field(None, validation_alias=AliasChoices("current_agent", "currentAgent"))
    steps: int = 0
    token_usage: int = Field(0, validation_alias=AliasChoices("token_usage", "tokenUsage"))
    plan: dict[str, Any] | None = None
    approvals: list[ApprovalRequest] = Field(default_factory=list)
    """Tool calls waiting for a decision now (phase ``AwaitingApproval`` while any is)."""
    paused: str | None = None
    """Set while a budget with ``onExhausted: pause`` holds the run (phase ``Paused``): which, and the fix."""
    usage: dict[str, Any] = Field(default_factory=dict)
    """The run's usage so far against its budgets: turns, toolCalls, tokens, costUSD."""


class RunResult(BaseModel):
    """What ``AgentRunWorkflow`` returns: the summary the operator writes into the AgentRun's status."""

    model_config = ConfigDict(extra="ignore")

    answer: str
    status: RunStatus
    final_agent: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    plan: dict[str, Any] | None = None
    steps: int = 0
    token_usage: int = 0
    tree_revision: str | None = None
    workflow_id: str | None = None
    reason: str | None = None
    """Set when a limit of the policy stopped the run (``BudgetExceeded``, ``DeadlineExceeded``): the
    AgentRun's condition reason. Absent from the JSON while unset (results of older runs have none)."""
    usage: dict[str, Any] | None = None
    """What a run with budgets used: ``{turns, toolCalls, tokens, costUSD}`` (absent without budgets)."""

    @model_serializer(mode="wrap")
    def _without_unset_reason(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        for key in ("reason", "usage"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


def spec_revision(spec: AgentTreeSpec | dict[str, Any]) -> str:
    """Content hash of a tree spec: the AgentTree's ``status.revision`` and what a run is pinned to."""
    data = spec.model_dump(mode="json") if isinstance(spec, AgentTreeSpec) else spec
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def run_input(
    namespace: str,
    tree: str,
    spec: AgentTreeSpec | dict[str, Any],
    *,
    name: str,
    uid: str,
    input: str,
    context: dict[str, Any] | None = None,
    max_steps: int | None = None,
    timeout_seconds: int = 3600,
    budgets: dict[str, Any] | None = None,
    revision: str | None = None,
    continue_after_events: int | None = None,
    fork: ForkSource | None = None,
) -> RunInput:
    """The workflow input of a run, with the tree spec snapshotted (a later tree edit never changes it).

    Args:
        namespace, tree, name, uid: the AgentRun (the workflow id derives from namespace, name, uid).
        spec: the tree spec; a dict is validated as an ``AgentTreeSpec`` first.
        revision: the spec's revision when the caller computed it already (else :func:`spec_revision`).
        continue_after_events: history length at which the run continues as new between two root
            turns (None: the engine's default, 10,000 events; tests and benchmarks lower it).
        fork: the source of a retried or forked run (its recorded calls up to a step are reused).

    Raises:
        RunInputError: the input is over the AgentRun limit (it would not fit in Temporal history).
    """
    if len(input) > MAX_INPUT_CHARS:
        raise RunInputError(
            f"spec.input: the input is {len(input)} characters; the limit is {MAX_INPUT_CHARS}. "
            "Put large documents somewhere the agents can fetch them and pass a reference"
        )
    model = spec if isinstance(spec, AgentTreeSpec) else AgentTreeSpec.model_validate(spec)
    data = model.model_dump(mode="json")
    cost = (budgets or {}).get("maxCostUSD")
    if problems := cost_problems(model, cost, "spec.budgets.maxCostUSD"):
        raise RunInputError("; ".join(problems))
    return RunInput(
        namespace=namespace,
        tree=tree,
        name=name,
        uid=uid,
        spec=data,
        revision=revision or spec_revision(data),
        input=input,
        context=dict(context or {}),
        max_steps=max_steps,
        timeout_seconds=timeout_seconds,
        budgets=budgets,
        continue_after_events=continue_after_events,
        fork=fork,
    )
