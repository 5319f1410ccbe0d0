"""Token usage and tool calls that happen below an agent's own turn, counted where they belong.

Both executors use these helpers, so a run's ``token_usage`` is the same embedded and durable:

- a nested supervisor hands back the tool calls and tokens of its children's turns (and of its own
  routing model call) in its HandoffResult's traces (:func:`supervisor_traces`);
- an agent called as a tool adds its tool calls and tokens to the caller's traces
  (:func:`agent_tool_traces`);
- a model call made outside an agent's chat loop (a model supervisor's routing call, a planner that
  calls a model, a model agent run in-process as another agent's tool) reports its usage with
  :func:`report_model_usage`. Whoever runs the call may listen with :func:`collecting`: the
  orchestrator sums a planner's tokens into the run's ``token_usage``, the durable worker records a
  ``model_usage`` step per call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from agent_tree import ledger

UsageSink = Callable[[dict[str, Any]], Awaitable[None]]

_sink: ContextVar[UsageSink | None] = ContextVar("agent_tree_model_usage_sink", default=None)


def usage_record(agent: str, usage: Mapping[str, Any] | None, model: str | None = None) -> dict[str, Any]:
    """The data of a ``model_usage`` step: ``{agent, model, prompt_tokens, completion_tokens, total_tokens}``."""
    usage = usage or {}
    return {
        "agent": agent,
        "model": model,
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
        "total_tokens": int(usage.get("total_tokens") or 0),
    }


async def report_model_usage(
    agent: str, usage: Mapping[str, Any] | None, model: str | None = None, *, spec: Mapping[str, Any] | None = None
) -> None:
    """Report one model call (``usage`` as the Chat Completions ``usage`` object) to whoever listens.

    A planner entrypoint that calls a model calls this once per call, so its tokens count in the
    run's ``token_usage`` and budgets and appear as ``model_usage`` steps. ``spec``: the model's
    ModelSpec (a dict) when known, for its ``pricing`` (``maxCostUSD``).
    """
    ledger.count_model_call(spec, usage)
    sink = _sink.get()
    if sink is not None:
        await sink(usage_record(agent, usage, model))


@contextlib.contextmanager
def collecting(sink: UsageSink) -> Iterator[None]:
    """Send the model usage reported inside this block to ``sink`` (and to any outer listener)."""
    outer = _sink.get()

    async def both(record: dict[str, Any]) -> None:
        await sink(record)
        if outer is not None:
            await outer(record)

    token = _sink.set(both)
    try:
        yield
    finally:
        _sink.reset(token)


def total_tokens(records: Iterable[Mapping[str, Any]]) -> int:
    return sum(max(0, int(r.get("total_tokens") or 0)) for r in records)


def supervisor_traces(handoffs: Iterable[Mapping[str, Any]], token_usage: int) -> dict[str, Any]:
    """The traces a nested supervisor hands back: its children's tool calls and results, in order,
    and ``token_usage`` (its children's tokens plus its own routing call's)."""
    tool_calls: list[str] = []
    tool_results: list[Any] = []
    for handoff in handoffs:
        traces = handoff.get("traces") or {}
        tool_calls.extend(traces.get("tool_calls") or [])
        tool_results.extend(traces.get("tool_results") or [])
    return {"tool_calls": tool_calls, "tool_results": tool_results, "reasoning_steps": [], "token_usage": token_usage}


def agent_tool_traces(status: str, output: Any) -> Mapping[str, Any] | None:
    """The traces of the agent behind an agent-as-tool call (its HandoffResult is the tool's output)."""
    if status != "ok" or not isinstance(output, Mapping) or "from_agent" not in output:
        return None
    traces = output.get("traces")
    return traces if isinstance(traces, Mapping) else None
