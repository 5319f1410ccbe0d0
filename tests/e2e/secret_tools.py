"""Tools of the secrets e2e test (tests/e2e/test_secrets.py): one that fails, one that takes its time.

Worker pods import it (the tree's ``PYTHONPATH`` names this folder)."""

from __future__ import annotations

import asyncio


def fail() -> dict:
    """Always fails, like a backend that is down."""
    raise RuntimeError("the backend refused the request")


async def nap(seconds: float) -> dict:
    """Answers after ``seconds`` (a run's timeout or a cancellation comes first)."""
    await asyncio.sleep(seconds)
    return {"slept": seconds}
