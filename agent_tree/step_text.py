"""A run's steps as text, the same for every reader: ``agent-tree logs`` / ``history`` reading
PostgreSQL and Redis directly, and the same commands with ``--server`` reading the REST API.

Pure functions over steps (``{"ord", "type", "agent", "data", "ts"}``, the history's vocabulary)
and one small printer for live model text; no I/O besides writing to the given stream.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, TextIO

from agent_tree.contract import (
    AGENT_END,
    AGENT_START,
    APPROVAL_DECIDED,
    APPROVAL_REQUESTED,
    HANDOFF,
    MODEL_USAGE,
    REASONING,
    TOOL_END,
    TOOL_START,
    ord_str,
    parse_ord,
)
from agent_tree.events import approval_decision_text, approval_request_text, format_event, preview


def is_blob_ref(value: Any) -> bool:
    """A large tool output stored apart from the step (``{"$blob": sha256, "bytes": n}``)."""
    return isinstance(value, dict) and isinstance(value.get("$blob"), str) and "bytes" in value


def render(step: dict[str, Any]) -> str:
    """One line of ``agent-tree logs``: ``HH:MM:SS.mmm`` and the step as the embedded runtime prints it."""
    data = step["data"]
    ts = clock(step.get("ts"))
    if step["type"] == MODEL_USAGE:
        text = (
            f"  $ {data.get('agent')} model {data.get('model')}: {data.get('total_tokens', 0)} tokens "
            f"({data.get('prompt_tokens', 0)} in, {data.get('completion_tokens', 0)} out)"
        )
    else:
        text = format_event(data)
        if step["type"] in (TOOL_START, TOOL_END) and step.get("agent"):
            text = f"  [{step['agent']}]{text[1:]}"
    return f"{ts} {text}"


class DeltaLine:
    """Live model text (``model_delta`` entries) printed as it arrives: one line per model call,
    ``HH:MM:SS.mmm   ~ AGENT: text...``, ended when another call's text or any step is printed."""

    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out = out
        self.as_json = as_json
        self.call: str | None = None  # the model call whose line is open

    def add(self, entry: dict[str, Any], last: list[int] | None = None) -> None:
        """Print one entry's text, unless its call's reply is already among the printed steps
        (``last``, the greatest ord printed: a reader that joins late skips finished calls' text)."""
        data = entry.get("data") or {}
        call = str(data.get("call") or "")
        try:
            if last is not None and parse_ord(call) <= last:
                return
        except ValueError:
            pass
        if self.as_json:
            print(json.dumps(entry, default=str), file=self.out, flush=True)
            return
        if self.call != call or data.get("seq") == 0:  # seq 0: a new call, or a retry of the same call
            self.end()
            ts = clock(entry.get("ts"))
            print(f"{ts}   ~ {data.get('agent') or entry.get('agent') or ''}: ", end="", file=self.out)
            self.call = call
        print(str(data.get("text") or "").replace("\n", "\n    "), end="", file=self.out, flush=True)

    def end(self) -> None:
        """End the open line (before a step is printed, and when following stops)."""
        if self.call is not None:
            print(file=self.out, flush=True)
            self.call = None


def clock(ts: Any) -> str:
    try:
        return datetime.fromisoformat(str(ts or "")).strftime("%H:%M:%S.%f")[:-3]
    except ValueError:
        return str(ts or "")


def history_header(run: dict[str, Any], took_seconds: float | None) -> list[str]:
    """The lines above ``agent-tree history``'s table, from a run's history columns."""
    took = f" in {took_seconds:.2f}s" if took_seconds is not None else ""
    lines = [
        f"run:    {run['workflow_id']}  ({run['namespace']}/{run['name']}, tree {run['tree']} "
        f"@ {run['tree_revision']})",
        f"status: {run['status']}{took}  steps: {run['steps']}  tokens: {run['token_usage']}",
        f"input:  {preview(run['input'], 160)}",
        f"answer: {run['answer'] or '-'}",
    ]
    if run.get("forked_from"):
        lines.append(f"forked: from {run['forked_from']}, steps 1..{run['fork_step']} reused (marked *)")
    return [*lines, ""]


def history_table(steps: list[dict[str, Any]]) -> list[str]:
    """``agent-tree history``'s table, one row per step.

    STEP numbers the steps from 1: what spec.forkFrom.step and ``agent-tree fork --step`` refer to.
    """
    rows = [("STEP", "ORD", "TIME", "AGENT", "TYPE", "DETAIL")]
    for number, s in enumerate(steps, 1):
        mark = "*" if s["data"].get("reused") else ""
        rows.append((f"{number}{mark}", ord_str(s["ord"]), s["ts"][11:23], s.get("agent") or "", s["type"], detail(s)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return ["  ".join(r[i].ljust(widths[i]) for i in range(5)) + "  " + r[5] for r in rows]


def detail(step: dict[str, Any]) -> str:
    """The DETAIL column of ``agent-tree history``."""
    d = step["data"]
    kind = step["type"]
    if kind == AGENT_START:
        return preview(d.get("input", ""), 80)
    if kind in (AGENT_END, HANDOFF):
        arrow = f"-> {d.get('to_agent')} " if kind == HANDOFF else ""
        return f"{arrow}[{d.get('status')}] {preview(d.get('summary', ''), 100)}"
    if kind == TOOL_START:
        return f"{d.get('tool')}({preview(d.get('args', {}), 100)})"
    if kind == TOOL_END:
        if d.get("status") in ("error", "rejected"):
            return f"{d.get('tool')} ! {d.get('status')}: {d.get('error')}"
        out = d.get("output")
        shown = f"<{out['bytes']} bytes in blob {out['$blob'][:12]}>" if is_blob_ref(out) else preview(out, 100)
        return f"{d.get('tool')} = {shown}"
    if kind == REASONING:
        return preview(d.get("thought", ""), 120)
    if kind == MODEL_USAGE:
        return f"{d.get('model')} {d.get('total_tokens', 0)} tokens"
    if kind == APPROVAL_REQUESTED:
        return f"{d.get('id')}: {approval_request_text(d)}"
    if kind == APPROVAL_DECIDED:
        return f"{d.get('id')}: {approval_decision_text(d)}"
    return preview(d, 120)
