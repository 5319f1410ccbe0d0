"""Identical requests in flight at the same time share one call to the Kubernetes API.

Many streams opening at once with the same token (an application fanning its users out, a page with
several tabs) would otherwise send the API server one TokenReview, one SubjectAccessReview and one
``GET`` of the AgentRun EACH before the first answer fills a cache: 500 clients on 20 runs were 500
TokenReviews and 500 GETs at once, more than the client's connection pool could hold within its
timeout, and every stream failed with 503 (bench/bench_api.py). Sharing only what is IN FLIGHT
changes no answer: a caller gets what the API server said to the same question, for the same
token, while it was asking; nothing outlives the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

T = TypeVar("T")


class Inflight:
    """``await inflight.run(key, call)``: the outcome (result or exception) of the one ``call`` in flight for ``key``."""

    def __init__(self) -> None:
        self._calls: dict[Hashable, asyncio.Future] = {}

    async def run(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        future = self._calls.get(key)
        if future is None:
            # A task of its own: a waiter that goes away (a client disconnecting) cancels only its wait.
            future = asyncio.ensure_future(call())
            self._calls[key] = future
            future.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(future)

    def _finished(self, key: Hashable, done: asyncio.Future) -> None:
        if self._calls.get(key) is done:
            del self._calls[key]
        if not done.cancelled():
            done.exception()  # retrieved here, so one with no waiter left is not logged as never retrieved

    def __len__(self) -> int:
        return len(self._calls)
