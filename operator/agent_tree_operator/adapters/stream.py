"""Following the live progress of every active run over ONE Redis connection.

Each run publishes its steps to its own stream (``agent_tree.naming.stream_key(workflow_id)``, written
by the worker; entries decoded with the contract's :func:`agent_tree.contract.decode_step`). One
``XREAD`` can block on many streams at once, so a single hub task serves every run the operator
follows, and each run's daemon reads its entries from an in-memory queue. When Redis is unset or
down, :attr:`StreamHub.available` is False and the daemons fall back to the workflow's ``progress``
query; the hub reconnects with backoff in the meantime. Transient entries (live model text,
``agent_tree.contract.MODEL_DELTA``) are skipped here: they are never steps and never move a status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from agent_tree.contract import decode_step, is_transient
from agent_tree.naming import stream_key

log = logging.getLogger(__name__)

BACKOFF = (0.5, 1, 2, 5, 10)


@dataclass
class Subscription:
    """The entries of one run's stream after ``last_id``, delivered to ``queue`` as ``(id, step)``."""

    key: str
    last_id: str = "0-0"
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = field(default_factory=asyncio.Queue)


class StreamHub:
    """One task, one connection, every followed run's stream."""

    def __init__(self, url: str | None, block_ms: int = 500, batch: int = 500) -> None:
        self.url = url
        self.block_ms = block_ms
        self.batch = batch
        self._subs: dict[str, Subscription] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: aioredis.Redis | None = None
        self.healthy = False

    @property
    def available(self) -> bool:
        """True when entries are flowing (Redis configured and the last read worked)."""
        return self.url is not None and self.healthy

    def start(self) -> None:
        if self.url and self._task is None:
            self._task = asyncio.create_task(self._run(), name="agent-tree-stream-hub")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None

    def subscribe(self, workflow_id: str, last_id: str = "0-0") -> Subscription:
        sub = Subscription(key=stream_key(workflow_id), last_id=last_id)
        self._subs[sub.key] = sub
        self._wake.set()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if self._subs.get(sub.key) is sub:
            del self._subs[sub.key]

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self._subs:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                if self._client is None:
                    self._client = aioredis.Redis.from_url(
                        self.url, socket_connect_timeout=2.0, socket_timeout=self.block_ms / 1000 + 5
                    )
                streams = {key: sub.last_id for key, sub in self._subs.items()}
                reply = await self._client.xread(streams, block=self.block_ms, count=self.batch)
            except (RedisError, OSError) as exc:
                if self.healthy or failures == 0:
                    log.warning("Redis unavailable (%s); following runs through the Temporal progress query", exc)
                self.healthy = False
                delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
                failures += 1
                if self._client is not None:
                    with contextlib.suppress(Exception):
                        await self._client.aclose()
                    self._client = None
                await asyncio.sleep(delay)
                continue
            if not self.healthy and failures:
                log.info("Redis is back; following runs through their streams again")
            self.healthy, failures = True, 0
            for raw_key, entries in reply or []:
                key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
                sub = self._subs.get(key)
                if sub is None:
                    continue
                for raw_id, fields in entries:
                    entry_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
                    sub.last_id = entry_id
                    if is_transient(fields):  # live model text: never a step, never status
                        continue
                    try:
                        step = decode_step(fields)
                    except ValueError:
                        continue
                    sub.queue.put_nowait((entry_id, step))


def step_event(step: dict[str, Any]) -> dict[str, Any]:
    """A decoded stream step as an ``agent_tree.events`` event (its ``data``, plus type and agent)."""
    data = step.get("data") if isinstance(step.get("data"), dict) else {}
    event = dict(data)
    event.setdefault("type", step.get("type"))
    if step.get("agent") and not event.get("agent"):
        event["agent"] = step["agent"]
    return event
