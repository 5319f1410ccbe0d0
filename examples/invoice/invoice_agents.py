"""Agents of the invoice example: triage, the invoice specialist and the verifier.

Each agent is a function ``(ctx: RunContext) -> HandoffResult``. The supervisor has no code: it
routes with agent_tree's policy (triage -> invoice-specialist -> verifier until one answers ``ok``).
"""

from __future__ import annotations

import re

from agent_tree import HandoffResult, RunContext

INVOICE_RE = re.compile(r"(?:invoice\s*(?:no\.?|number)?\s*#?|#)\s*(\d{3,10})", re.IGNORECASE)

REASONS = {
    "missing_po": "missing PO number",
    "amount_mismatch": "amount mismatch with the PO",
    "duplicate": "duplicate invoice",
    "approval_threshold": "awaiting second approval above the EUR 50,000 threshold",
}


def plan(user_input: str) -> dict:
    """Plan-then-execute: the route the supervisor will try."""
    return {"strategy": "triage → specialist → verifier", "route": ["triage", "invoice-specialist", "verifier"]}


async def triage(ctx: RunContext) -> HandoffResult:
    """Find the invoice number in the request; without one, answer directly and stop."""
    match = INVOICE_RE.search(ctx.input) or re.search(r"\b(\d{4,10})\b", ctx.input)
    if not match:
        await ctx.reason("No invoice number in the request; ask the user for it.")
        return ctx.ok("Please tell me the invoice number (e.g. #4821) so I can look it up.")
    invoice_id = match.group(1)
    await ctx.reason(f"The request is about invoice #{invoice_id}; the invoice specialist should look it up.")
    return ctx.needs_more_info(
        f"Request concerns invoice #{invoice_id}; routing to the invoice specialist.",
        {"invoice_id": invoice_id, "intent": "invoice_status"},
    )


async def invoice_specialist(ctx: RunContext) -> HandoffResult:
    """Look the invoice up in the ERP, find the policy behind its status, hand findings to the verifier."""
    invoice_id = ctx.context.get("invoice_id")
    if not invoice_id:
        return ctx.failed("No invoice number in the context; triage must provide one.")
    await ctx.reason(f"Need to look up invoice #{invoice_id} in the ERP.")
    found = await ctx.call_tool("erp_lookup", invoice_id=invoice_id)
    if found.status == "error":
        return ctx.ok(
            f"Invoice #{invoice_id} was not found in the ERP; please check the number.",
            {"invoice_id": invoice_id, "decision": "unknown", "error": found.error},
        )
    invoice = found.output
    topic = invoice.get("reason") or ("approved" if invoice["status"] in ("approved", "paid") else invoice["status"])
    policy = await ctx.call_tool("policy_search", topic=topic)
    policy_ref = policy.output.get("id") if policy.status == "ok" and policy.output.get("found") else None
    await ctx.reason(f"ERP status is {invoice['status']!r} ({topic}); policy {policy_ref or 'none'} applies.")
    return ctx.needs_more_info(
        f"Invoice #{invoice_id} is {invoice['status']} ({topic}); needs verification.",
        {
            "invoice_id": invoice_id,
            "decision": invoice["status"],
            "reason": invoice.get("reason"),
            "policy": policy_ref,
            "vendor": invoice["vendor"],
            "amount": invoice["amount"],
            "currency": invoice["currency"],
        },
        artifacts=[f"erp://invoices/{invoice_id}"],
    )


async def verifier(ctx: RunContext) -> HandoffResult:
    """Re-check the specialist's finding and write the final answer."""
    c = ctx.context
    if not c.get("decision"):
        return ctx.failed("Nothing to verify: no decision in the context.")
    check = await ctx.call_tool(
        "verify_answer", invoice_id=c["invoice_id"], decision=c["decision"], reason=c.get("reason")
    )
    if check.status == "error" or not check.output.get("verified"):
        return ctx.failed(f"Could not verify the finding for invoice #{c['invoice_id']}: {check.error or check.output}")
    invoice_id, decision, reason = c["invoice_id"], c["decision"], c.get("reason")
    payload = {k: c.get(k) for k in ("invoice_id", "decision", "reason", "policy", "vendor", "amount", "currency")}
    payload["verified"] = True
    if decision == "rejected":
        answer = f"Invoice #{invoice_id} rejected due to {REASONS.get(reason, reason)}."
    elif decision == "on_hold":
        answer = f"Invoice #{invoice_id} is on hold: {REASONS.get(reason, reason)}."
    else:
        answer = f"Invoice #{invoice_id} was approved and paid; it was not rejected."
    if c.get("policy"):
        answer += f" (policy {c['policy']})"
    await ctx.reason("The ERP fields confirm the finding.")
    return ctx.ok(answer, payload)
