"""Agents and tools of the integration tests' trees (importable by worker processes via PYTHONPATH).

``DURABLE_TEST_DIR`` names a folder where tools leave evidence of each execution, and where the
kill test's gate lives: ``gated`` writes ``holding-<key>`` and waits until ``release-<key>`` exists.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from agent_tree import HandoffResult, RunContext
from agent_tree.usage import report_model_usage


def _dir() -> Path:
    return Path(os.environ["DURABLE_TEST_DIR"])


def _record(line: str) -> None:
    with (_dir() / "executions.log").open("a") as f:
        f.write(line + "\n")


async def ledger_step(step: str, key: str) -> dict[str, Any]:
    """A tool with a side effect: one line in executions.log per completed execution."""
    _record(f"{key} {step}")
    return {"step": step, "ok": True}


async def gated(step: str, key: str) -> dict[str, Any]:
    """Holds until the test releases it (the kill test kills the worker while this waits)."""
    (_dir() / f"holding-{key}").write_text(str(os.getpid()))
    while not (_dir() / f"release-{key}").exists():  # noqa: ASYNC110 - the gate is a file another process writes
        await asyncio.sleep(0.05)
    _record(f"{key} {step}")
    return {"step": step, "released": True}


async def bookkeeper(ctx: RunContext) -> HandoffResult:
    """Three ledger steps then a gated one; its answer lists what the tools returned."""
    key = ctx.context.get("key", "k")
    results = []
    for name in ("debit", "credit", "reconcile"):
        out = await ctx.call_tool("ledger_step", step=name, key=key)
        results.append(out.output["step"])
    held = await ctx.call_tool("gated", step="close", key=key)
    results.append(held.output["step"])
    await ctx.reason("all ledger steps done")
    return ctx.ok(f"booked: {', '.join(results)}", {"steps": results})


async def intake(ctx: RunContext) -> HandoffResult:
    await ctx.reason("routing to the bookkeeper")
    return ctx.needs_more_info("needs the bookkeeper", {"key": ctx.input.split()[-1]})


def raises_tool(**kwargs: Any) -> Any:
    raise RuntimeError("the ERP is on fire")


def not_json_tool(**kwargs: Any) -> Any:
    return {"when": {1, 2, 3}}


def big_tool(size: int = 5 * 1024 * 1024) -> str:
    """Returns ``size`` characters."""
    return "x" * int(size)


def lookup(invoice_id: str) -> dict[str, Any]:
    """Look an invoice up."""
    return {"invoice_id": invoice_id, "status": "rejected", "reason": "missing_po", "amount": 1200}


def policy(topic: str) -> dict[str, Any]:
    """Find the policy of a topic."""
    return {"topic": topic, "id": "AP-7", "text": "Invoices above EUR 500 need a PO number."}


# --- nested token accounting and Python outputSchema (test_durable_usage.py) ---------------------


async def counting_planner(user_input: str) -> dict[str, Any]:
    """A planner that "calls a model" and reports its usage."""
    await report_model_usage("planner", {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}, "plan-1")
    return {"route": ["bad-pricer", "desk"]}


async def bad_pricer(ctx: RunContext) -> HandoffResult:
    return ctx.ok("priced", {"amount": "x"})


async def stamper(ctx: RunContext) -> HandoffResult:
    await ctx.call_tool("lookup", invoice_id="7")
    answer = await ctx.call_tool("ask_expert", input="is a PO needed?")
    ctx.add_tokens(500)
    return ctx.ok(f"stamped; {answer.output['summary']}", {"amount": 12.5})


async def spender(ctx: RunContext) -> HandoffResult:
    await ctx.call_tool("lookup", invoice_id="7")
    ctx.add_tokens(500)  # a model call it made itself, reported (its tokens count in the run's budgets)
    await report_model_usage("spender", {"prompt_tokens": 400, "completion_tokens": 100, "total_tokens": 500})
    return ctx.failed("could not stamp")


async def fallback(ctx: RunContext) -> HandoffResult:
    return ctx.ok("fallback answered")


# --- tool approvals (test_durable_approvals.py, tests/unit/test_embedded_approvals.py) ----------


def issue_refund(invoice: str, amount: int) -> dict[str, Any]:
    """Refund an invoice (requires approval). COUNTING: one line in refunds.log per execution."""
    with (_dir() / "refunds.log").open("a") as f:
        f.write(f"{invoice} {amount}\n")
    return {"refunded": amount, "invoice": invoice}


def refunds_done() -> list[str]:
    path = _dir() / "refunds.log"
    return path.read_text().splitlines() if path.exists() else []


async def refunder(ctx: RunContext) -> HandoffResult:
    """A Python agent: looks the invoice up (no approval), then refunds it (approval), then looks again."""
    invoice = ctx.context.get("invoice", "4821")
    await ctx.call_tool("ledger_step", step="lookup", key=invoice)
    refund = await ctx.call_tool("issue_refund", invoice=invoice, amount=120)
    await ctx.call_tool("ledger_step", step="after", key=invoice)
    if refund.status == "rejected":
        return ctx.failed(f"refund not issued: {refund.error}", {"status": refund.status})
    return ctx.ok(f"refunded {refund.output['refunded']}", {"status": refund.status})


def refund_tree(approval: dict[str, Any]) -> dict[str, Any]:
    """The AgentTree spec whose Python agent ``refunder`` calls ``issue_refund`` under ``approval``."""
    return {
        "root": "desk",
        "maxSteps": 2,
        "agents": [
            {"name": "desk", "children": ["refunder"]},
            {
                "name": "refunder",
                "entrypoint": "durable_agents:refunder",
                "tools": [
                    {"name": "ledger_step", "entrypoint": "durable_agents:ledger_step"},
                    {"name": "issue_refund", "entrypoint": "durable_agents:issue_refund", "approval": approval},
                ],
            },
        ],
    }


def slow_pay(key: str) -> dict[str, Any]:
    """A synchronous tool (it runs in a thread) with a side effect: ``paying-<key>`` names the worker's
    pid while it runs; 5 s of the worker's running time (a stopped process does not advance it), then
    one line ``<key> <agent_tree.call_key()>`` in payments.log per completed execution."""
    import time

    from agent_tree import call_key

    (_dir() / f"paying-{key}").write_text(str(os.getpid()))
    for _ in range(50):
        time.sleep(0.1)
    with (_dir() / "payments.log").open("a") as f:
        f.write(f"{key} {call_key()}\n")
    return {"paid": key}


async def payer(ctx: RunContext) -> HandoffResult:
    """Pays once, with the slow synchronous tool."""
    out = await ctx.call_tool("slow_pay", key=ctx.input.split()[-1])
    return ctx.ok(f"paid: {out.status}", {"paid": out.output})
