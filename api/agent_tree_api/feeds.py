"""Live runs for many listeners: one feed per followed run, whatever the number of SSE clients.

A feed reads its run's Redis stream only as a WAKE-UP (and for the transient ``model_delta`` text),
and PostgreSQL as the RECORD: on each batch of stream entries, and at least every
``poll_seconds``, it reads the steps PostgreSQL holds after the last one it sent, and hands them to
every subscriber in ``ord`` order. So a step the bounded stream no longer holds, or never got while
Redis was down, is still delivered, and in order; with Redis down the feed polls PostgreSQL. The
workers write PostgreSQL before they publish (``activities.write``), so a wake-up never comes before
its row. The feed ends after the run's end marker (or a final status in PostgreSQL) with one last read.

Each subscriber has its own bounded queue: a client that cannot keep up is dropped (its stream ends
with ``reconnect`` and the client resumes from its ``Last-Event-ID``) rather than making the feed or
the API's memory wait for it. A feed encodes each event once (``frames.EncodedStep``, bytes), so what a
listener does per event is a queue hand-off and a concatenation, whatever the number of listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from agent_tree.contract import RUN_END, RUN_STATUSES, decode_step, is_transient
from agent_tree.naming import stream_key
from agent_tree_api.frames import EncodedStep, frame
from agent_tree_api.history import History, HistoryUnavailable

log = logging.getLogger(__name__)

QUEUE_MAX = 5000
PAGE = 1000


@dataclass(eq=False)  # compared and hashed by identity: a set holds each listener
class Subscription:
    """What one listener receives: ``(kind, payload)`` with kind ``step`` (an :class:`EncodedStep`),
    ``delta`` or ``end`` (the frame's bytes) or ``drop``."""

    workflow_id: str
    queue: asyncio.Queue[tuple[str, Any]] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX + 1))
    dropped: bool = False
    catch_up: bool = True
    """True: read the steps after your position from PostgreSQL yourself (the feed already ran when
    you joined); False: you started the feed at your position, so it sends you everything after it."""


class Feed:
    """The one reader of one run, fanning out to its subscribers."""

    def __init__(self, hub: Feeds, workflow_id: str) -> None:
        self.hub = hub
        self.workflow_id = workflow_id
        self.subscribers: set[Subscription] = set()
        self.last_ord: list[int] | None = None
        self.task: asyncio.Task[None] | None = None

    def broadcast(self, kind: str, payload: Any) -> None:
        for sub in list(self.subscribers):
            if sub.dropped:
                continue
            if sub.queue.qsize() >= QUEUE_MAX:
                sub.dropped = True
                sub.queue.put_nowait(("drop", None))
                continue
            sub.queue.put_nowait((kind, payload))

    async def read_history(self) -> None:
        """Send the steps PostgreSQL holds after the last one sent."""
        while True:
            steps = await self.hub.history.steps(self.workflow_id, after=self.last_ord, limit=PAGE)
            for step in steps:
                self.last_ord = step["ord"]
                self.broadcast("step", EncodedStep.of(step))
            if len(steps) < PAGE:
                return

    async def final_status(self) -> dict[str, Any] | None:
        run = await self.hub.history.run(self.workflow_id)
        if run and run["status"] in RUN_STATUSES:
            return {"status": run["status"], "answer": run["answer"]}
        return None

    async def run(self) -> None:
        stream_id = await self.hub.stream_position(self.workflow_id)
        last_check = 0.0
        ended: dict[str, Any] | None = None
        need_read = True  # PostgreSQL may hold steps not sent yet
        while self.subscribers:
            try:
                if ended is None:
                    if need_read:
                        await self.read_history()
                    if time.monotonic() - last_check >= self.hub.poll_seconds:
                        last_check = time.monotonic()
                        ended = await self.final_status()
                if ended is not None:
                    await self.read_history()  # the run's last steps were written before its end
                    self.broadcast("end", frame("end", ended))
                    return
                need_read = False
            except HistoryUnavailable as exc:
                log.warning("run %s: %s; retrying", self.workflow_id, exc)
            if stream_id is not None:
                try:
                    entries = await self.hub.read_stream(self.workflow_id, stream_id)
                    if not entries:
                        need_read, last_check = True, 0.0  # a quiet stream: look at PostgreSQL now
                    for entry_id, fields in entries:
                        stream_id = entry_id
                        if is_transient(fields):
                            # model text: no PostgreSQL read
                            self.broadcast("delta", frame("model_delta", decode_step(fields)))
                            continue
                        need_read = True
                        if fields.get(b"type") == RUN_END.encode():
                            ended = decode_step(fields)["data"]
                except (RedisError, OSError) as exc:
                    log.warning("run %s: Redis unavailable (%s); polling PostgreSQL", self.workflow_id, exc)
                    stream_id = None
            if stream_id is None:
                await asyncio.sleep(self.hub.poll_seconds)
                need_read = True
                stream_id = await self.hub.stream_position(self.workflow_id)


class Feeds:
    """Every feed of this API process (``redis_url`` None: PostgreSQL polling only)."""

    def __init__(self, history: History, redis_url: str | None, *, poll_seconds: float = 1.0) -> None:
        self.history = history
        self.redis_url = redis_url
        self.poll_seconds = poll_seconds
        self._feeds: dict[str, Feed] = {}
        self._redis: aioredis.Redis | None = None

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(
                self.redis_url, socket_connect_timeout=1.0, socket_timeout=5.0, max_connections=200
            )
        return self._redis

    async def stream_position(self, workflow_id: str) -> str | None:
        """The stream's last entry id (``0-0`` for no stream yet); None when Redis is unset or down."""
        if not self.redis_url:
            return None
        try:
            last = await self.redis.xrevrange(stream_key(workflow_id), count=1)
        except (RedisError, OSError):
            return None
        if not last:
            return "0-0"
        entry_id = last[0][0]
        return entry_id.decode() if isinstance(entry_id, bytes) else entry_id

    async def read_stream(self, workflow_id: str, after: str) -> list[tuple[str, dict[bytes, bytes]]]:
        """Entries after ``after``, blocking up to ``poll_seconds`` for the first."""
        reply = await self.redis.xread(
            {stream_key(workflow_id): after}, block=int(self.poll_seconds * 1000), count=PAGE
        )
        out = []
        for _key, entries in reply or []:
            for entry_id, fields in entries:
                out.append((entry_id.decode() if isinstance(entry_id, bytes) else entry_id, fields))
        return out

    def subscribe(self, workflow_id: str, since: list[int] | None) -> Subscription:
        """Register a listener at position ``since``; the caller MUST :meth:`unsubscribe` it (a ``finally``).

        A listener that starts a feed starts it at its own position (no catch-up of its own); one that
        joins a running feed reads what came before from PostgreSQL AFTER joining, so every step is in
        that read or comes from the feed (and duplicates are dropped by ``ord``).
        """
        sub = Subscription(workflow_id)
        feed = self._feeds.get(workflow_id)
        # A feed whose last listener just left is being cancelled (cancelling() > 0) but not done yet:
        # joining it would wait forever for a reader that is gone. Start a new one instead.
        if feed is None or feed.task is None or feed.task.done() or feed.task.cancelling():
            feed = self._feeds[workflow_id] = Feed(self, workflow_id)
            feed.last_ord = since
            sub.catch_up = False
            feed.subscribers.add(sub)
            feed.task = asyncio.create_task(self._run(feed), name=f"feed {workflow_id}")
        else:
            feed.subscribers.add(sub)
        return sub

    async def _run(self, feed: Feed) -> None:
        try:
            await feed.run()
        except asyncio.CancelledError:
            feed.broadcast("drop", None)  # anyone still subscribed resumes with its Last-Event-ID
            raise
        except Exception:
            log.exception("feed of %s failed; its listeners reconnect", feed.workflow_id)
            feed.broadcast("drop", None)
        finally:
            if self._feeds.get(feed.workflow_id) is feed:
                del self._feeds[feed.workflow_id]

    def unsubscribe(self, sub: Subscription) -> None:
        feed = self._feeds.get(sub.workflow_id)
        if feed is None:
            return
        feed.subscribers.discard(sub)
        if not feed.subscribers and feed.task is not None:
            feed.task.cancel()

    @property
    def open_feeds(self) -> int:
        return len(self._feeds)

    async def close(self) -> None:
        for feed in list(self._feeds.values()):
            if feed.task is not None:
                feed.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await feed.task
        if self._redis is not None:
            await self._redis.aclose()
