"""One execution per tool call per worker process (agent_tree_worker.tool_runs.once), and the call's
idempotency key (agent_tree.call_key) in embedded and durable tool calls."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agent_tree_worker import tool_runs
from agent_tree_worker.tool_runs import execute_tool, once

from agent_tree import AgentNode, Tool, call_key
from agent_tree.idempotency import offering

pytestmark = pytest.mark.asyncio


async def test_an_attempt_that_comes_while_the_call_runs_joins_it() -> None:
    runs: list[int] = []
    gate = asyncio.Event()

    async def work() -> str:
        runs.append(1)
        await gate.wait()
        return "done"

    first = asyncio.create_task(once("wf/run/1/1", work))
    await asyncio.sleep(0)
    second = asyncio.create_task(once("wf/run/1/1", work))
    other = asyncio.create_task(once("wf/run/2/1", work))  # another call runs on its own
    await asyncio.sleep(0.01)
    gate.set()
    assert await asyncio.gather(first, second, other) == ["done"] * 3
    assert len(runs) == 2
    assert tool_runs.running_calls() == 0


async def test_an_abandoned_attempt_leaves_the_execution_for_the_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Temporal gave up on attempt 1 (heartbeat timeout): its cancellation does not stop the tool,
    and attempt 2 gets that execution's result."""
    runs: list[int] = []
    gate = asyncio.Event()

    async def work() -> str:
        runs.append(1)
        await gate.wait()
        return "paid once"

    monkeypatch.setattr(tool_runs, "_abandoned", lambda: True)
    attempt1 = asyncio.create_task(once("k", work))
    await asyncio.sleep(0.01)
    attempt1.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt1
    assert tool_runs.running_calls() == 1  # still running
    attempt2 = asyncio.create_task(once("k", work))
    await asyncio.sleep(0.01)
    gate.set()
    assert await attempt2 == "paid once"
    assert runs == [1]


async def test_a_real_cancellation_stops_the_execution() -> None:
    """The run was cancelled (or the worker shuts down): the tool is cancelled with it."""
    stopped = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.set()
            raise
        return "never"

    attempt = asyncio.create_task(once("k2", work))
    await asyncio.sleep(0.01)
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    await asyncio.wait_for(stopped.wait(), 1)
    await asyncio.sleep(0)
    assert tool_runs.running_calls() == 0


async def test_a_failed_execution_fails_every_attempt_and_the_next_one_runs_again() -> None:
    calls: list[int] = []

    async def work() -> str:
        calls.append(1)
        raise OSError("history unavailable")

    for _ in range(2):
        with pytest.raises(OSError, match="history unavailable"):
            await once("k3", work)
    assert len(calls) == 2


def seen_key() -> dict[str, Any]:
    return {"key": call_key()}


async def async_seen_key() -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"key": call_key()}


def clerk() -> AgentNode:
    node = AgentNode("clerk")
    node.add_tool(Tool("sync", seen_key))
    node.add_tool(Tool("async", async_seen_key))
    return node


async def test_tools_see_the_offered_key_sync_and_async() -> None:
    node = clerk()
    assert call_key() is None
    for name in ("sync", "async"):
        with offering("wf/run/7/1"):
            result = await execute_tool(node, name, {}, 5)
        assert result.output == {"key": "wf/run/7/1"}, name
    assert call_key() is None


async def test_embedded_calls_get_a_fresh_key_each() -> None:
    node = clerk()
    keys = [(await node.run_tool(name)).output["key"] for name in ("sync", "async", "sync")]
    assert all(k.startswith("embedded/") for k in keys) and len(set(keys)) == 3


async def test_a_key_is_offered_to_one_call_only() -> None:
    """An agent called as a tool makes calls of its own: they do not inherit the outer call's key."""
    inner = AgentNode("inner")
    inner.add_tool(Tool("async", async_seen_key))

    async def outer_tool() -> dict[str, Any]:
        return {"outer": call_key(), "inner": (await inner.run_tool("async")).output["key"]}

    node = AgentNode("outer")
    node.add_tool(Tool("outer", outer_tool))
    with offering("wf/run/9/1"):
        result = await execute_tool(node, "outer", {}, 5)
    assert result.output["outer"] == "wf/run/9/1"
    assert result.output["inner"].startswith("embedded/")
