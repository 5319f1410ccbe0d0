"""Reading Server-Sent Events (the ``text/event-stream`` format, as browsers' EventSource parse it).

Pure and incremental: feed the text as it arrives in chunks of any size, get whole events back.
Lines end with LF, CRLF or CR; a blank line dispatches the event; ``data:`` lines are joined with
newlines; ``:`` starts a comment; ``retry:`` with digits only sets the reconnection delay; ``id:``
sets the last event id (one holding a NUL is ignored) when its event is complete: the id of an event
cut off by a dropped connection is not resumed from. An event without data is not dispatched (but
its ``id:`` still counts), as the WHATWG specification says.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field


class Event(BaseModel):
    """One event of a run's stream.

    Attributes:
        id: this event's own ``id:`` (a step's position, e.g. ``3.1.2``), None when it has none
            (``snapshot``, ``model_delta``, ``end``). The reader's :attr:`SseDecoder.last_id` is
            what a reconnect sends as Last-Event-ID.
        event: the ``event:`` name (``message`` when absent): a step type, ``snapshot``, ``end``...
        data: the ``data:`` text parsed as JSON (the text itself when it is not JSON).
    """

    id: str | None = None
    event: str = "message"
    data: Any = Field(default=None)


class SseDecoder:
    """Turns chunks of an event stream into :class:`Event` objects."""

    def __init__(self) -> None:
        self.last_id: str | None = None  # the id of the last complete event (what to resume from)
        self._id_buffer: str | None = None  # the last ``id:`` line, committed by a blank line
        self.retry_ms: int | None = None  # the last valid ``retry:``
        self._buffer = ""
        self._pending_cr = False  # a chunk ended with CR: a LF starting the next one belongs to it
        self._reset()

    def _reset(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, chunk: str) -> list[Event]:
        """The events completed by ``chunk``."""
        if not chunk:
            return []
        if self._pending_cr and chunk.startswith("\n"):
            chunk = chunk[1:]
        self._pending_cr = chunk.endswith("\r")
        self._buffer += chunk
        events: list[Event] = []
        lines = self._buffer.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._buffer = lines.pop()  # an unterminated line waits for the rest
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (the server's keep-alive)
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            if "\0" not in value:
                self._id = value
                self._id_buffer = value or None
        elif field == "retry":
            if value.isascii() and value.isdigit():
                self.retry_ms = int(value)
        return None  # unknown fields are ignored

    def _dispatch(self) -> Event | None:
        self.last_id = self._id_buffer
        if not self._data:
            self._reset()
            return None
        text = "\n".join(self._data)
        try:
            data: Any = json.loads(text)
        except ValueError:
            data = text
        event = Event(id=self._id or None, event=self._event or "message", data=data)
        self._reset()
        return event
