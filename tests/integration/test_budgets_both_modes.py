"""Budgets (issue 12 item 5) on a tree of model agents (the local OpenAI-compatible server with known
usage numbers): a model router, a nested model router, a model agent that calls another model agent
as a tool. Each budget stops the durable run (real Temporal, PostgreSQL, Redis, one worker per agent)
and the embedded run at the same call, with the same status, answer, reason and usage, checked
BEFORE the call, so a refused call never reaches the model server.

usage_tree's calls, in order (prompt + completion = total): desk routes (100+20), ops routes (100+30),
billing (100+40, asks expert), expert (100+60), billing (100+50). Turns: ops, billing, expert (as a
tool). Tool calls: ask_expert.
"""

from __future__ import annotations

from typing import Any

import pytest
from durable_support import run_durable, tree_spec, unique
from fake_openai import FakeOpenAI, script_usage_tree, usage_tree
from temporalio.client import Client

from agent_tree.compiler import compile_tree

pytestmark = pytest.mark.integration

RESERVE = 100  # every agent's model.maxTokens: what each call reserves
PRICING = {"inputPerMillionTokens": 1.0, "outputPerMillionTokens": 1000.0}


def priced_tree(base_url: str) -> Any:
    doc = usage_tree(base_url)
    for agent in doc["agents"]:
        agent["model"].update(maxTokens=RESERVE, pricing=PRICING)
    return tree_spec(doc)


CASES: dict[str, tuple[dict[str, Any], int, str, dict[str, Any]]] = {
    # budgets, model calls made, answer, usage at the stop
    "maxTurns": (
        {"maxTurns": 2},
        3,
        "budget exhausted: spec.budgets.maxTurns is 2; the run used 2 turns and the next agent turn needs 1 more",
        {"turns": 2, "toolCalls": 1, "tokens": 390},
    ),
    "maxToolCalls": (
        {"maxToolCalls": 1, "maxTokens": 10_000},
        5,  # one tool call is within a budget of one: the run completes
        "Invoice 7 is fine.",
        {"turns": 3, "toolCalls": 1, "tokens": 700},
    ),
    "maxTokens": (
        {"maxTokens": 500},
        4,  # the 5th call (550 used + 100 reserved > 500) is not made
        "budget exhausted: spec.budgets.maxTokens is 500; the run used 550 tokens and the next model call "
        "(its max_tokens) needs 100 more",
        {"turns": 3, "toolCalls": 1, "tokens": 550},
    ),
    "maxCostUSD": (
        {"maxCostUSD": 0.15},
        2,  # 0.0502 USD used + 100 tokens at the output price (0.1) > 0.15: billing's call is not made
        "budget exhausted: spec.budgets.maxCostUSD is 0.15; the run used 0.0502 USD and the next model call "
        "(its max_tokens) needs 0.1 more",
        {"turns": 2, "toolCalls": 0, "tokens": 250, "costUSD": 0.0502},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_each_budget_stops_both_executors_at_the_same_call(
    client: Client, database_url: str, redis_url: str, fake_openai: FakeOpenAI, case: str
) -> None:
    budgets, calls, answer, usage = CASES[case]
    script_usage_tree(fake_openai)
    spec = priced_tree(fake_openai.base_url)
    _, durable = await run_durable(
        client,
        spec,
        namespace=unique("bud"),
        tree="t",
        user_input="Is invoice 7 ok?",
        database_url=database_url,
        redis_url=redis_url,
        budgets=budgets,
    )
    assert len(fake_openai.requests) == calls, [r.get("model") for r in fake_openai.requests]
    fake_openai.requests.clear()
    local = await compile_tree(spec).orchestrator(budgets=budgets).run("Is invoice 7 ok?")
    assert len(fake_openai.requests) == calls
    stopped = answer.startswith("budget exhausted")
    assert (durable["status"], durable["answer"]) == ("failed" if stopped else "completed", answer)
    assert (local.status, local.answer) == (durable["status"], durable["answer"])
    assert local.reason == durable.get("reason") == ("BudgetExceeded" if stopped else None)
    for key, value in usage.items():
        assert durable["usage"][key] == pytest.approx(value), (key, durable["usage"])
    assert local.usage == durable["usage"]
    if "maxTokens" in budgets and stopped:
        # Never past maxTokens by more than one reserved call (here: not at all past used + reserve).
        assert durable["usage"]["tokens"] <= budgets["maxTokens"] + RESERVE
