"""An LLM tree (model supervisor, two model children, tools, an outputSchema) against a local
OpenAI-compatible server through the real ``openai`` client: durable and embedded take the same
steps; an invalid structured output is repaired; one that stays invalid fails cleanly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agent_tree_worker.store import HistoryStore
from durable_support import API_KEY, run_durable, run_embedded, tree_spec, unique
from fake_openai import FakeOpenAI
from temporalio.client import Client

pytestmark = pytest.mark.integration

SCHEMA = {
    "type": "object",
    "required": ["invoice_id", "decision", "summary"],
    "properties": {
        "invoice_id": {"type": "string"},
        "decision": {"enum": ["approved", "rejected", "on_hold"]},
        "policy": {"type": "string"},
        "summary": {"type": "string"},
    },
    "additionalProperties": False,
}
GOOD = {
    "invoice_id": "4821",
    "decision": "rejected",
    "policy": "AP-7",
    "summary": "Invoice #4821 was rejected: no PO number (policy AP-7).",
}


def llm_tree(base_url: str, case: str) -> Any:
    model = {"baseUrl": base_url, "maxRepairs": 1}
    return tree_spec(
        {
            "root": "desk",
            "agents": [
                {
                    "name": "desk",
                    "description": "Front desk",
                    "instructions": "Route accounts-payable questions.",
                    "children": ["billing", "research"],
                    "model": {**model, "name": f"router-{case}"},
                },
                {
                    "name": "billing",
                    "description": "Answers invoice status questions from the ERP.",
                    "instructions": "Use the tools, then answer.",
                    "outputSchema": SCHEMA,
                    "model": {**model, "name": f"billing-{case}"},
                    "tools": [
                        {"name": "lookup", "entrypoint": "durable_agents:lookup"},
                        {"name": "policy", "entrypoint": "durable_agents:policy"},
                    ],
                },
                {
                    "name": "research",
                    "description": "Researches vendors.",
                    "model": {**model, "name": f"research-{case}"},
                },
            ],
        }
    )


def script(server: FakeOpenAI, case: str, billing: list[dict[str, Any]], research: list[dict[str, Any]]) -> None:
    server.scripts[f"router-{case}"] = [
        {"content": "An invoice question.", "tool_calls": [("transfer_to_billing", {})]}
    ]
    server.scripts[f"billing-{case}"] = billing
    server.scripts[f"research-{case}"] = research


TOOL_TURNS = [
    {"content": "Looking the invoice up.", "tool_calls": [("lookup", {"invoice_id": "4821"})]},
    {"tool_calls": [("policy", {"topic": "missing_po"})]},
]


async def test_llm_tree_repairs_invalid_output_durable_equals_embedded(
    client: Client, database_url: str, redis_url: str, store: HistoryStore, fake_openai: FakeOpenAI
) -> None:
    invalid = {"content": json.dumps({"invoice_id": "4821", "decision": "lost"})}
    script(fake_openai, "repair", [*TOOL_TURNS, invalid, {"content": json.dumps(GOOD)}], [])
    spec = llm_tree(fake_openai.base_url, "repair")
    question = "Why was invoice #4821 rejected?"

    handle, result = await run_durable(
        client,
        spec,
        namespace=unique("llm"),
        tree="ap",
        user_input=question,
        database_url=database_url,
        redis_url=redis_url,
    )
    assert result["status"] == "completed", result
    assert result["final_agent"] == "billing"
    assert result["payload"] == GOOD and result["answer"] == GOOD["summary"]
    assert result["plan"]["route"] == ["billing"]
    assert result["token_usage"] == 5 * 18  # the routing call and four billing calls, 18 tokens each (fake usage)

    steps = await store.steps(handle.id)
    kinds = [(s["type"], s["agent"]) for s in steps]
    assert kinds[:2] == [("agent_start", "desk"), ("reasoning", "desk")]
    assert [s["data"]["tool"] for s in steps if s["type"] == "tool_end"] == ["lookup", "policy"]
    assert all(s["data"]["status"] == "ok" for s in steps if s["type"] == "tool_end")
    usage = [s["data"] for s in steps if s["type"] == "model_usage"]
    assert [u["agent"] for u in usage] == ["desk", *["billing"] * 4] and all(u["total_tokens"] == 18 for u in usage)

    # The repair: the third reply broke the schema, the model was told why, the fourth reply passed.
    billing_requests = fake_openai.requests_for("billing-repair")
    repair_prompt = billing_requests[3]["messages"][-1]
    assert repair_prompt["role"] == "user" and "decision: 'lost' is not one of" in repair_prompt["content"]
    assert "summary" in repair_prompt["content"]  # the missing required property is reported too
    # Tools were offered as functions with parameters from the tool's signature; children as transfers.
    lookup = next(t for t in billing_requests[0]["tools"] if t["function"]["name"] == "lookup")
    assert lookup["function"]["parameters"]["properties"] == {"invoice_id": {"type": "string"}}
    router = fake_openai.requests_for("router-repair")[0]
    assert {t["function"]["name"] for t in router["tools"]} == {"transfer_to_billing", "transfer_to_research"}
    assert {r["auth"] for r in fake_openai.requests} == {f"Bearer {API_KEY}"}

    # The embedded run of the same tree takes the same steps (model usage is recorded durably only).
    embedded, events = await run_embedded(spec, question)
    assert embedded.status == "completed" and embedded.payload == GOOD and embedded.token_usage == 90
    assert [s["data"] for s in steps if s["type"] != "model_usage"] == events


async def test_llm_output_that_stays_invalid_fails_cleanly(
    client: Client, database_url: str, redis_url: str, store: HistoryStore, fake_openai: FakeOpenAI
) -> None:
    script(
        fake_openai,
        "fail",
        [*TOOL_TURNS, {"content": "It was rejected, sorry."}, {"content": json.dumps({"invoice_id": 4821})}],
        [{"content": json.dumps({"status": "failed", "summary": "research cannot answer invoice questions"})}],
    )
    spec = llm_tree(fake_openai.base_url, "fail")
    handle, result = await run_durable(
        client,
        spec,
        namespace=unique("llm"),
        tree="ap",
        user_input="Why #4821?",
        database_url=database_url,
        redis_url=redis_url,
    )
    assert result["status"] == "failed"
    assert "research cannot answer invoice questions" in result["answer"]

    steps = await store.steps(handle.id)
    billing = next(s["data"] for s in steps if s["type"] == "handoff" and s["agent"] == "billing")
    assert billing["status"] == "failed"
    assert "does not match its outputSchema after 1 repair attempt(s)" in billing["summary"]
    errors = billing["payload"]["validation_errors"]
    assert "invoice_id: 4821 is not of type 'string'" in errors
    assert "(root): 'decision' is a required property" in errors
    # exactly maxRepairs + 1 answers were asked for after the tools: no unbounded retry loop
    assert len(fake_openai.requests_for("billing-fail")) == 4
    # the policy went on to the next child, which failed too: the run failed cleanly
    assert [s["agent"] for s in steps if s["type"] == "agent_start"] == ["desk", "billing", "research"]
    run = await store.get_run(handle.id)
    assert run["status"] == "failed" and run["finished_at"] is not None
