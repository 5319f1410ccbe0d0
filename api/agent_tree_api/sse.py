"""The wire format of a run's event stream (Server-Sent Events) and the generator that writes it.

Each step is ``id: <position>`` (its ord as a dotted path), ``event: <step type>`` (the history's
vocabulary: ``agent_start``, ``tool_end``, ``approval_requested``, ...) and ``data: <the step as JSON>``.
``snapshot`` (the run as GET returns it) opens the stream, ``model_delta`` carries text while a model
generates it, ``end`` closes it with the run's final status; none of these three has an ``id``, so
they never move a client's Last-Event-ID. A comment line is sent after ``heartbeat_seconds`` of
silence so that proxies keep the connection, and ``retry:`` tells browsers how soon to reconnect.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from agent_tree.contract import Step, ord_str
from agent_tree_api.deps import Services
from agent_tree_api.feeds import PAGE

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}
DESCRIPTION = (
    "text/event-stream. Events: `snapshot` (the run, no id), one event per step named by its type with "
    "`id:` = its position (resume with Last-Event-ID or ?since=), `model_delta` (live model text, no id), "
    "`reconnect` (the client fell behind: reconnect with Last-Event-ID), `end` (final status; the stream closes). "
    "A `:` comment every 15 s of silence."
)


def frame(event: str, data: Any, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()


def step_frame(step: Step) -> bytes:
    return frame(step["type"], step, ord_str(step["ord"]))


def _lag(step: Step) -> float | None:
    try:
        return time.time() - datetime.fromisoformat(str(step["ts"])).timestamp()
    except (ValueError, KeyError):
        return None


async def events(
    svc: Services, workflow_id: str, after: list[int] | None, snapshot: dict[str, Any], *, finished: bool
) -> AsyncIterator[bytes]:
    """The stream of one client (``after``: resume position; ``finished``: history then ``end``)."""
    config, metrics = svc.config, svc.metrics
    metrics.open_streams.inc()
    sub = None
    try:
        yield f"retry: {config.retry_ms}\n\n".encode()
        yield frame("snapshot", snapshot)
        last = after
        if not finished:
            sub = svc.feeds.subscribe(workflow_id, after)
            metrics.feeds.set(svc.feeds.open_feeds)
        if finished or sub.catch_up:  # type: ignore[union-attr]
            while True:
                steps = await svc.history.steps(workflow_id, after=last, limit=PAGE)
                for step in steps:
                    last = step["ord"]
                    yield step_frame(step)
                if len(steps) < PAGE:
                    break
        if finished:
            run = await svc.history.run(workflow_id) or {}
            yield frame("end", {"status": run.get("status"), "answer": run.get("answer")})
            return
        while True:
            try:
                kind, payload = await asyncio.wait_for(sub.queue.get(), timeout=config.heartbeat_seconds)  # type: ignore[union-attr]
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if kind == "step":
                if last is None or payload["ord"] > last:
                    last = payload["ord"]
                    lag = _lag(payload)
                    if lag is not None:
                        metrics.delivery_lag.observe(max(lag, 0.0))
                    yield step_frame(payload)
            elif kind == "delta":
                yield frame("model_delta", payload)
            elif kind == "end":
                yield frame("end", payload)
                return
            else:  # "drop": this client fell behind; it resumes from its Last-Event-ID
                metrics.dropped.inc()
                yield frame("reconnect", {"after": ord_str(last) if last else None})
                return
    finally:
        if sub is not None:
            svc.feeds.unsubscribe(sub)
            metrics.feeds.set(svc.feeds.open_feeds)
        metrics.open_streams.dec()
