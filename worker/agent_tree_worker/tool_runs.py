"""How activities run an agent's tools: find the agent in the compiled tree, run one tool bounded.

A tool runs with a time limit (a synchronous one in a thread, so the activity's heartbeats go on),
and a result that is not JSON becomes an error; every call is recorded in the tool metrics.
:func:`heartbeating` keeps a long activity (a tool or model call) heartbeating meanwhile.

:func:`once` runs one call of one run at most once at a time in this process: Temporal retries an
activity that missed its heartbeat timeout (a worker starved of CPU, stopped, or cut off from the
server for a few seconds), possibly on the same worker while the first attempt's tool is still running;
the retry then waits for that execution instead of starting the tool again (the fault suite measured a
side effect run twice that way: docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from temporalio import activity

from agent_tree.compiler import CompiledTree
from agent_tree.idempotency import calling, offering
from agent_tree.models import ToolResult
from agent_tree.node import AgentNode, error_message, maybe_await
from agent_tree.spec import AgentSpec
from agent_tree_worker import metrics, payloads

HEARTBEAT_EVERY = 1.0
T = TypeVar("T")
# Executions in progress in this process, by the call's idempotency key (agent_tree.call_key).
_running: dict[str, asyncio.Task[Any]] = {}


async def once(key: str, work: Callable[[], Awaitable[T]]) -> T:
    """``work()`` for call ``key``, joined by any attempt of the same call that comes while it runs.

    The execution is a task of its own: an attempt that Temporal gave up on (heartbeat timeout: the
    activity is cancelled as *not found* or *timed out*) leaves it running for the retry to join, and
    it ends by itself at the tool's time limit. A real cancellation (the run cancelled, the worker
    shutting down) cancels it.
    """
    task = _running.get(key)
    if task is None:
        task = asyncio.get_running_loop().create_task(_offered(key, work))
        _running[key] = task
        task.add_done_callback(lambda done: _finished(key, done))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not _abandoned():
            task.cancel()
        raise


def _finished(key: str, task: asyncio.Task[Any]) -> None:
    if _running.get(key) is task:
        del _running[key]
    if not task.cancelled():
        task.exception()  # retrieved: an abandoned execution that failed with nobody waiting is not an error


async def _offered(key: str, work: Callable[[], Awaitable[T]]) -> T:
    with offering(key):
        return await work()


def _abandoned() -> bool:
    """Whether this activity attempt was cancelled because Temporal retried it elsewhere (not a cancel)."""
    try:
        details = activity.cancellation_details()
    except RuntimeError:  # not in an activity
        return False
    return details is not None and (details.not_found or details.timed_out) and not details.cancel_requested


def running_calls() -> int:
    """Tool executions in progress in this process (tests)."""
    return len(_running)


@contextlib.asynccontextmanager
async def heartbeating() -> AsyncIterator[None]:
    """Heartbeat while the body runs, so a dead worker's activity is retried within the heartbeat timeout."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_EVERY)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def find_node(compiled: CompiledTree, name: str) -> AgentNode | None:
    """The node ``name`` of a compiled tree, also when it is reachable only as another agent's tool."""
    seen: set[int] = set()
    stack = [compiled.tree.root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.name == name:
            return node
        stack.extend(node.children)
        stack.extend(tool.agent for tool in node.tools.values() if tool.agent is not None)
    return None


async def execute_tool(node: AgentNode, name: str, args: dict[str, Any], limit: float) -> ToolResult:
    """Run a tool of ``node``: sync tools in a thread (heartbeats go on), bounded by ``limit`` seconds,
    and a result that is not JSON becomes an error; NUL and lone surrogates in its text become U+FFFD
    (:func:`payloads.scrub`: nothing could record them). Recorded in the tool metrics."""
    began = time.perf_counter()
    result = await _run_tool(node, name, args, limit)
    result = result.model_copy(update={"output": payloads.scrub(result.output), "error": payloads.scrub(result.error)})
    metrics.record_tool(node.name, name, result.status, time.perf_counter() - began)
    return result


async def _run_tool(node: AgentNode, name: str, args: dict[str, Any], limit: float) -> ToolResult:
    tool = node.tools.get(name)
    started = time.perf_counter()
    try:
        if (
            tool is not None
            and tool.func is not None
            and tool.agent is None
            and not inspect.iscoroutinefunction(tool.func)
        ):
            with calling():  # the call's idempotency key (agent_tree.call_key), seen by the thread too
                output = await maybe_await(await asyncio.wait_for(asyncio.to_thread(tool.func, **args), limit))
            result = ToolResult(tool_name=name, output=output, duration_ms=(time.perf_counter() - started) * 1000)
        else:
            result = await asyncio.wait_for(node.run_tool(name, **args), limit)
    except TimeoutError:
        return ToolResult(
            tool_name=name,
            status="error",
            error=f"tool {name!r} timed out after {limit:g}s",
            duration_ms=(time.perf_counter() - started) * 1000,
        )
    except Exception as exc:
        return ToolResult(
            tool_name=name, status="error", error=error_message(exc), duration_ms=(time.perf_counter() - started) * 1000
        )
    reason = payloads.not_json_reason(result.output) if result.status == "ok" else None
    if reason is None and result.status == "ok":
        try:  # what the activity does with it; Pydantic stops at a few hundred levels of nesting
            result.model_dump(mode="json")
        except ValueError as exc:
            reason = str(exc)
    if reason is not None:
        return ToolResult(
            tool_name=name,
            status="error",
            error=f"tool {name!r} returned a value that is not JSON: {reason}",
            duration_ms=result.duration_ms,
        )
    return result


def tool_timeout(agent: AgentSpec, name: str) -> float:
    return float(next((x.timeoutSeconds for x in agent.tools if x.name == name), 60))
