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


# --- budgets (issue 12): checked BEFORE each turn, tool call and model call ---------------------------

BUDGET_FIELDS = ("maxTurns", "maxToolCalls", "maxTokens", "maxCostUSD")
DEFAULT_RESERVED_TOKENS = 4096
"""Completion tokens a model call reserves when its agent's ``model.maxTokens`` is unset."""
BUDGET_EXHAUSTED = "BudgetExhausted"
"""The condition reason of a run paused on a budget (``onExhausted: pause``)."""


@dataclass(frozen=True)
class Usage:
    """What a run used so far, against its budgets (the ONE ledger of a run, both executors)."""

    turns: int = 0
    tool_calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0

    def plus(self, other: Usage) -> Usage:
        return Usage(
            self.turns + other.turns,
            self.tool_calls + other.tool_calls,
            self.tokens + other.tokens,
            round(self.cost_usd + other.cost_usd, 9),
        )

    def minus(self, other: Usage) -> Usage:
        return Usage(
            self.turns - other.turns,
            self.tool_calls - other.tool_calls,
            self.tokens - other.tokens,
            round(self.cost_usd - other.cost_usd, 9),
        )

    def to_dict(self) -> dict[str, Any]:
        """The status shape: ``{turns, toolCalls, tokens, costUSD}``."""
        return {"turns": self.turns, "toolCalls": self.tool_calls, "tokens": self.tokens, "costUSD": self.cost_usd}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Usage:
        data = data or {}
        return cls(
            int(data.get("turns") or 0),
            int(data.get("toolCalls") or 0),
            int(data.get("tokens") or 0),
            float(data.get("costUSD") or 0.0),
        )


@dataclass(frozen=True)
class Exhausted:
    """A budget that does not allow the next turn / tool call / model call."""

    budget: str
    """The field: ``maxTurns``, ``maxToolCalls``, ``maxTokens`` or ``maxCostUSD``."""
    limit: float
    used: float
    needed: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "limit": self.limit,
            "used": self.used,
            "needed": self.needed,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Exhausted:
        return cls(data["budget"], data["limit"], data["used"], data["needed"], data["message"])


def effective_budgets(tree: Mapping[str, Any] | None, run: Mapping[str, Any] | None) -> dict[str, Any]:
    """A run's budgets: the AgentRun's ``spec.budgets`` over the AgentTree's ``budgets``, field by field."""
    merged = {k: v for k, v in (tree or {}).items() if v is not None}
    merged.update({k: v for k, v in (run or {}).items() if v is not None})
    return merged


def on_exhausted(budgets: Mapping[str, Any] | None) -> str:
    """``fail`` (default) or ``pause``."""
    return str((budgets or {}).get("onExhausted") or "fail")


def reserved_tokens(model: Mapping[str, Any] | None) -> int:
    """Tokens a model call reserves: its ``max_tokens`` (``model.maxTokens``, else the default)."""
    return int((model or {}).get("maxTokens") or DEFAULT_RESERVED_TOKENS)


def call_cost(model: Mapping[str, Any] | None, prompt_tokens: int, completion_tokens: int) -> float:
    """USD of one model call at its ``model.pricing`` (0 without pricing)."""
    pricing = (model or {}).get("pricing") or {}
    cost = prompt_tokens * float(pricing.get("inputPerMillionTokens") or 0) + completion_tokens * float(
        pricing.get("outputPerMillionTokens") or 0
    )
    return round(cost / 1_000_000, 9)


def _exhausted(budget: str, limit: float, used: float, needed: float, what: str) -> Exhausted:
    unit = {"maxTurns": "turns", "maxToolCalls": "tool calls", "maxTokens": "tokens", "maxCostUSD": "USD"}[budget]
    shown_used = f"{used:.6f}".rstrip("0").rstrip(".") if budget == "maxCostUSD" else str(int(used))
    message = f"budget exhausted: spec.budgets.{budget} is {limit:g}; the run used {shown_used} {unit}"
    message += f" and {what} needs {needed:g} more" if needed else f", stopped before {what}"
    return Exhausted(budget, limit, used, needed, message)


def before_turn(used: Usage, budgets: Mapping[str, Any] | None) -> Exhausted | None:
    """Before an agent turn (a routed child, a nested one, an agent called as a tool); also stops a
    run whose tokens or cost are already above their budget (model calls reported after the fact)."""
    budgets = budgets or {}
    limit = budgets.get("maxTurns")
    if limit and used.turns + 1 > limit:
        return _exhausted("maxTurns", limit, used.turns, 1, "the next agent turn")
    if budgets.get("maxTokens") and used.tokens > budgets["maxTokens"]:
        return _exhausted("maxTokens", budgets["maxTokens"], used.tokens, 0, "the next agent turn")
    if budgets.get("maxCostUSD") and used.cost_usd > budgets["maxCostUSD"]:
        return _exhausted("maxCostUSD", budgets["maxCostUSD"], used.cost_usd, 0, "the next agent turn")
    return None


def before_tool_call(used: Usage, budgets: Mapping[str, Any] | None) -> Exhausted | None:
    """Before a tool call."""
    limit = (budgets or {}).get("maxToolCalls")
    if limit and used.tool_calls + 1 > limit:
        return _exhausted("maxToolCalls", limit, used.tool_calls, 1, "the next tool call")
    return None


def before_model_call(
    used: Usage, budgets: Mapping[str, Any] | None, model: Mapping[str, Any] | None
) -> Exhausted | None:
    """Before a model call with ``model`` (a ModelSpec dict): its ``max_tokens`` is reserved, in tokens
    and (at the output price) in USD. A call that does not fit is not made, so a run passes
    ``maxTokens`` by at most the prompt tokens of the last call it made."""
    budgets = budgets or {}
    reserve = reserved_tokens(model)
    limit = budgets.get("maxTokens")
    if limit and used.tokens + reserve > limit:
        return _exhausted("maxTokens", limit, used.tokens, reserve, "the next model call (its max_tokens)")
    cost_limit = budgets.get("maxCostUSD")
    if cost_limit:
        cost = call_cost(model, 0, reserve)
        if used.cost_usd + cost > cost_limit:
            return _exhausted("maxCostUSD", cost_limit, used.cost_usd, cost, "the next model call (its max_tokens)")
    return None


def budget_stop(state: SupervisorState | None, exhausted: Exhausted) -> Finish:
    """The run's end when a budget is exhausted and ``onExhausted`` is ``fail`` (or nobody can raise it)."""
    last = state.handoffs[-1] if state is not None and state.handoffs else {}
    return Finish("failed", exhausted.message, last.get("from_agent"), {}, BUDGET_EXCEEDED)


def paused_message(exhausted: Exhausted, run: str | None = None) -> str:
    """The ``paused`` progress message: which budget, and how to go on."""
    target = run or "NAMESPACE/RUN"
    flag = "--" + {"maxTurns": "max-turns", "maxToolCalls": "max-tool-calls", "maxTokens": "max-tokens"}.get(
        exhausted.budget, "max-cost-usd"
    )
    return f"{exhausted.message}; the run is paused: raise it with `agent-tree budget {target} {flag} N`"


def embedded_pause_note(exhausted: Exhausted) -> str:
    """Embedded runs have nobody to raise a budget: ``pause`` ends them like ``fail``, saying so."""
    return f"{exhausted.message} (onExhausted: pause applies to durable runs only; an embedded run fails)"


def fits(exhausted: Exhausted, used: Usage, budgets: Mapping[str, Any] | None) -> bool:
    """Whether ``budgets`` (raised since) now allow what ``exhausted`` refused."""
    limit = (budgets or {}).get(exhausted.budget)
    if not limit:
        return True
    now = {"maxTurns": used.turns, "maxToolCalls": used.tool_calls, "maxTokens": used.tokens}.get(
        exhausted.budget, used.cost_usd
    )
    return now + exhausted.needed <= limit
