"""Agents for the embedded run-limit tests (tests/unit/test_run_limits.py): each spends what its name says."""

from __future__ import annotations

import asyncio

from agent_tree import RunContext, usage


def lookup(key: str = "") -> str:
    """A tool that answers at once."""
    return f"value of {key}"


async def spender(ctx: RunContext):
    """Uses 500 tokens (a model call it reports) and 2 tool calls, then fails (so the supervisor would
    try the next child)."""
    ctx.add_tokens(500)
    await usage.report_model_usage("spender", {"prompt_tokens": 400, "completion_tokens": 100, "total_tokens": 500})
    await ctx.call_tool("lookup", key="a")
    await ctx.call_tool("lookup", key="b")
    return ctx.failed("spender spent and gave up", {"spent": 500})


async def slow(ctx: RunContext):
    """Takes 30 s unless the run's deadline stops it."""
    await asyncio.sleep(30)
    return ctx.ok("slow answered")


def asker(ctx: RunContext):
    """Always asks for more information."""
    return ctx.needs_more_info("need more", {"asked": True})


def fallback(ctx: RunContext):
    return ctx.ok("fallback answered", {"by": "fallback"})
