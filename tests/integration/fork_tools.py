"""Counting and flaky tools and a careful agent for the retry and fork tests (importable by workers).

Every tool appends one line per execution to ``<DURABLE_TEST_DIR>/calls-<tool>.log``, so a test
counts how often a tool really ran; ``flaky`` fails its first execution (a marker file remembers it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import invoice_tools
from durable_agents import lookup as _lookup
from durable_agents import policy as _policy

from agent_tree import HandoffResult, RunContext


def _dir() -> Path:
    return Path(os.environ["DURABLE_TEST_DIR"])


def _count(tool: str) -> None:
    with (_dir() / f"calls-{tool}.log").open("a") as f:
        f.write("call\n")


async def erp_lookup(invoice_id: str) -> dict[str, Any]:
    _count("erp_lookup")
    return await invoice_tools.erp_lookup(invoice_id)


def policy_search(topic: str) -> dict[str, Any]:
    _count("policy_search")
    return invoice_tools.policy_search(topic)


async def verify_answer(invoice_id: str, decision: str, reason: str | None = None) -> dict[str, Any]:
    _count("verify_answer")
    return await invoice_tools.verify_answer(invoice_id=invoice_id, decision=decision, reason=reason)


def lookup(invoice_id: str) -> dict[str, Any]:
    """Look an invoice up."""
    _count("lookup")
    return _lookup(invoice_id)


def policy(topic: str) -> dict[str, Any]:
    """Find the policy of a topic."""
    _count("policy")
    return _policy(topic)


def prepare(key: str) -> dict[str, Any]:
    _count("prepare")
    return {"key": key, "prepared": True}


def flaky(key: str) -> dict[str, Any]:
    """Fails its first execution (a marker file says it happened), succeeds after."""
    _count("flaky")
    marker = _dir() / f"flaky-{key}.failed"
    if not marker.exists():
        marker.write_text("failed once\n")
        raise ConnectionError(f"the backend of {key!r} is down (first call)")
    return {"key": key, "done": True}


async def careful(ctx: RunContext) -> HandoffResult:
    """Prepares, then calls the flaky backend; fails the turn when the backend failed."""
    prepared = await ctx.call_tool("prepare", key="job-1")
    done = await ctx.call_tool("flaky", key="job-1")
    if done.status == "error":
        return ctx.failed(f"the backend failed: {done.error}")
    return ctx.ok(f"job-1 done (prepared={prepared.output['prepared']})", {"key": "job-1"})
