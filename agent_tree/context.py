"""RunContext: what an agent's behaviour receives, and ``run_turn`` which runs one agent turn."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agent_tree.hooks import OrchestratorHooks
from agent_tree.models import HandoffResult, HandoffStatus, HandoffTraces, ToolResult
from agent_tree.node import error_message, maybe_await

if TYPE_CHECKING:
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
        self.traces.tool_calls.append(name)
        self.traces.tool_results.append(result)
        await self.hooks.fire("on_tool_end", name, result)
        return result

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
            status: HandoffStatus = "ok" if sub.status == "completed" else "failed"
            return ctx.handoff(status, sub.answer, sub.payload)
        return ctx.failed(
            f"agent {node.name!r} has no behaviour: give it one with node.set_behaviour(fn), "
            "an 'entrypoint' or a 'model' in the manifest"
        )
    try:
        value = await maybe_await(node.behaviour(ctx))
    except Exception as exc:
        return ctx.failed(f"agent {node.name!r} raised {error_message(exc)}")
    return coerce_handoff(ctx, value)
