"""Live model text: the deltas of one model call, coalesced and published to the run's stream.

A model streams a token every few milliseconds; one stream entry per token would flood Redis and
every reader. :class:`Coalescer` sends the text gathered so far at most every ``interval`` seconds,
sooner once ``max_chars`` are waiting, and the rest when the call ends (:meth:`Coalescer.close`).
:class:`DeltaPublisher` turns each send into ``model_delta`` entries
(:func:`agent_tree.contract.encode_model_delta`) on the run's stream. Publishing never fails the
model call: the entries are live only (never in PostgreSQL), and a reader that misses them still
gets the final message from the call's recorded steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from agent_tree.contract import encode_model_delta
from agent_tree.spec import AgentSpec
from agent_tree_worker.stream import StepStream

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 0.05
MAX_CHARS = 200
ENTRY_CHARS = 4096
"""Longest text of one entry (well under the stream's entry limit): a longer send is split."""


class Coalescer:
    """Gathers text from :meth:`add` and hands it to ``send`` in order, in fewer, larger pieces."""

    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        *,
        interval: float = INTERVAL_SECONDS,
        max_chars: int = MAX_CHARS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.send = send
        self.interval = interval
        self.max_chars = max_chars
        self.clock = clock
        self._buf: list[str] = []
        self._size = 0
        self._last = clock()  # the first piece waits for ``interval`` too: a fast start is coalesced
        self._timer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def add(self, text: str) -> None:
        if not text:
            return
        self._buf.append(text)
        self._size += len(text)
        if self._size >= self.max_chars or self.clock() - self._last >= self.interval:
            await self.flush()
        elif self._timer is None:
            # Nothing more may come for a while (the model pauses): send what waits once the interval is up.
            self._timer = asyncio.create_task(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(max(0.0, self._last + self.interval - self.clock()))
        self._timer = None
        await self.flush()

    async def flush(self) -> None:
        async with self._lock:  # one send at a time: pieces arrive in order
            if not self._buf:
                return
            text = "".join(self._buf)
            self._buf.clear()
            self._size = 0
            self._last = self.clock()
            await self.send(text)

    async def close(self) -> None:
        """Send what is left (the call ended, or failed: the text so far is still shown)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        await self.flush()


class DeltaPublisher:
    """The ``send`` of one model call's :class:`Coalescer`: ``model_delta`` entries, ``seq`` 0, 1, 2..."""

    def __init__(self, stream: StepStream, run_id: str, *, agent: str, model: str | None, call: str) -> None:
        self.stream = stream
        self.run_id = run_id
        self.agent = agent
        self.model = model
        self.call = call
        self.seq = itertools.count()
        self.sent = 0

    async def __call__(self, text: str) -> None:
        ts = datetime.now(UTC).isoformat()
        entries = [
            encode_model_delta(
                agent=self.agent, model=self.model, call=self.call, seq=next(self.seq), text=piece, ts=ts
            )
            for piece in (text[i : i + ENTRY_CHARS] for i in range(0, len(text), ENTRY_CHARS))
        ]
        try:
            if await self.stream.publish_transient(self.run_id, entries):
                self.sent += len(entries)
        except Exception as exc:  # live text is best effort: the model call goes on
            log.warning("live model text of %s not published: %s", self.run_id, exc)


def live_text(stream: StepStream, run_id: str, agent: AgentSpec, call: str) -> Coalescer | None:
    """The ``on_delta`` sink of one model call of ``agent`` (its :meth:`Coalescer.add`), or None: no
    streaming without Redis (nobody would see the text) or with ``model.stream: false``."""
    if not stream.url or agent.model is None or agent.model.stream is False:
        return None
    return Coalescer(DeltaPublisher(stream, run_id, agent=agent.name, model=agent.model.name, call=call))
