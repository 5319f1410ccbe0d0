"""The supervisor's decisions as a pure, deterministic state machine.

Both executors use it: the embedded :class:`~agent_tree.orchestrator.SupervisorOrchestrator` and the
durable Temporal ``AgentRunWorkflow``. Given the same handoffs they take the same decisions, so an
embedded run and a durable run of the same tree produce the same step sequence.

The loop::

    state = start(children, max_steps, context, plan)
    while isinstance(d := decide(state), Route):
        handoff = <run d.agent with d.context>
        state = observe(state, handoff)
    # d is a Finish

Rules (from the design seed): route to the next child; ``ok`` finishes the run; ``needs_more_info``
merges the handoff's payload into the context and routes to the next child; ``failed`` routes to the
next child; no child left means the run failed; ``max_steps`` child turns stop the loop.

The other stops of a run are decided here too, for both executors, with the same words:

    while isinstance(d := decide(state), Route):
        if stop := deadline_reached(now, deadline, state):   # before each turn
            d = stop; break
        state = observe(state, <run d.agent>)
        tokens, tool_calls = <the run's totals so far>
        if stop := over_budget(state, tokens, tool_calls, budgets):   # after each turn
            d = stop; break

State is a plain JSON-serialisable dict-friendly dataclass so a workflow can carry it in history.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from agent_tree.models import HandoffResult, RunStatus

CONTEXT_HISTORY_KEY = "_handoffs"
DEFAULT_MAX_STEPS = 10
TIMED_OUT = "the run timed out before an agent answered"
BUDGET_EXCEEDED = "BudgetExceeded"
"""The reason of a run the policy stopped on a budget (AgentRun condition reason, result ``reason``)."""
DEADLINE_EXCEEDED = "DeadlineExceeded"
"""The reason of a run the policy stopped at its deadline (``timeoutSeconds``)."""


@dataclass(frozen=True)
class Route:
    """Decision: give control to ``agent`` with this ``context``."""

    agent: str
    context: dict[str, Any]
    step: int


@dataclass(frozen=True)
class Finish:
    """Decision: the run is over."""

    status: RunStatus
    answer: str
    final_agent: str | None
    payload: dict[str, Any]
    reason: str | None = None
    """Why the policy stopped the run, when a limit did (:data:`BUDGET_EXCEEDED`,
    :data:`DEADLINE_EXCEEDED`); None when the agents' handoffs ended it."""


@dataclass(frozen=True)
class SupervisorState:
    """Everything the supervisor knows between two decisions."""

    route: tuple[str, ...]
    max_steps: int
    context: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] | None = None
    position: int = 0
    steps: int = 0
    handoffs: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": list(self.route),
            "max_steps": self.max_steps,
            "context": self.context,
            "plan": self.plan,
            "position": self.position,
            "steps": self.steps,
            "handoffs": list(self.handoffs),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SupervisorState:
        return cls(
            route=tuple(data["route"]),
            max_steps=data["max_steps"],
            context=dict(data.get("context") or {}),
            plan=data.get("plan"),
            position=data.get("position", 0),
            steps=data.get("steps", 0),
            handoffs=tuple(data.get("handoffs") or ()),
        )


class PolicyError(ValueError):
    """The supervisor was configured in a way that cannot run (e.g. ``max_steps`` below 1)."""


def route_order(children: list[str] | tuple[str, ...], plan: dict[str, Any] | None) -> tuple[str, ...]:
    """Order in which children are tried.

    A planner may return ``{"route": ["child-a", "child-b"]}`` to choose the order; names that are not
    children are ignored, and children the plan left out are tried afterwards in tree order, so a
    plan can reorder but never hide a child.
    """
    kids = tuple(children)
    planned = plan.get("route") if isinstance(plan, dict) else None
    if not isinstance(planned, list | tuple):
        return kids
    first = [name for name in dict.fromkeys(planned) if isinstance(name, str) and name in kids]
    return (*first, *(name for name in kids if name not in first))


def start(
    children: list[str] | tuple[str, ...],
    max_steps: int,
    context: dict[str, Any] | None = None,
    plan: dict[str, Any] | None = None,
) -> SupervisorState:
    """Initial state for a supervisor with these children."""
    if max_steps < 1:
        raise PolicyError(f"max_steps must be at least 1, got {max_steps}")
    return SupervisorState(
        route=route_order(children, plan), max_steps=max_steps, context=dict(context or {}), plan=plan
    )


def decide(state: SupervisorState) -> Route | Finish:
    """The next decision. Pure: the same state always gives the same decision."""
    last = state.handoffs[-1] if state.handoffs else None
    if last is not None and last["status"] == "ok":
        return Finish("completed", last["summary"], last["from_agent"], dict(last.get("payload") or {}))
    if not state.route:
        return Finish("failed", "the supervisor has no children to route to", None, {})
    if state.position >= len(state.route):
        answer = "all children failed or asked for more information"
        if last and last["summary"]:
            answer = f"{answer}; last ({last['from_agent']}): {last['summary']}"
        return Finish(
            "failed",
            answer,
            last["from_agent"] if last else None,
            dict(last.get("payload") or {}) if last else {},
        )
    if state.steps >= state.max_steps:
        return Finish(
            "max_steps_reached",
            f"stopped after max_steps={state.max_steps} child turns without an ok handoff",
            last["from_agent"] if last else None,
            dict(last.get("payload") or {}) if last else {},
        )
    return Route(state.route[state.position], dict(state.context), state.steps + 1)


def observe(state: SupervisorState, handoff: HandoffResult | dict[str, Any]) -> SupervisorState:
    """Fold one child's handoff into the state."""
    data = handoff.model_dump(mode="json") if isinstance(handoff, HandoffResult) else dict(handoff)
    context = dict(state.context)
    if data["status"] == "needs_more_info":
        context.update(data.get("payload") or {})
        context[CONTEXT_HISTORY_KEY] = [
            *context.get(CONTEXT_HISTORY_KEY, []),
            {"from_agent": data["from_agent"], "summary": data["summary"]},
        ]
    return replace(
        state,
        context=context,
        position=state.position + 1,
        steps=state.steps + 1,
        handoffs=(*state.handoffs, data),
    )


def max_steps(run_max_steps: int | None, tree_max_steps: int | None) -> int:
    """The child turns a run may take: the AgentRun's ``maxSteps``, else the tree's, else 10."""
    return run_max_steps or tree_max_steps or DEFAULT_MAX_STEPS


def budget_exceeded(tokens: int, tool_calls: int, budgets: Mapping[str, Any] | None) -> str | None:
    """Which budget (an AgentRun's ``spec.budgets``, camelCase keys) the run's totals are above, or None.

    A budget is exceeded when the total is ABOVE it: ``maxToolCalls: 1`` allows one call.
    """
    budgets = budgets or {}
    if budgets.get("maxTokens") and tokens > budgets["maxTokens"]:
        return f"token budget exceeded: {tokens} tokens used, spec.budgets.maxTokens is {budgets['maxTokens']}"
    if budgets.get("maxToolCalls") and tool_calls > budgets["maxToolCalls"]:
        return f"tool call budget exceeded: {tool_calls} calls, spec.budgets.maxToolCalls is {budgets['maxToolCalls']}"
    return None


def over_budget(
    state: SupervisorState, tokens: int, tool_calls: int, budgets: Mapping[str, Any] | None
) -> Finish | None:
    """After a turn: the run fails when a budget is exceeded and it would route to another child.

    An ``ok`` handoff (or the end of the route) still finishes the run as :func:`decide` says: the work
    that was paid for is not thrown away. ``tokens`` and ``tool_calls`` are the run's totals so far.
    """
    if not state.handoffs:
        return None
    reason = budget_exceeded(tokens, tool_calls, budgets)
    if reason is None or not isinstance(decide(state), Route):
        return None
    last = state.handoffs[-1]
    return Finish("failed", reason, last["from_agent"], dict(last.get("payload") or {}), BUDGET_EXCEEDED)


def deadline_reached(now: float, deadline: float | None, state: SupervisorState) -> Finish | None:
    """Before a turn: the run fails once ``now`` reaches ``deadline`` (same clock, seconds; None: never)."""
    if deadline is None or now < deadline:
        return None
    last = state.handoffs[-1] if state.handoffs else {}
    return Finish("failed", TIMED_OUT, last.get("from_agent"), {}, DEADLINE_EXCEEDED)
