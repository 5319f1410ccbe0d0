"""The typed results exchanged between agents: tool results, handoffs and the supervisor's answer.

All models are strict: a HandoffResult that does not match its schema is rejected, never coerced,
because the supervisor's decisions depend on it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

HandoffStatus = Literal["ok", "needs_more_info", "failed"]
ToolStatus = Literal["ok", "error", "rejected"]
"""``rejected``: the tool needed an approval and was refused (or timed out); it did not run."""
RunStatus = Literal["completed", "failed", "max_steps_reached"]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class ToolResult(_Strict):
    """The outcome of one tool call. A tool that raises becomes ``status="error"`` with the message; a call
    that a person rejected (approvals) is ``status="rejected"``, ``error`` naming who and why."""

    tool_name: str
    output: Any = None
    status: ToolStatus = "ok"
    error: str | None = None
    duration_ms: float | None = None


class HandoffTraces(_Strict):
    """What an agent did during its turn: tools it called, their results, its reasoning, its tokens."""

    tool_calls: list[str] = Field(default_factory=list)
    tool_results: list[ToolResult] = Field(default_factory=list)
    reasoning_steps: list[str] = Field(default_factory=list)
    token_usage: int = Field(default=0, ge=0)


class HandoffResult(_Strict):
    """What a child agent hands back to its supervisor when it gives up control."""

    from_agent: str = Field(min_length=1)
    to_agent: str = "supervisor"
    status: HandoffStatus
    summary: str
    payload: dict[str, Any] = Field(default_factory=dict)
    artifacts: list[str] = Field(default_factory=list)
    traces: HandoffTraces = Field(default_factory=HandoffTraces)


class SupervisorResult(_Strict):
    """The final answer of a supervised run, with everything needed to audit how it was reached."""

    answer: str
    status: RunStatus
    plan: dict[str, Any] | None = None
    final_agent: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    steps: int = 0
    handoffs: list[HandoffResult] = Field(default_factory=list)
    context: dict[str, Any] = Field(default_factory=dict)
    token_usage: int = 0
    reason: str | None = None
    """Why the run stopped when a limit stopped it (``BudgetExceeded``, ``DeadlineExceeded``), else None."""
    usage: dict[str, Any] | None = None
    """What the run used against its budgets: ``{turns, toolCalls, tokens, costUSD}`` (the run's ledger)."""
