"""Model agents in embedded mode: the real openai client against the local fake endpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from agent_tree.compiler import compile_tree
from agent_tree.events import event_hooks
from agent_tree.spec import AgentTreeSpec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from fake_openai import FakeOpenAI


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AGENT_TREE_MODEL_API_KEY", "sk-unit")
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "integration"))
    with FakeOpenAI() as s:
        yield s


def spec(base_url: str) -> AgentTreeSpec:
    return AgentTreeSpec.model_validate(
        {
            "root": "desk",
            "agents": [
                {"name": "desk", "children": ["triage", "billing"], "model": {"name": "router", "baseUrl": base_url}},
                {"name": "triage", "entrypoint": "durable_agents:intake"},
                {
                    "name": "billing",
                    "model": {"name": "billing", "baseUrl": base_url},
                    "tools": [
                        {"name": "lookup", "entrypoint": "durable_agents:lookup"},
                        {"name": "ask_triage", "agent": "triage"},
                    ],
                },
            ],
        }
    )


async def test_model_supervisor_routes_and_model_agent_uses_tools(server: FakeOpenAI) -> None:
    server.scripts["router"] = [{"tool_calls": [("transfer_to_billing", {"reason": "invoice"})]}]
    server.scripts["billing"] = [
        {"content": "Checking.", "tool_calls": [("lookup", {"invoice_id": "7"}), ("ask_triage", {"input": "about 7"})]},
        {"content": json.dumps({"status": "ok", "summary": "Invoice 7 was rejected.", "payload": {"id": "7"}})},
    ]
    events: list[dict] = []

    async def sink(event: dict) -> None:
        events.append(event)

    result = await compile_tree(spec(server.base_url)).orchestrator(hooks=event_hooks(sink)).run("Why was 7 rejected?")
    assert result.status == "completed" and result.answer == "Invoice 7 was rejected."
    assert result.final_agent == "billing" and result.payload == {"id": "7"}
    # 18 tokens per call (fake usage): the routing call and billing's two calls all count.
    assert result.plan == {"route": ["billing"]} and result.token_usage == 3 * 18
    kinds = [(e["type"], e.get("agent") or e.get("tool")) for e in events]
    assert kinds[:3] == [("agent_start", "desk"), ("reasoning", "desk"), ("agent_start", "billing")]
    assert ("tool_end", "lookup") in kinds and ("tool_end", "ask_triage") in kinds
    agent_tool = next(e for e in events if e["type"] == "tool_end" and e["tool"] == "ask_triage")
    assert agent_tool["output"]["status"] == "needs_more_info" and agent_tool["output"]["from_agent"] == "triage"
    second = server.requests_for("billing")[1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "tool", "tool"]


async def test_model_endpoint_errors_become_a_failed_handoff(server: FakeOpenAI) -> None:
    server.scripts["router"] = [{"tool_calls": [("transfer_to_billing", {})]}]
    # no script for "billing": the endpoint answers 404 model not found
    result = await compile_tree(spec(server.base_url)).orchestrator().run("Why?")
    billing = next(h for h in result.handoffs if h.from_agent == "billing")
    assert billing.status == "failed" and "model call of agent 'billing' failed" in billing.summary


async def test_missing_api_key_names_the_variable(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENT_TREE_MODEL_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = await compile_tree(spec(server.base_url)).orchestrator().run("Why?")
    assert "AGENT_TREE_MODEL_API_KEY_DESK" in json.dumps(result.plan)
    billing = next(h for h in result.handoffs if h.from_agent == "billing")
    assert "AGENT_TREE_MODEL_API_KEY_BILLING" in billing.summary
