"""A test-only slow variant of the invoice example's ERP tool (tests/e2e/test_autoscale.py).

``erp_lookup`` waits ``SLOW_TOOL_SECONDS`` (asynchronously, so it holds an activity slot, not a
thread) before answering like the example's tool: with a few activity slots per worker, turns queue
up and the specialist's task queue builds a backlog the autoscaler must answer.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import invoice_tools


async def erp_lookup(invoice_id: str) -> dict[str, Any]:
    await asyncio.sleep(float(os.environ.get("SLOW_TOOL_SECONDS", "0")))
    return await invoice_tools.erp_lookup(invoice_id)
