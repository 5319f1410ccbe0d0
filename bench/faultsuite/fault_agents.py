"""Agents, tools and model scripts of the fault suite (worker processes import this module as ``fault_agents``).

``FAULT_DIR`` names a folder shared with the harness:
- ``inflight/<key>.<step>.<pid>``: a tool call in progress in worker ``pid`` (the harness kills it there);
- ``effects.log``: one line ``<key> <step> <pid>`` per COMPLETED execution of a counting tool (the side
  effect); distinct (key, step) pairs are the distinct calls, extra lines are side effects run twice.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

from agent_tree import HandoffResult, RunContext

KEY = re.compile(r"flt-key-[0-9a-f]+")


def _dir() -> Path:
    return Path(os.environ["FAULT_DIR"])


def tool_seconds() -> float:
    """How long a counting call takes: ``<FAULT_DIR>/tool-seconds`` (each scenario sets its own), else 0.6."""
    try:
        return float((_dir() / "tool-seconds").read_text())
    except (OSError, ValueError):
        return 0.6


async def count(key: str, step: str) -> dict[str, Any]:
    """A tool with a side effect, slow enough to be killed in the middle: one line in effects.log per execution."""
    marker = _dir() / "inflight" / f"{key}.{step}.{os.getpid()}"
    marker.parent.mkdir(exist_ok=True)
    marker.write_text(str(time.time()))
    try:
        await asyncio.sleep(tool_seconds())
        with (_dir() / "effects.log").open("a") as f:
            f.write(f"{key} {step} {os.getpid()}\n")
    finally:
        marker.unlink(missing_ok=True)
    return {"key": key, "step": step}


async def intake(ctx: RunContext) -> HandoffResult:
    """Routes every run to the bookkeeper, passing the run's key in the context."""
    match = KEY.search(ctx.input)
    return ctx.needs_more_info("needs the bookkeeper", {"key": match.group(0) if match else "flt-key-0"})


async def bookkeeper(ctx: RunContext) -> HandoffResult:
    """Two counted steps, an approved refund when the run asks for one (context ``approval``), a last step."""
    key = ctx.context.get("key", "flt-key-0")
    done = []
    for step in ("debit", "credit"):
        done.append((await ctx.call_tool("count", key=key, step=step)).output["step"])
    if ctx.context.get("approval"):
        refund = await ctx.call_tool("refund", key=key, step="refund")
        done.append(refund.output["step"] if refund.status == "ok" else f"refund {refund.status}")
    done.append((await ctx.call_tool("count", key=key, step="close")).output["step"])
    return ctx.ok(f"booked {key}: {', '.join(done)}", {"steps": done})


def python_tree() -> dict[str, Any]:
    """office -> intake (Python) -> bookkeeper (Python, counting tools; ``refund`` needs approval)."""
    tools = [
        {"name": "count", "entrypoint": "fault_agents:count", "timeoutSeconds": 300},
        {"name": "refund", "entrypoint": "fault_agents:count", "timeoutSeconds": 300, "approval": {"required": True}},
    ]
    return {
        "root": "office",
        "agents": [
            {"name": "office", "children": ["intake", "bookkeeper"]},
            {"name": "intake", "entrypoint": "fault_agents:intake"},
            {"name": "bookkeeper", "entrypoint": "fault_agents:bookkeeper", "tools": tools},
        ],
    }


def python_calls(approval: bool) -> list[str]:
    """The counted steps of one run of :func:`python_tree`."""
    return ["debit", "credit", *(["refund"] if approval else []), "close"]


# --- the model tree (against tests/integration/fake_openai.py) -----------------------------------


def model_tree(base_url: str) -> dict[str, Any]:
    """desk (model router) -> clerk (model agent with the counting tools; ``refund`` needs approval)."""
    return {
        "root": "desk",
        "agents": [
            {"name": "desk", "children": ["clerk"], "model": {"name": "flt-desk", "baseUrl": base_url}},
            {
                "name": "clerk",
                "description": "Books invoices.",
                "model": {"name": "flt-clerk", "baseUrl": base_url},
                "tools": [
                    {"name": "count", "entrypoint": "fault_agents:count", "timeoutSeconds": 300},
                    {
                        "name": "refund",
                        "entrypoint": "fault_agents:count",
                        "timeoutSeconds": 300,
                        "approval": {"required": True},
                    },
                ],
            },
        ],
    }


def model_calls(approval: bool) -> list[str]:
    """The counted steps of one run of :func:`model_tree` (the input asks for a refund or not)."""
    return ["m-debit", *(["m-refund"] if approval else []), "m-close"]


def model_input(key: str, approval: bool) -> str:
    return f"book {key}" + (" with a refund" if approval else "")


def _conversation(request: dict[str, Any]) -> str:
    return " ".join(str(m.get("content") or "") for m in request.get("messages", []))


def _clerk(request: dict[str, Any]) -> dict[str, Any]:
    """The clerk's next reply: the next counted step not yet called in this conversation, then the answer."""
    text = _conversation(request)
    match = KEY.search(text)
    key = match.group(0) if match else "flt-key-0"
    done = sum(1 for m in request.get("messages", []) if m.get("role") == "assistant")
    steps = model_calls("with a refund" in text)
    if done < len(steps):
        step = steps[done]
        return {"tool_calls": [("refund" if step == "m-refund" else "count", {"key": key, "step": step})]}
    return {"content": f"booked {key}"}


def model_scripts() -> dict[str, list[Any]]:
    """Replies of the fake model (a function of the conversation, so a retried call gets the same reply)."""
    return {"flt-desk": [{"tool_calls": [("transfer_to_clerk", {"reason": "booking"})]}], "flt-clerk": [_clerk] * 8}
