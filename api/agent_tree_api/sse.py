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
import time
from collections.abc import AsyncIterator
from typing import Any

from agent_tree.contract import ord_str
from agent_tree_api.deps import Services
from agent_tree_api.feeds import PAGE
from agent_tree_api.frames import frame, step_frame

BATCH = 500
"""At most this many queued events go out in one write (a listener that fell behind catches up in a
few writes instead of one per event)."""

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}
DESCRIPTION = (
    "text/event-stream. Events: `snapshot` (the run, no id), one event per step named by its type with "
    "`id:` = its position (resume with Last-Event-ID or ?since=), `model_delta` (live model text, no id), "
    "`reconnect` (the client fell behind: reconnect with Last-Event-ID), `end` (final status; the stream closes). "
    "A `:` comment every 15 s of silence."
)


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
                if steps:
                    last = steps[-1]["ord"]
                    yield b"".join(step_frame(step) for step in steps)
                if len(steps) < PAGE:
                    break
        if finished:
            run = await svc.history.run(workflow_id) or {}
            yield frame("end", {"status": run.get("status"), "answer": run.get("answer")})
            return
        queue = sub.queue  # type: ignore[union-attr]
        while True:
            try:
                async with asyncio.timeout(config.heartbeat_seconds):
                    items = [await queue.get()]
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            while len(items) < BATCH and not queue.empty():
                items.append(queue.get_nowait())
            out: list[bytes] = []
            now = time.time()
            for kind, payload in items:
                if kind == "step":
                    if last is None or payload.ord > last:
                        last = payload.ord
                        if payload.ts is not None:
                            metrics.delivery_lag.observe(max(now - payload.ts, 0.0))
                        out.append(payload.frame)
                elif kind == "delta":
                    out.append(payload)
                elif kind == "end":
                    out.append(payload)
                    yield b"".join(out)
                    return
                else:  # "drop": this client fell behind; it resumes from its Last-Event-ID
                    metrics.dropped.inc()
                    out.append(frame("reconnect", {"after": ord_str(last) if last else None}))
                    yield b"".join(out)
                    return
            if out:
                yield b"".join(out)
    finally:
        if sub is not None:
            svc.feeds.unsubscribe(sub)
            metrics.feeds.set(svc.feeds.open_feeds)
        metrics.open_streams.dec()
