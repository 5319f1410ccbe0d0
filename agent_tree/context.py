"""RunContext: what an agent's behaviour receives, and ``run_turn`` which runs one agent turn."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agent_tree import output_schema, usage
from agent_tree.hooks import OrchestratorHooks
from agent_tree.models import HandoffResult, HandoffStatus, HandoffTraces, ToolResult
from agent_tree.node import error_message, maybe_await

if TYPE_CHECKING:
    from agent_tree.models import SupervisorResult
    from agent_tree.node import AgentNode

ToolRunner = Callable[["AgentNode", str, dict[str, Any]], Awaitable[ToolResult]]


async def _direct_tool_runner(node: AgentNode, name: str, args: dict[str, Any]) -> ToolResult:
    return await node.run_tool(name, **args)


class RunContext:
    """The view of a run an agent gets during its turn.

    Agents call tools through :meth:`call_tool` (so hooks fire, traces are recorded and, in durable
    mode, each call is journaled), record thoughts with :meth:`reason`, and end their turn by
    returning :meth:`ok`, :meth:`needs_more_info` or :meth:`failed` (or any HandoffResult).
    """

    def __init__(
        self,
        node: AgentNode,
        input: str,
        context: dict[str, Any] | None = None,
        *,
        plan: dict[str, Any] | None = None,
        step: int = 0,
        hooks: OrchestratorHooks | None = None,
        tool_runner: ToolRunner | None = None,
        to_agent: str = "supervisor",
    ) -> None:
        self.node = node
        self.input = input
        self.context: dict[str, Any] = dict(context or {})
        self.plan = plan
        self.step = step
        self.hooks = hooks or OrchestratorHooks()
        self.tool_runner = tool_runner or _direct_tool_runner
        self.to_agent = to_agent
        self.traces = HandoffTraces()

    @property
    def agent_name(self) -> str:
        return self.node.name

    async def call_tool(self, name: str, **args: Any) -> ToolResult:
        """Call one of this agent's tools; never raises (errors come back in the ToolResult)."""
        await self.hooks.fire("on_tool_start", name, args)
        result = await self.tool_runner(self.node, name, args)
        self.record_tool(name, result)
        await self.hooks.fire("on_tool_end", name, result)
        return result

    def record_tool(self, name: str, result: ToolResult) -> None:
        """Add a tool call to the turn's traces; an agent called as a tool adds its own tool calls
        and tokens too, so they count in this turn and in the run."""
        self.traces.tool_calls.append(name)
        self.traces.tool_results.append(result)
        tool = self.node.tools.get(name)
        inner = usage.agent_tool_traces(result.status, result.output) if tool and tool.agent else None
        if inner is not None:
            self.traces.tool_calls.extend(inner.get("tool_calls") or [])
            self.traces.tool_results.extend(
                ToolResult.model_validate(r, strict=False) for r in inner.get("tool_results") or []
            )
            self.add_tokens(int(inner.get("token_usage") or 0))

    async def reason(self, thought: str) -> None:
        """Record a reasoning step (fires ``on_reasoning_step``)."""
        self.traces.reasoning_steps.append(thought)
        await self.hooks.fire("on_reasoning_step", self.node.name, thought)

    def add_tokens(self, count: int) -> None:
        self.traces.token_usage += max(0, int(count))

    def handoff(
        self,
        status: HandoffStatus,
        summary: str,
        payload: dict[str, Any] | None = None,
        artifacts: list[str] | None = None,
    ) -> HandoffResult:
        return HandoffResult(
            from_agent=self.node.name,
            to_agent=self.to_agent,
            status=status,
            summary=summary,
            payload=dict(payload or {}),
            artifacts=list(artifacts or []),
            traces=self.traces.model_copy(deep=True),
        )

    def ok(self, summary: str, payload: dict[str, Any] | None = None, **kw: Any) -> HandoffResult:
        return self.handoff("ok", summary, payload, **kw)

    def needs_more_info(self, summary: str, payload: dict[str, Any] | None = None, **kw: Any) -> HandoffResult:
        return self.handoff("needs_more_info", summary, payload, **kw)

    def failed(self, summary: str, payload: dict[str, Any] | None = None, **kw: Any) -> HandoffResult:
        return self.handoff("failed", summary, payload, **kw)


def coerce_handoff(ctx: RunContext, value: Any) -> HandoffResult:
    """Turn what a behaviour returned into a HandoffResult, or a ``failed`` one explaining why not."""
    if isinstance(value, HandoffResult):
        result = value
    elif isinstance(value, dict):
        try:
            result = HandoffResult.model_validate({"from_agent": ctx.node.name, **value})
        except ValidationError as exc:
            return ctx.failed(f"agent {ctx.node.name!r} returned an invalid HandoffResult: {exc}")
    else:
        return ctx.failed(
            f"agent {ctx.node.name!r} returned {type(value).__name__}; a behaviour must return a HandoffResult"
        )
    if (
        not result.traces.tool_calls
        and not result.traces.reasoning_steps
        and ctx.traces.tool_calls + ctx.traces.reasoning_steps
    ):
        result = result.model_copy(update={"traces": ctx.traces.model_copy(deep=True)})
    return result


async def run_turn(
    node: AgentNode,
    input: str,
    context: dict[str, Any] | None = None,
    *,
    hooks: OrchestratorHooks | None = None,
    plan: dict[str, Any] | None = None,
    step: int = 0,
    tool_runner: ToolRunner | None = None,
    max_steps: int = 10,
) -> HandoffResult:
    """Run one turn of ``node`` and return its HandoffResult. Never raises for agent errors.

    A node with no behaviour but with children supervises them (a nested supervisor).
    """
    ctx = RunContext(node, input, context, plan=plan, step=step, hooks=hooks, tool_runner=tool_runner)
    if node.behaviour is None:
        if node.children:
            from agent_tree.orchestrator import supervise

            sub = await supervise(
                node, input, ctx.context, hooks=ctx.hooks, max_steps=max_steps, tool_runner=tool_runner
            )
            return supervisor_handoff(ctx, sub)
        return ctx.failed(
            f"agent {node.name!r} has no behaviour: give it one with node.set_behaviour(fn), "
            "an 'entrypoint' or a 'model' in the manifest"
        )
    try:
        value = await maybe_await(node.behaviour(ctx))
    except Exception as exc:
        return ctx.failed(f"agent {node.name!r} raised {error_message(exc)}")
    result = coerce_handoff(ctx, value)
    if getattr(node.behaviour, "checks_own_output", False):
        return result  # a model agent checks (and repairs) its reply itself; a model supervisor only routes
    return check_output(node, result)


def check_output(node: AgentNode, result: HandoffResult) -> HandoffResult:
    """``result`` as a failed turn naming every violation when its payload misses ``node.output_schema``."""
    failure = output_schema.payload_violation(node.name, node.output_schema, result.status, result.payload)
    return result if failure is None else result.model_copy(update=failure)


def supervisor_handoff(ctx: RunContext, sub: SupervisorResult, routing_tokens: int = 0) -> HandoffResult:
    """The handoff of a nested supervisor: its answer, with its children's tool calls and tokens."""
    handoffs = [h.model_dump() for h in sub.handoffs]
    ctx.traces = HandoffTraces.model_validate(
        usage.supervisor_traces(handoffs, sub.token_usage + routing_tokens), strict=False
    )
    return ctx.handoff("ok" if sub.status == "completed" else "failed", sub.answer, sub.payload)
