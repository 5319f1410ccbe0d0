"""Counting refund tools of tests/e2e/test_approvals.py: each call appends one JSON line to
``$APK_TOOL_LOG``, so the test sees how often a tool really ran (worker pods are local processes)."""

from __future__ import annotations

import json
import os
from typing import Any


def _count(tool: str, invoice_id: str, amount: float) -> None:
    with open(os.environ["APK_TOOL_LOG"], "a") as out:
        out.write(json.dumps({"tool": tool, "invoice_id": invoice_id, "amount": amount}) + "\n")


async def issue_refund(invoice_id: str, amount: float) -> dict[str, Any]:
    """Refund ``amount`` on invoice ``invoice_id``."""
    _count("issue_refund", invoice_id, amount)
    return {"refunded": amount, "invoice_id": invoice_id}


async def refund_small(invoice_id: str, amount: float) -> dict[str, Any]:
    """Refund a small ``amount`` on invoice ``invoice_id`` (approved by itself when nobody decides)."""
    _count("refund_small", invoice_id, amount)
    return {"refunded": amount, "invoice_id": invoice_id}
