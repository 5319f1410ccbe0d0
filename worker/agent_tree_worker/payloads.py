"""Keeping large values out of Temporal history: sizes, blob references and JSON checks.

Pure helpers (no I/O): workflows import them too. A value whose JSON is above the threshold is
stored in PostgreSQL's ``blobs`` table by an activity and replaced by a reference
``{"$blob": "<sha256>", "bytes": N, "preview": "..."}`` that travels through history instead.
"""

from __future__ import annotations

import hashlib
from typing import Any

# Canonical JSON is the contract's (the stream encodes steps with it); re-exported for the worker.
from agent_tree.contract import dumps as dumps
from agent_tree.contract import json_size as json_size
from agent_tree.contract import scrub as scrub

# What a reference looks like is shared with the readers of the history (agent_tree.step_text).
from agent_tree.step_text import is_blob_ref as is_ref  # noqa: F401

BLOB_THRESHOLD = 64 * 1024
"""Values whose JSON is larger than this many bytes are stored as blobs."""

MAX_HANDOFF_BYTES = 256 * 1024
"""A handoff (summary + payload) larger than this fails the turn: it would flow through every later
step's context and the run's result, so it must be stored by the agent and referenced instead."""

PREVIEW_CHARS = 200


def not_json_reason(value: Any) -> str | None:
    """Why ``value`` cannot be carried as JSON, or None when it can."""
    try:
        dumps(value)
    except (TypeError, ValueError) as exc:
        return f"{type(value).__name__} is not JSON-serialisable ({exc})"
    except RecursionError:
        return f"{type(value).__name__} is nested too deeply to be JSON"
    return None


def blob_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_ref(text: str) -> dict[str, Any]:
    """The reference that replaces a stored value (content-addressed, so storing twice is harmless)."""
    preview = text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"
    return {"$blob": blob_id(text), "bytes": len(text.encode()), "preview": preview}


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters]"
