"""The Python agent and tools of the API e2e tests (tests/e2e/test_api.py); worker pods import them.

``doer`` reads its input as ``key=K gates=N flaky=1``: it notes, then for each gate waits until the
test opens it (the file ``$GATE_DIR/K.G``) and notes again, so the test decides when each part of the
run happens; with ``flaky=1`` it calls ``flaky``, which fails its first execution for a key (retry).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from agent_tree import HandoffResult, RunContext


def _dir() -> Path:
    return Path(os.environ["GATE_DIR"])


def note(key: str, n: int) -> dict[str, Any]:
    return {"key": key, "note": n}


async def wait_gate(key: str, gate: int) -> dict[str, Any]:
    """Return once the test created ``$GATE_DIR/<key>.<gate>`` (polling: this is the system under test)."""
    path = _dir() / f"{key}.{gate}"
    start = time.monotonic()
    while not path.exists():  # noqa: ASYNC110 - another process creates the file
        await asyncio.sleep(0.05)
    return {"key": key, "gate": gate, "waited": round(time.monotonic() - start, 2)}


def flaky(key: str) -> dict[str, Any]:
    marker = _dir() / f"{key}.flaky-failed"
    if not marker.exists():
        marker.write_text("failed once\n")
        raise ConnectionError(f"the backend of {key!r} is down (first call)")
    return {"key": key, "done": True}


def _options(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split() if "=" in part)


async def doer(ctx: RunContext) -> HandoffResult:
    opts = _options(ctx.input)
    key = opts["key"]
    await ctx.reason(f"working on {key}")
    await ctx.call_tool("note", key=key, n=0)
    for gate in range(1, int(opts.get("gates", "0")) + 1):
        await ctx.call_tool("wait_gate", key=key, gate=gate)
        await ctx.call_tool("note", key=key, n=gate)
    if opts.get("flaky") == "1":
        done = await ctx.call_tool("flaky", key=key)
        if done.status == "error":
            return ctx.failed(f"the backend failed: {done.error}")
    return ctx.ok(f"{key} done", {"key": key})
