"""The idempotency key of the tool call in progress: ``agent_tree.call_key()`` inside a tool.

Durable runs execute a tool call at least once: a worker that dies after the tool's side effect but
before its result is recorded, or a call whose worker is cut off from Temporal long enough for the call
to be retried on another worker, runs the tool again (docs/reliability.md). A tool whose effect must
happen once (a payment, an email, a ticket) passes this key to the system it changes (an
``Idempotency-Key`` header, a unique column), so that a second execution is recognised there. The key
is the same for every attempt of one call of one run and different for every other call; outside a
tool call it is None.

- Durable runs: ``<workflow id>/<journal key>/<call number>`` (the key of the worker's tool-call
  journal, docs/durable-runs.md), offered by the worker for the call it is about to make
  (:func:`offering`).
- Embedded runs (which never retry a call), and calls nobody offered a key for (the tools of an agent
  called as a tool): a fresh random key per call.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from contextvars import ContextVar

_key: ContextVar[str | None] = ContextVar("agent_tree_tool_call_key", default=None)
_offered: ContextVar[str | None] = ContextVar("agent_tree_offered_call_key", default=None)


def call_key() -> str | None:
    """The idempotency key of the tool call in progress (None outside a tool call)."""
    return _key.get()


@contextlib.contextmanager
def offering(key: str) -> Iterator[None]:
    """The next tool call made in this context (and only it) runs under ``key``."""
    token = _offered.set(key)
    try:
        yield
    finally:
        _offered.reset(token)


@contextlib.contextmanager
def calling() -> Iterator[str]:
    """Run one tool call under the offered key, or a fresh one; calls made inside it get their own."""
    key = _offered.get() or f"embedded/{uuid.uuid4().hex}"
    token, offered = _key.set(key), _offered.set(None)
    try:
        yield key
    finally:
        _offered.reset(offered)
        _key.reset(token)
