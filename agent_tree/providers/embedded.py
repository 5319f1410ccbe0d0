"""The embedded behaviour of a model agent: its chat loop run in-process, with direct model and tool
calls; a model agent with children routes with its model (:mod:`.routing`) and supervises them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent_tree import approval_gate, ledger, registry, usage
from agent_tree.calls import error_message
from agent_tree.context import RunContext
from agent_tree.models import HandoffResult, ToolResult
from agent_tree.orchestrator import plan_thought, plan_with_usage
from agent_tree.providers.openai_chat import (
    CallModel,
    Done,
    ToolCall,
    error_result,
    next_action,
    observe_model,
    observe_tool,
    start,
)
from agent_tree.providers.openai_client import ModelConfigError, call_model, tool_definitions
from agent_tree.providers.routing import plan_from_response, router_messages, router_tools
from agent_tree.spec import AgentSpec
from agent_tree.turns import supervise, supervisor_handoff


def make_router(agent: AgentSpec, children: list[tuple[str, str]]) -> Callable[[str], Any]:
    """A planner (``async (user_input) -> plan``) that asks the supervisor's model which child to use."""
    agent_dict = agent.model_dump(mode="json")
    names = [name for name, _ in children]
    model = agent.model.model_dump(mode="json") if agent.model else None

    async def route(user_input: str) -> dict[str, Any]:
        response = await call_model(agent, router_messages(agent_dict, user_input), router_tools(children))
        await usage.report_model_usage(agent.name, response.get("usage"), response.get("model"), spec=model)
        return plan_from_response(names, response)

    return route


async def _call_tool(ctx: RunContext, call: ToolCall) -> dict[str, Any]:
    if call.error is None:
        ledger.check_tool_call()  # before on_tool_start: a call the budget refuses did not start
    refused = None if call.error is not None else await approval_gate.check(ctx.node, call.name, dict(call.args))
    await ctx.hooks.fire("on_tool_start", call.name, call.args)
    if call.error is not None:
        result = ToolResult.model_validate(error_result(call))
    elif refused is not None:
        result = refused
    else:
        result = await ctx.tool_runner(ctx.node, call.name, dict(call.args))
    ctx.record_tool(call.name, result)
    await ctx.hooks.fire("on_tool_end", call.name, result)
    return {
        "tool_name": result.tool_name,
        "output": result.output,
        "status": result.status,
        "error": result.error,
        "duration_ms": result.duration_ms,
    }


async def run_chat(agent: AgentSpec, ctx: RunContext) -> HandoffResult:
    """One turn of a model agent in-process, driving the pure loop with direct calls."""
    try:
        tools = tool_definitions(agent)
    except registry.EntrypointError as exc:
        return ctx.failed(f"agent {agent.name!r}: {exc}")
    state = start(agent.model_dump(mode="json"), ctx.input, ctx.context)
    while True:
        action = next_action(state)
        if isinstance(action, Done):
            return ctx.handoff(action.status, action.summary, action.payload)  # type: ignore[arg-type]
        if isinstance(action, CallModel):
            try:
                response = await call_model(agent, list(state.messages), tools)
            except ModelConfigError as exc:
                return ctx.failed(str(exc))
            except Exception as exc:
                return ctx.failed(f"model call of agent {agent.name!r} failed: {error_message(exc)}")
            seen = len(state.reasoning)
            state = observe_model(state, response)
            ctx.add_tokens(int((response.get("usage") or {}).get("total_tokens") or 0))
            await usage.report_model_usage(
                agent.name, response.get("usage"), response.get("model"), spec=agent.model.model_dump(mode="json")
            )
            for thought in state.reasoning[seen:]:
                await ctx.reason(thought)
            continue
        for call in action.calls:
            state = observe_tool(state, call, await _call_tool(ctx, call))


def make_behaviour(agent: AgentSpec) -> Callable[[RunContext], Any]:
    """The embedded behaviour of a model agent: the chat loop, or routing + supervision when it has children."""

    async def behaviour(ctx: RunContext) -> HandoffResult:
        if ctx.node.children:
            children = [(c.name, getattr(c, "description", "")) for c in ctx.node.children]
            plan, calls = await plan_with_usage(make_router(agent, children), ctx.input)
            if plan is not None:
                await ctx.hooks.fire("on_reasoning_step", ctx.node.name, plan_thought(plan))
            sub = await supervise(
                ctx.node,
                ctx.input,
                ctx.context,
                hooks=ctx.hooks,
                max_steps=ctx.max_steps,
                plan=plan,
                tool_runner=ctx.tool_runner,
                deadline=ctx.deadline,
            )
            return supervisor_handoff(ctx, sub, usage.total_tokens(calls))
        return await run_chat(agent, ctx)

    behaviour.__name__ = f"model_agent_{agent.name.replace('-', '_')}"
    behaviour.checks_own_output = True  # type: ignore[attr-defined]  # see agent_tree.turns.run_turn
    return behaviour
