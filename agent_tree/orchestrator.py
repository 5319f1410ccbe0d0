"""SupervisorOrchestrator: the embedded (in-process) executor of an agent tree.

Every routing decision comes from :mod:`agent_tree.policy`, which the durable Temporal workflow
uses too; this module only runs the turns and fires the hooks.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from agent_tree import policy, usage
from agent_tree.context import ToolRunner, run_turn
from agent_tree.hooks import OrchestratorHooks
from agent_tree.models import HandoffResult, SupervisorResult
from agent_tree.node import error_message, maybe_await

if TYPE_CHECKING:
    from agent_tree.node import AgentNode
    from agent_tree.tree import AgentTree

Planner = Callable[[str], "dict[str, Any] | Awaitable[dict[str, Any]]"]


async def make_plan(planner: Planner | None, user_input: str) -> dict[str, Any] | None:
    """Call the planner; a planner that fails or returns a non-dict yields ``{"error": ...}``."""
    plan, _ = await plan_with_usage(planner, user_input)
    return plan


async def plan_with_usage(planner: Planner | None, user_input: str) -> tuple[dict[str, Any] | None, list[dict]]:
    """:func:`make_plan`, plus the model calls the planner reported (``usage.report_model_usage``):
    a model supervisor's routing call, or a planner entrypoint's own model calls."""
    if planner is None:
        return None, []
    calls: list[dict[str, Any]] = []

    async def collect(record: dict[str, Any]) -> None:
        calls.append(record)

    with usage.collecting(collect):
        try:
            plan = await maybe_await(planner(user_input))
        except Exception as exc:
            return {"error": f"planner raised {error_message(exc)}"}, calls
    if not isinstance(plan, dict):
        return {"error": f"planner returned {type(plan).__name__}, expected a dict"}, calls
    return plan, calls


def plan_thought(plan: dict[str, Any]) -> str:
    """The reasoning step recorded for a plan; the durable executor records the same text."""
    return f"plan: {json.dumps(plan, ensure_ascii=False, default=str)}"


def finish_result(state: policy.SupervisorState, decision: policy.Finish) -> SupervisorResult:
    handoffs = [HandoffResult.model_validate(h, strict=False) for h in state.handoffs]
    return SupervisorResult(
        answer=decision.answer,
        status=decision.status,
        plan=state.plan,
        final_agent=decision.final_agent,
        payload=decision.payload,
        steps=state.steps,
        handoffs=handoffs,
        context={k: v for k, v in state.context.items() if k != policy.CONTEXT_HISTORY_KEY},
        token_usage=sum(h.traces.token_usage for h in handoffs),
    )


async def supervise(
    node: AgentNode,
    user_input: str,
    context: dict[str, Any] | None = None,
    *,
    hooks: OrchestratorHooks | None = None,
    max_steps: int = 10,
    plan: dict[str, Any] | None = None,
    tool_runner: ToolRunner | None = None,
) -> SupervisorResult:
    """Run the supervisor loop of ``node`` over its children."""
    hooks = hooks or OrchestratorHooks()
    children = {child.name: child for child in node.children}
    state = policy.start(list(children), max_steps, context, plan)
    while isinstance(decision := policy.decide(state), policy.Route):
        child = children[decision.agent]
        await hooks.fire("on_node_start", child, user_input)
        handoff = await run_turn(
            child,
            user_input,
            decision.context,
            hooks=hooks,
            plan=state.plan,
            step=decision.step,
            tool_runner=tool_runner,
            max_steps=max_steps,
        )
        handoff = handoff.model_copy(update={"to_agent": node.name})
        await hooks.fire("on_node_end", child, handoff)
        await hooks.fire("on_handoff", handoff)
        state = policy.observe(state, handoff)
    return finish_result(state, decision)


class SupervisorOrchestrator:
    """Plan (optionally), then route the input through the root's children until one answers.

    Args:
        tree: the AgentTree to run; its root is the supervisor.
        hooks: lifecycle callbacks (see :class:`OrchestratorHooks`).
        max_steps: upper bound on child turns; reaching it ends the run with ``max_steps_reached``.
        planner: optional ``async (user_input) -> dict``; its output is recorded as ``result.plan``
            and may set ``{"route": [...]}`` to choose the order children are tried in.
    """

    def __init__(
        self,
        tree: AgentTree,
        hooks: OrchestratorHooks | None = None,
        max_steps: int = 10,
        planner: Planner | None = None,
        tool_runner: ToolRunner | None = None,
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        self.tree = tree
        self.hooks = hooks or OrchestratorHooks()
        self.max_steps = max_steps
        self.planner = planner
        self.tool_runner = tool_runner

    async def run(self, user_input: str, context: dict[str, Any] | None = None) -> SupervisorResult:
        """Run the tree on ``user_input`` and return the supervisor's result."""
        root = self.tree.root
        await self.hooks.fire("on_node_start", root, user_input)
        plan, calls = await plan_with_usage(self.planner, user_input)
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
        )
        # The planner's (or the model supervisor's routing) model calls are the run's tokens too.
        result = result.model_copy(update={"token_usage": result.token_usage + usage.total_tokens(calls)})
        await self.hooks.fire("on_node_end", root, result)
        return result
