"""Server-Sent Events frames, encoded once per event (a feed encodes each step once for all its
listeners; a listener only concatenates bytes)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent_tree.contract import Step, ord_str


def frame(event: str, data: Any, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()


def step_frame(step: Step) -> bytes:
    return frame(step["type"], step, ord_str(step["ord"]))


def timestamp(step: Step) -> float | None:
    """The step's time (epoch seconds), for the delivery lag; None when it has none."""
    try:
        return datetime.fromisoformat(str(step["ts"])).timestamp()
    except (ValueError, KeyError):
        return None


@dataclass(frozen=True, slots=True)
class EncodedStep:
    """A step as every listener sends it: its position (to skip what a listener already sent), its
    frame, and its time."""

    ord: list[int]
    frame: bytes
    ts: float | None

    @classmethod
    def of(cls, step: Step) -> EncodedStep:
        return cls(step["ord"], step_frame(step), timestamp(step))
