"""Gated tools of the browser tests: the invoice example's tools, each waiting until the test opens
its gate (a file ``<tool>-<invoice>`` in ``$WEB_GATE_DIR``), so a run stands still at a known agent
while the page is looked at, and moves when the test says so. Worker pods are local processes here."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import invoice_tools

GATE_SECONDS = 240.0


async def _gate(tool: str, invoice_id: str) -> None:
    gate = Path(os.environ["WEB_GATE_DIR"]) / f"{tool}-{str(invoice_id).lstrip('#')}"
    deadline = time.monotonic() + GATE_SECONDS
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} was not opened within {GATE_SECONDS}s")
        await asyncio.sleep(0.1)


async def erp_lookup(invoice_id: str) -> dict[str, Any]:
    """Look up an invoice in the ERP by its number (once the test opens the gate)."""
    await _gate("erp", invoice_id)
    return await invoice_tools.erp_lookup(invoice_id)
