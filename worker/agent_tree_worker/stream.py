"""Live progress in Redis: one bounded stream per run (``agent_tree.naming.stream_key``).

Publishing never fails a run: when Redis is down the error is logged once and publishing is
skipped for a short back-off, because PostgreSQL already holds every step and readers fall back
to it. Entries carry the step's ``ord`` so readers can merge the stream with PostgreSQL; their encoding
is the contract's (:func:`agent_tree.contract.encode_step` / :func:`~agent_tree.contract.decode_step`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from agent_tree.contract import Step, decode_step, encode_run_end, encode_step
from agent_tree.naming import stream_key
from agent_tree_worker.config import STREAM_MAXLEN

log = logging.getLogger(__name__)

STREAM_TTL_SECONDS = 24 * 3600
# "MAXLEN ~ n" trims whole radix-tree nodes (100 entries by default), so a small n would hardly trim:
# below this the trim is exact (cheap for short streams).
EXACT_TRIM_BELOW = 1000


class StepStream:
    """Publisher (and reader) of run streams. ``url=None`` disables streaming."""

    def __init__(self, url: str | None, *, maxlen: int = STREAM_MAXLEN, backoff_seconds: float = 5.0) -> None:
        self.url = url
        self.maxlen = maxlen
        self.approximate = maxlen >= EXACT_TRIM_BELOW
        self.backoff_seconds = backoff_seconds
        self._client: aioredis.Redis | None = None
        self._down_until = 0.0

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            self._client = aioredis.Redis.from_url(
                self.url, socket_connect_timeout=1.0, socket_timeout=5.0, retry_on_timeout=False
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def publish(self, run_id: str, steps: list[Step], *, final: dict[str, Any] | None = None) -> bool:
        """XADD the steps (and an end marker when ``final`` is given); False when Redis is unavailable."""
        if not self.url or (not steps and final is None) or time.monotonic() < self._down_until:
            return False
        key = stream_key(run_id)
        try:
            pipe = self.client.pipeline(transaction=False)
            for step in steps:
                pipe.xadd(key, encode_step(step), maxlen=self.maxlen, approximate=self.approximate)
            if final is not None:
                pipe.xadd(key, encode_run_end(final), maxlen=self.maxlen, approximate=self.approximate)
                pipe.expire(key, STREAM_TTL_SECONDS)
            await pipe.execute()
            return True
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + self.backoff_seconds
            log.warning(
                "Redis unavailable, live progress of %s not published (%s); history is in PostgreSQL", run_id, exc
            )
            return False

    async def publish_transient(self, run_id: str, entries: list[dict[str, str]]) -> bool:
        """XADD already encoded transient entries (``agent_tree.contract.encode_model_delta``): live
        only, never in PostgreSQL. False (never an exception) when Redis is unset or unavailable."""
        if not self.url or not entries or time.monotonic() < self._down_until:
            return False
        key = stream_key(run_id)
        try:
            pipe = self.client.pipeline(transaction=False)
            for entry in entries:
                pipe.xadd(key, entry, maxlen=self.maxlen, approximate=self.approximate)
            await pipe.execute()
            return True
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + self.backoff_seconds
            log.warning("Redis unavailable, live model text of %s not published (%s)", run_id, exc)
            return False

    async def follow(self, run_id: str, last_id: str = "0", block_ms: int = 1000) -> AsyncIterator[tuple[str, dict]]:
        """Entries after ``last_id``, blocking up to ``block_ms`` for new ones; raises RedisError when down."""
        reply = await self.client.xread({stream_key(run_id): last_id}, block=block_ms, count=500)
        for _key, entries in reply or []:
            for entry_id, fields in entries:
                yield (entry_id.decode() if isinstance(entry_id, bytes) else entry_id), decode_step(fields)
