"""A Python agent whose backend fails its first call, for the retry e2e test (tests/e2e/test_forks_cli.py).

Worker pods import it (the tree's ``PYTHONPATH`` names this folder); ``FLAKY_DIR`` (the tree's worker
env) is a folder on this host where each tool appends a line per execution and ``flaky`` leaves the
marker of its first, failed, execution.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from agent_tree import HandoffResult, RunContext


def _count(tool: str) -> Path:
    folder = Path(os.environ["FLAKY_DIR"])
    with (folder / f"calls-{tool}.log").open("a") as f:
        f.write("call\n")
    return folder


def prepare(key: str) -> dict[str, Any]:
    _count("prepare")
    return {"key": key, "prepared": True}


def flaky(key: str) -> dict[str, Any]:
    marker = _count("flaky") / f"flaky-{key}.failed"
    if not marker.exists():
        marker.write_text("failed once\n")
        raise ConnectionError(f"the backend of {key!r} is down (first call)")
    return {"key": key, "done": True}


async def careful(ctx: RunContext) -> HandoffResult:
    prepared = await ctx.call_tool("prepare", key="job-1")
    done = await ctx.call_tool("flaky", key="job-1")
    if done.status == "error":
        return ctx.failed(f"the backend failed: {done.error}")
    return ctx.ok(f"job-1 done (prepared={prepared.output['prepared']})", {"key": "job-1"})
