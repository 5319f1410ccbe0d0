"""SupervisorOrchestrator: the embedded (in-process) executor of an agent tree.

Every routing decision and every stop (max steps, the deadline, the budgets) comes from
:mod:`agent_tree.policy`, which the durable Temporal workflow uses too; :mod:`agent_tree.turns` runs
the turns and fires the hooks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from agent_tree import approval_gate, ledger, policy, usage
from agent_tree.calls import error_message, maybe_await
from agent_tree.context import ToolRunner
from agent_tree.hooks import OrchestratorHooks
from agent_tree.models import SupervisorResult
from agent_tree.tree import AgentTree
from agent_tree.turns import MIN_TURN_SECONDS, budget_finish, clock, finish_result, supervise

__all__ = [
    "Planner",
    "SupervisorOrchestrator",
    "finish_result",
    "make_plan",
    "plan_thought",
    "plan_with_usage",
    "supervise",
]

Planner = Callable[[str], "dict[str, Any] | Awaitable[dict[str, Any]]"]


async def make_plan(planner: Planner | None, user_input: str) -> dict[str, Any] | None:
    """Call the planner; a planner that fails or returns a non-dict yields ``{"error": ...}``."""
    plan, _ = await plan_with_usage(planner, user_input)
    return plan


async def plan_with_usage(
    planner: Planner | None, user_input: str, deadline: float | None = None
) -> tuple[dict[str, Any] | None, list[dict]]:
    """:func:`make_plan`, plus the model calls the planner reported (``usage.report_model_usage``):
    a model supervisor's routing call, or a planner entrypoint's own model calls. A planner still
    running at ``deadline`` (a :data:`~agent_tree.turns.clock` time) is stopped: ``{"error": ...}``."""
    if planner is None:
        return None, []
    calls: list[dict[str, Any]] = []

    async def collect(record: dict[str, Any]) -> None:
        calls.append(record)

    with usage.collecting(collect):
        try:
            planning = maybe_await(planner(user_input))
            if deadline is not None:
                planning = asyncio.wait_for(planning, max(MIN_TURN_SECONDS, deadline - clock()))
            plan = await planning
        except Exception as exc:
            return {"error": f"planner raised {error_message(exc)}"}, calls
    if not isinstance(plan, dict):
        return {"error": f"planner returned {type(plan).__name__}, expected a dict"}, calls
    return plan, calls


def plan_thought(plan: dict[str, Any]) -> str:
    """The reasoning step recorded for a plan; the durable executor records the same text."""
    return f"plan: {json.dumps(plan, ensure_ascii=False, default=str)}"


class SupervisorOrchestrator:
    """Plan (optionally), then route the input through the root's children until one answers.

    Args:
        tree: the AgentTree to run; its root is the supervisor.
        hooks: lifecycle callbacks (see :class:`OrchestratorHooks`).
        max_steps: upper bound on child turns; reaching it ends the run with ``max_steps_reached``.
        planner: optional ``async (user_input) -> dict``; its output is recorded as ``result.plan``
            and may set ``{"route": [...]}`` to choose the order children are tried in.
        timeout_seconds: an AgentRun's ``timeoutSeconds``: no turn starts after it, a running turn is
            stopped, and the run fails with ``policy.TIMED_OUT`` (None: no deadline).
        budgets: the run's budgets (``spec.budgets`` over the tree's, camelCase keys: maxTurns,
            maxToolCalls, maxTokens, maxCostUSD, onExhausted), counted in ONE ledger across nested
            supervisors and agents called as tools and checked before each turn, tool call and model
            call; the run fails with reason ``BudgetExceeded`` when one is exhausted (``pause`` too:
            an embedded run has nobody to raise it).
        approve: ``async (request: ApprovalRequest) -> decision``, asked before each call of a tool that
            requires approval (``approval`` in its spec, ``Tool.approval``); returns an ApprovalDecision,
            ``{"decision": "approve"|"reject", "reason": ...}``, ``"approve"``/``"reject"`` or a bool. It
            is given ``timeoutSeconds`` (then ``onTimeout`` applies). None: such calls are rejected, the
            reason saying how to approve them (see agent_tree.approval_gate).
        approver_name: ``decided_by.username`` of decisions whose callback names nobody.
    """

    def __init__(
        self,
        tree: AgentTree,
        hooks: OrchestratorHooks | None = None,
        max_steps: int = 10,
        planner: Planner | None = None,
        tool_runner: ToolRunner | None = None,
        *,
        timeout_seconds: float | None = None,
        budgets: Mapping[str, Any] | None = None,
        approve: approval_gate.Approver | None = None,
        approver_name: str = "embedded",
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        if timeout_seconds is not None and timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be above 0, got {timeout_seconds}")
        self.tree = tree
        self.hooks = hooks or OrchestratorHooks()
        self.max_steps = max_steps
        self.planner = planner
        self.tool_runner = tool_runner
        self.timeout_seconds = timeout_seconds
        self.budgets = dict(budgets or {})
        self.approve = approve
        self.approver_name = approver_name

    async def run(self, user_input: str, context: dict[str, Any] | None = None) -> SupervisorResult:
        """Run the tree on ``user_input`` and return the supervisor's result."""
        deadline = None if self.timeout_seconds is None else clock() + self.timeout_seconds
        gate = approval_gate.EmbeddedGate(
            self.approve or _no_approver,
            self.hooks,
            deadline=deadline,
            clock=clock,
            default_user=self.approver_name,
        )
        with approval_gate.gated(gate):
            return await self._run(user_input, context, deadline)

    async def _run(self, user_input: str, context: dict[str, Any] | None, deadline: float | None) -> SupervisorResult:
        root = self.tree.root
        await self.hooks.fire("on_node_start", root, user_input)
        run_ledger = ledger.Ledger(self.budgets)
        with ledger.using(run_ledger):
            try:
                plan, calls = await plan_with_usage(self.planner, user_input, deadline)
            except ledger.BudgetStop as stop:  # the routing / planner model call did not fit
                decision = budget_finish(None, stop.exhausted, run_ledger)
                plan, calls, result = None, [], finish_result(policy.start([], 1), decision)
            else:
                if plan is not None:
                    await self.hooks.fire("on_reasoning_step", root.name, plan_thought(plan))
                result = await supervise(
                    root,
                    user_input,
                    context,
                    hooks=self.hooks,
                    max_steps=self.max_steps,
                    plan=plan,
                    tool_runner=self.tool_runner,
                    deadline=deadline,
                    run_ledger=run_ledger,
                )
        # The planner's (or the model supervisor's routing) model calls are the run's tokens too.
        planned = usage.total_tokens(calls)
        result = result.model_copy(
            update={"token_usage": result.token_usage + planned, "usage": run_ledger.used.to_dict()}
        )
        await self.hooks.fire("on_node_end", root, result)
        return result


async def _no_approver(request: Any) -> dict[str, Any]:
    return {
        "decision": "reject",
        "decided_by": "embedded",
        "reason": (
            "this run has no approver: pass approve=callback to SupervisorOrchestrator "
            "(agent-tree run: answer on a terminal, or --approve-all / --reject-all)"
        ),
    }
