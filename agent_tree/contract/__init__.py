"""What crosses a process boundary between the operator, the workers, the CLI, tests and benchmarks.

One place for the workflow, query, activity and memo names, the typed run input, progress and result
(Pydantic models, carried by temporalio's Pydantic data converter), the ONE step vocabulary (the
embedded hooks, the workflow, the Redis stream, the PostgreSQL history and every renderer use it),
the stream encoding of a step, the tree revision hash and the run input builder.

This package is pure (no temporalio import): the client factory and the one ``start_run`` live in
:mod:`agent_tree.contract.temporal`. The operator imports the contract and never ``agent_tree_worker``;
the worker imports it and never ``agent_tree_operator``.

The names below are in committed workflow histories: changing one breaks the replay of runs that
are still going (``tests/unit/test_replay.py``).
"""

from __future__ import annotations

from agent_tree.contract.run import (
    RESUME_FIELDS,
    RUN_STATUSES,
    Progress,
    RunInput,
    RunInputError,
    RunResult,
    RunStatus,
    run_input,
    spec_revision,
)
from agent_tree.contract.steps import (
    AGENT_END,
    AGENT_START,
    APPROVAL_DECIDED,
    APPROVAL_REQUESTED,
    BUDGET_EXHAUSTED,
    BUDGETS_CHANGED,
    HANDOFF,
    HOOK_STEP_TYPES,
    MODEL_DELTA,
    MODEL_USAGE,
    REASONING,
    RUN_END,
    STEP_TYPES,
    STREAM_ENTRY_LIMIT,
    TOOL_END,
    TOOL_START,
    TRANSIENT_TYPES,
    Step,
    StepType,
    decode_step,
    dumps,
    encode_model_delta,
    encode_run_end,
    encode_step,
    is_transient,
    json_size,
    ord_str,
    parse_ord,
    scrub,
)

# --- workflows, queries, memo ------------------------------------------------------------------
RUN_WORKFLOW = "AgentRunWorkflow"
"""The workflow of a run, on the root agent's task queue."""
TURN_WORKFLOW = "AgentWorkflow"
"""Engine v1's child workflow per agent turn: kept registered until the runs v1 started have ended."""
PROGRESS_QUERY = "progress"
"""Query answering :class:`Progress` (engine v1: the same fields in camelCase)."""
MEMO_REVISION = "treeRevision"
"""Memo key: the tree revision the run is pinned to (a restarted operator reads it from Temporal)."""
MEMO_RUN = "agentRun"
"""Memo key: ``NAMESPACE/NAME`` of the AgentRun."""
TIMEOUT_GRACE_SECONDS = 300
"""The workflow ends itself at its deadline; Temporal's execution timeout (deadline + this) is a backstop."""

# --- activities (workflow code refers to them by name, never by importing their implementation) ---
START_RUN = "agent_tree.start_run"
FINISH_RUN = "agent_tree.finish_run"
RECORD_STEPS = "agent_tree.record_steps"
PLAN = "agent_tree.plan"
PYTHON_TURN = "agent_tree.python_turn"
MODEL_CALL = "agent_tree.model_call"
TOOL_CALL = "agent_tree.tool_call"
REUSE_DECISION = "agent_tree.reuse_decision"
"""A fork's approval at or before its fork step: the source's decision (docs/run-control.md)."""

__all__ = [
    "AGENT_END",
    "AGENT_START",
    "APPROVAL_DECIDED",
    "APPROVAL_REQUESTED",
    "BUDGETS_CHANGED",
    "BUDGET_EXHAUSTED",
    "FINISH_RUN",
    "HANDOFF",
    "HOOK_STEP_TYPES",
    "MEMO_REVISION",
    "MEMO_RUN",
    "MODEL_CALL",
    "MODEL_DELTA",
    "MODEL_USAGE",
    "PLAN",
    "PROGRESS_QUERY",
    "PYTHON_TURN",
    "REASONING",
    "RECORD_STEPS",
    "RESUME_FIELDS",
    "REUSE_DECISION",
    "RUN_END",
    "RUN_STATUSES",
    "RUN_WORKFLOW",
    "START_RUN",
    "STEP_TYPES",
    "STREAM_ENTRY_LIMIT",
    "TIMEOUT_GRACE_SECONDS",
    "TOOL_CALL",
    "TOOL_END",
    "TOOL_START",
    "TRANSIENT_TYPES",
    "TURN_WORKFLOW",
    "Progress",
    "RunInput",
    "RunInputError",
    "RunResult",
    "RunStatus",
    "Step",
    "StepType",
    "decode_step",
    "dumps",
    "encode_model_delta",
    "encode_run_end",
    "encode_step",
    "is_transient",
    "json_size",
    "ord_str",
    "parse_ord",
    "run_input",
    "scrub",
    "spec_revision",
]
