"""The ONE step vocabulary and its stream encoding.

A step is one recorded event of a run: the embedded hooks (:mod:`agent_tree.events`) emit its
``data``; the durable workflow and activities wrap it with ``ord`` (its place in the run: nested turns
extend their parent's path), ``agent`` and ``ts``; PostgreSQL stores it, the Redis stream carries it
(:func:`encode_step` / :func:`decode_step`), and every renderer reads it by these names.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, get_args

from typing_extensions import TypedDict  # pydantic validates typing.TypedDict only from Python 3.12

AGENT_START = "agent_start"
AGENT_END = "agent_end"
HANDOFF = "handoff"
TOOL_START = "tool_start"
TOOL_END = "tool_end"
REASONING = "reasoning"
MODEL_USAGE = "model_usage"
APPROVAL_REQUESTED = "approval_requested"
"""A tool call waits for a person (``data``: :class:`agent_tree.contract.control.ApprovalRequest`)."""
APPROVAL_DECIDED = "approval_decided"
"""Who decided it, when and why (``data``: id, decision, decided_by, reason, decided_at)."""
BUDGET_EXHAUSTED = "budget_exhausted"
"""A budget with ``onExhausted: pause`` stopped the run until it is raised (``data``: budget, used, limit)."""
BUDGETS_CHANGED = "budgets_changed"
"""The run's budgets were changed while it ran (``data``: budgets, resumed)."""

StepType = Literal[
    "agent_start",
    "agent_end",
    "handoff",
    "tool_start",
    "tool_end",
    "reasoning",
    "model_usage",
    "approval_requested",
    "approval_decided",
    "budget_exhausted",
    "budgets_changed",
]
STEP_TYPES: tuple[str, ...] = get_args(StepType)
HOOK_STEP_TYPES: tuple[str, ...] = (
    AGENT_START,
    AGENT_END,
    HANDOFF,
    TOOL_START,
    TOOL_END,
    REASONING,
    APPROVAL_REQUESTED,
    APPROVAL_DECIDED,
)
"""The steps the embedded hooks emit; ``model_usage`` is recorded by the executors that call models."""

RUN_END = "run_end"
"""Type of the stream's last entry (``data = {status, answer}``): a marker, not a step of the run."""

MODEL_DELTA = "model_delta"
"""A transient stream entry: text a model is generating (``data``: agent, model, call, seq, text).

Never a step: not in :data:`STEP_TYPES`, never in PostgreSQL, no ``ord`` (it has no place in the
run's history, and readers that resume by position skip it). ``call`` identifies the model call within
the run (the ord string of the step that will record its reply); ``seq`` counts 0, 1, 2... per call and
attempt: a retried call starts again at 0. The call's ``model_usage`` step follows its last delta.
"""
TRANSIENT_TYPES: tuple[str, ...] = (MODEL_DELTA,)
"""Stream entry types that are not steps: readers show them live and never count or store them."""


class Step(TypedDict):
    """One recorded step: ``{"ord": [int...], "type", "agent", "data": {event}, "ts": iso}``."""

    ord: list[int]
    type: StepType
    agent: str | None
    data: dict[str, Any]
    ts: str


# --- canonical JSON ----------------------------------------------------------------------------
def dumps(value: Any) -> str:
    """Canonical JSON (sorted keys, no NaN): the form stored, hashed, measured and streamed."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
_SURROGATE = re.compile("[\ud800-\udfff]")


def scrub(value: Any) -> Any:
    """``value`` with every NUL and lone surrogate in its strings (keys too) replaced by U+FFFD.

    Tools and models can produce both; PostgreSQL's jsonb refuses NUL, and neither UTF-8 (Redis,
    Temporal's JSON, asyncpg) nor PostgreSQL carries a lone surrogate, so a step or result holding
    one could never be recorded. Values without either come back as they are (the same object);
    values that are not JSON too (they are rejected elsewhere). Through JSON, not recursion: a
    value nested hundreds deep is scrubbed like any other.
    """
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return value
    if "\\u0000" not in text and not _SURROGATE.search(text):
        return value
    return json.loads(_SURROGATE.sub("\ufffd", _NUL_ESCAPE.sub(r"\1\\ufffd", text)))


def json_size(value: Any) -> int:
    """Bytes of ``value``'s JSON; values that are not JSON count as 0 (they are rejected elsewhere)."""
    try:
        return len(dumps(value).encode())
    except (TypeError, ValueError):
        return 0


# --- stream encoding ---------------------------------------------------------------------------
STREAM_ENTRY_LIMIT = 16 * 1024
"""Bytes of a stream entry's ``data``: an entry is a preview, full values live in PostgreSQL."""
STREAM_VALUE_KEPT = 256
"""Over the limit, the fields of ``data`` up to this many bytes are kept (and ``truncated: true``)."""


def ord_str(ord_: list[int]) -> str:
    """``[3, 1, 2]`` -> ``"3.1.2"`` (the stream's form of a step's place in the run)."""
    return ".".join(str(i) for i in ord_)


def parse_ord(text: str) -> list[int]:
    """``"3.1.2"`` -> ``[3, 1, 2]`` (inverse of :func:`ord_str`)."""
    return [int(p) for p in text.split(".") if p]


def encode_step(step: Step | dict[str, Any]) -> dict[str, str]:
    """A step as the fields of one Redis stream entry (values over the entry limit are dropped)."""
    data = dumps(step["data"])
    if len(data) > STREAM_ENTRY_LIMIT:
        kept = {k: v for k, v in step["data"].items() if json_size(v) <= STREAM_VALUE_KEPT}
        data = dumps({**kept, "truncated": True})
    return {
        "ord": ord_str(step["ord"]),
        "type": step["type"],
        "agent": step.get("agent") or "",
        "data": data,
        "ts": str(step.get("ts") or ""),
    }


def encode_run_end(final: dict[str, Any]) -> dict[str, str]:
    """The stream's end marker (``type`` :data:`RUN_END`, ``data`` = the run's ``{status, answer}``)."""
    return {"ord": "", "type": RUN_END, "agent": "", "data": dumps(final), "ts": ""}


def encode_model_delta(*, agent: str, model: str | None, call: str, seq: int, text: str, ts: str) -> dict[str, str]:
    """A :data:`MODEL_DELTA` as the fields of one Redis stream entry (no ``ord``: not a step)."""
    data = {"agent": agent, "model": model or "", "call": call, "seq": seq, "text": text}
    return {"type": MODEL_DELTA, "agent": agent, "data": dumps(data), "ts": ts}


def is_transient(entry: dict[str, Any] | dict[bytes, bytes]) -> bool:
    """True for a stream entry that is not a step (:data:`TRANSIENT_TYPES`), decoded or raw."""
    kind = entry.get("type", entry.get(b"type"))  # type: ignore[call-overload]
    if isinstance(kind, bytes):
        kind = kind.decode(errors="replace")
    return kind in TRANSIENT_TYPES


def decode_step(fields: dict[bytes, bytes] | dict[str, str]) -> dict[str, Any]:
    """The step of one Redis stream entry (inverse of :func:`encode_step`; also reads the end marker).

    A :data:`MODEL_DELTA` entry decodes to ``{"type", "agent", "ts", "data"}`` without ``ord``
    (:func:`is_transient` tells it apart).

    Raises:
        ValueError: ``data`` is not JSON or ``ord`` is not a dotted path of integers.
    """
    f = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in fields.items()
    }
    if f.get("type") in TRANSIENT_TYPES:
        return {
            "type": f["type"],
            "agent": f.get("agent") or None,
            "ts": f.get("ts", ""),
            "data": json.loads(f.get("data") or "{}"),
        }
    return {
        "ord": parse_ord(f.get("ord", "")),
        "type": f.get("type", ""),
        "agent": f.get("agent") or None,
        "data": json.loads(f.get("data") or "{}"),
        "ts": f.get("ts", ""),
    }
