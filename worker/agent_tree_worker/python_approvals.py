"""Approvals in a Python agent's turn (one activity, which cannot wait for a person).

The turn runs with a :class:`DurableGate`: the N-th call of a tool that requires approval either has a
decision in the activity's input (``decisions[str(N)]``: approve runs it, reject returns
``ToolResult(status="rejected")`` to the agent code) or ends the activity with
``{"needs_approval": {...}}``. The workflow then asks for approval and waits durably like for a model
agent's call, and runs the turn again with the decision and the SAME journal key: calls completed
before come from the journal, not run again. So a Python agent must make the same calls in the same
order when its turn runs again (the journal already assumes it for retries).
"""

from __future__ import annotations

from typing import Any

from agent_tree import approvals
from agent_tree.contract.control import ApprovalDecision
from agent_tree.models import ToolResult

NEEDS_APPROVAL = "needs_approval"
"""Key of a Python turn's result that asks the workflow for a decision instead of a handoff."""


class NeedsApproval(BaseException):
    """Ends a Python agent's turn at a call that needs a decision (a BaseException, so the agent's own
    ``except Exception`` and ``run_turn`` let it through, like ``RetryTurn``)."""

    def __init__(self, seq: int, agent: str, tool: str, args: dict[str, Any], approval: dict[str, Any]) -> None:
        super().__init__(f"call {seq} ({tool}) needs approval")
        self.ask = {"seq": seq, "agent": agent, "tool": tool, "args": args, "approval": approval}


class DivergedTurn(BaseException):
    """The turn's calls differ from its earlier run's: a decision cannot be matched to its call."""


def decision_entry(tool: str, decision: ApprovalDecision) -> dict[str, Any]:
    """``decisions[str(seq)]`` of the activity's input: the decision and the tool it was taken for."""
    return {"tool": tool, **decision.model_dump(mode="json")}


class DurableGate:
    """The gate of one run of a Python turn's activity (see agent_tree.approval_gate)."""

    def __init__(self, decisions: dict[str, dict[str, Any]]) -> None:
        self.decisions = decisions
        self.seq = 0

    async def decide(self, agent: str, tool: str, args: dict[str, Any], approval: dict[str, Any]) -> ToolResult | None:
        self.seq += 1
        taken = self.decisions.get(str(self.seq))
        if taken is None:
            raise NeedsApproval(self.seq, agent, tool, args, approval)
        if taken.get("tool") != tool:
            raise DivergedTurn(
                f"call {self.seq} that needs approval is {tool!r} now but was {taken.get('tool')!r} when the "
                "approval was asked: a Python agent must make the same calls in the same order when its turn "
                "runs again (docs/run-control.md)"
            )
        decision = ApprovalDecision.model_validate(taken)
        if decision.decision == "approve":
            return None
        return ToolResult.model_validate(approvals.rejected_result(tool, decision))
