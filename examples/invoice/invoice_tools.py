"""Tools of the invoice example: an ERP lookup, an accounts-payable policy search and a verifier.

The data is a small, realistic fixture (``data/``); in production these would call the ERP and the
policy wiki. Tools are plain functions: sync or async, keyword arguments in, JSON-able data out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"
TOLERANCE = 0.02
PO_REQUIRED_ABOVE = 500.0


def _load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


class InvoiceNotFound(LookupError):
    pass


async def erp_lookup(invoice_id: str) -> dict[str, Any]:
    """Look up an invoice in the ERP by its number."""
    invoices = _load("invoices.json")
    key = str(invoice_id).lstrip("#")
    if key not in invoices:
        raise InvoiceNotFound(f"invoice #{key} does not exist in the ERP")
    return {"invoice_id": key, **invoices[key]}


def policy_search(topic: str) -> dict[str, Any]:
    """Find the accounts-payable policy for a topic (a rejection reason or 'approved')."""
    policies = _load("policies.json")
    if topic not in policies:
        return {"topic": topic, "found": False}
    return {"topic": topic, "found": True, **policies[topic]}


async def verify_answer(invoice_id: str, decision: str, reason: str | None = None) -> dict[str, Any]:
    """Independently re-check a decision about an invoice against the ERP's raw fields."""
    invoice = await erp_lookup(invoice_id)
    invoices = _load("invoices.json")
    checks: dict[str, bool] = {}
    amount, po_amount = invoice["amount"], invoice.get("po_amount")
    if reason == "missing_po":
        checks["no_po_number"] = invoice.get("po") is None
        checks["amount_requires_po"] = amount > PO_REQUIRED_ABOVE
    elif reason == "amount_mismatch":
        checks["has_po_amount"] = po_amount is not None
        checks["over_tolerance"] = po_amount is not None and amount > po_amount * (1 + TOLERANCE)
    elif reason == "duplicate":
        original = invoices.get(str(invoice.get("duplicate_of")), {})
        checks["original_paid"] = original.get("status") == "paid"
        checks["same_vendor_amount_po"] = all(original.get(k) == invoice[k] for k in ("vendor", "amount", "po"))
    elif reason == "approval_threshold":
        checks["above_threshold"] = amount > 50000
    checks["erp_status_matches"] = invoice["status"] == decision
    return {"invoice_id": invoice["invoice_id"], "verified": all(checks.values()), "checks": checks}
