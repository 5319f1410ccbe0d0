"""An AgentRun's maxSteps, timeoutSeconds and budgets end a durable run (real Temporal dev server,
one worker per agent) and an embedded run of the same tree with the same status, answer and final
agent (issue 11 item 3): both executors take these decisions with agent_tree.policy.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from durable_support import run_durable, tree_spec, unique
from temporalio.client import Client

from agent_tree import HandoffResult, RunContext, policy, usage
from agent_tree.compiler import compile_tree
from agent_tree.models import SupervisorResult

pytestmark = pytest.mark.asyncio

HERE = __name__  # the agents below are entrypoints of this module


def lookup(invoice_id: str) -> dict[str, Any]:
    return {"invoice_id": invoice_id, "status": "ok"}


async def spender(ctx: RunContext) -> HandoffResult:
    """500 tokens and two tool calls, then a failed handoff: the supervisor would try the next child."""
    await ctx.call_tool("lookup", invoice_id="7")
    await ctx.call_tool("lookup", invoice_id="8")
    ctx.add_tokens(500)
    await usage.report_model_usage("spender", {"total_tokens": 500})  # a model call it made, reported
    return ctx.failed("could not stamp", {"spent": 500})


async def asker(ctx: RunContext) -> HandoffResult:
    return ctx.needs_more_info("need the PO", {"asked": True})


async def sleeper(ctx: RunContext) -> HandoffResult:
    await asyncio.sleep(60)
    return ctx.ok("woke up")


async def fallback(ctx: RunContext) -> HandoffResult:
    return ctx.ok("fallback answered")


def spec_of(first: str) -> Any:
    """office -> desk (a nested supervisor over ``first`` and asker), then fallback."""
    return tree_spec(
        {
            "root": "office",
            "agents": [
                {"name": "office", "children": ["desk", "fallback"]},
                {"name": "desk", "children": [first, "asker"]},
                {
                    "name": first,
                    "entrypoint": f"{HERE}:{first}",
                    "tools": [{"name": "lookup", "entrypoint": f"{HERE}:lookup"}],
                },
                {"name": "asker", "entrypoint": f"{HERE}:asker"},
                {"name": "fallback", "entrypoint": f"{HERE}:fallback"},
            ],
        }
    )


CASES = {
    "tokens": ("spender", {"budgets": {"maxTokens": 100}}),
    "turns": ("spender", {"budgets": {"maxTurns": 2}}),
    "tool-calls": ("spender", {"budgets": {"maxToolCalls": 1}}),
    "within-budgets": ("spender", {"budgets": {"maxToolCalls": 2, "maxTokens": 500}}),
    "max-steps": ("spender", {"max_steps": 1}),
    "timeout": ("sleeper", {"timeout_seconds": 2}),
}
REASONS = {
    "tokens": "BudgetExceeded",
    "turns": "BudgetExceeded",
    "tool-calls": "BudgetExceeded",
    "timeout": "DeadlineExceeded",
}
# A budget stops the run inside desk (the nested supervisor): the root saw no handoff yet.
EXHAUSTED = "budget exhausted: spec.budgets."
EXPECTED = {
    "tokens": (
        "failed",
        f"{EXHAUSTED}maxTokens is 100; the run used 500 tokens, stopped before the next agent turn",
        None,
    ),
    "turns": (
        "failed",
        f"{EXHAUSTED}maxTurns is 2; the run used 2 turns and the next agent turn needs 1 more",
        None,
    ),
    "tool-calls": (
        "failed",
        f"{EXHAUSTED}maxToolCalls is 1; the run used 1 tool calls and the next tool call needs 1 more",
        None,
    ),
    "within-budgets": ("completed", "fallback answered", "fallback"),
    "max-steps": ("max_steps_reached", "stopped after max_steps=1 child turns without an ok handoff", "desk"),
    "timeout": ("failed", policy.TIMED_OUT, "desk"),
}


async def embedded(spec: Any, limits: dict[str, Any]) -> SupervisorResult:
    compiled = compile_tree(spec)
    return await compiled.orchestrator(
        max_steps=limits.get("max_steps") or compiled.max_steps,
        timeout_seconds=limits.get("timeout_seconds"),
        budgets=limits.get("budgets"),
    ).run("stamp invoice 7")


@pytest.mark.parametrize("case", sorted(CASES))
async def test_the_same_stop_durable_and_embedded(client: Client, database_url: str, redis_url: str, case: str) -> None:
    first, limits = CASES[case]
    spec = spec_of(first)
    _, durable = await run_durable(
        client,
        spec,
        namespace=unique("lim"),
        tree="t",
        user_input="stamp invoice 7",
        database_url=database_url,
        redis_url=redis_url,
        **limits,
    )
    local = await embedded(spec, limits)
    assert (durable["status"], durable["answer"], durable["final_agent"]) == EXPECTED[case]
    assert (local.status, local.answer, local.final_agent) == EXPECTED[case]
    assert (local.steps, local.token_usage) == (durable["steps"], durable["token_usage"])
    # The same reason too (the AgentRun's condition reason): which limit stopped the run, if one did.
    assert local.reason == durable.get("reason") == REASONS.get(case)
    if "budgets" in limits:  # the same usage against the budgets (turns, tool calls, tokens)
        assert local.usage == durable["usage"]


async def nap(seconds: float) -> dict[str, Any]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


async def test_a_model_agent_whose_tool_outlasts_the_deadline_fails_the_run_in_both_modes(
    client: Client, database_url: str, redis_url: str, fake_openai: Any
) -> None:
    """The tool call is cut at the deadline; the model would then answer at once ("All done."), but a
    turn still running at the deadline is stopped: the run fails as timed out, durable and embedded.
    (Durably the model call after the cut tool used to run and the run Succeeded past its timeout.)"""
    fake_openai.scripts["lim-clerk"] = [{"tool_calls": [("nap", {"seconds": 30})]}, {"content": "All done."}]
    spec = tree_spec(
        {
            "root": "desk",
            "agents": [
                {"name": "desk", "children": ["clerk", "asker"]},
                {
                    "name": "clerk",
                    "model": {"name": "lim-clerk", "baseUrl": fake_openai.base_url},
                    "tools": [{"name": "nap", "entrypoint": f"{HERE}:nap", "timeoutSeconds": 60}],
                },
                {"name": "asker", "entrypoint": f"{HERE}:asker"},
            ],
        }
    )
    _, durable = await run_durable(
        client,
        spec,
        namespace=unique("lim"),
        tree="t",
        user_input="nap",
        database_url=database_url,
        redis_url=redis_url,
        timeout_seconds=3,
    )
    local = await embedded(spec, {"timeout_seconds": 3})
    for result in (durable, {"status": local.status, "answer": local.answer, "reason": local.reason}):
        assert (result["status"], result["answer"], result.get("reason")) == (
            "failed",
            policy.TIMED_OUT,
            "DeadlineExceeded",
        ), result
    [clerk] = [h for h in local.handoffs if h.from_agent == "clerk"]
    assert clerk.status == "failed" and "the run timed out" in clerk.summary, clerk
    assert local.steps == durable["steps"]
