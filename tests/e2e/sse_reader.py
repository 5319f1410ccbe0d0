"""A small blocking Server-Sent Events reader for e2e tests (httpx), keeping what the wire carried.

Each :class:`Frame` is one block of the stream: an event (``event``, ``id``, ``data`` parsed as JSON),
a ``retry:`` line or a ``:`` comment, so tests can check the framing itself, not only the payloads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Frame:
    event: str | None = None
    id: str | None = None
    data: Any = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def is_step(self) -> bool:
        return self.id is not None


class SseReader:
    """``with SseReader(url, headers) as sse: sse.response.headers; for frame in sse: ...``.

    ``read_timeout`` bounds the wait for the next bytes: a stream that goes silent fails the test.
    """

    def __init__(self, url: str, headers: dict[str, str], read_timeout: float = 30.0) -> None:
        self.client = httpx.Client(timeout=httpx.Timeout(10.0, read=read_timeout))
        self.request = self.client.build_request("GET", url, headers={"Accept": "text/event-stream", **headers})
        self.response: httpx.Response | None = None
        self.frames: list[Frame] = []

    def __enter__(self) -> SseReader:
        self.response = self.client.send(self.request, stream=True)
        self._lines = self.response.iter_lines()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Disconnect (as a client that goes away mid-stream)."""
        if self.response is not None:
            self.response.close()
        self.client.close()

    def __iter__(self) -> Iterator[Frame]:
        frame = Frame()
        data: list[str] = []
        for line in self._lines:
            if line == "":
                if data:
                    frame.data = json.loads("\n".join(data))
                if frame.event or frame.retry is not None or frame.comments or frame.id is not None:
                    self.frames.append(frame)
                    yield frame
                frame, data = Frame(), []
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                frame.comments.append(value)
            elif name == "event":
                frame.event = value
            elif name == "id":
                frame.id = value
            elif name == "data":
                data.append(value)
            elif name == "retry":
                frame.retry = int(value)

    def until(self, predicate: Callable[[Frame], bool]) -> list[Frame]:
        """Read frames up to and including the first that satisfies ``predicate``; fail if the stream ends."""
        seen = []
        for frame in self:
            seen.append(frame)
            if predicate(frame):
                return seen
        raise AssertionError(f"the stream ended before the expected frame; got {[f.event for f in seen]}")
