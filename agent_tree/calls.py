"""Small helpers for calling user code: sync or async alike, and errors as one line of text."""

from __future__ import annotations

import inspect
from typing import Any


async def maybe_await(value: Any) -> Any:
    """Await ``value`` when it is awaitable, so sync and async callables are used the same way."""
    if inspect.isawaitable(value):
        return await value
    return value


def error_message(exc: BaseException) -> str:
    """``"ValueError: text"`` (or just the type's name when the exception has no text)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
