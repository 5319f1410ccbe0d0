"""The model agent loop (agent_tree.providers.openai_chat): pure state machine; routing and the client's configuration."""

from __future__ import annotations

import json

import pytest

from agent_tree.providers import openai_chat as chat
from agent_tree.providers import openai_client, routing
from agent_tree.spec import AgentSpec

SCHEMA = {
    "type": "object",
    "required": ["answer"],
    "properties": {"answer": {"type": "string"}},
    "additionalProperties": False,
}


def agent(**kw) -> dict:
    base = {
        "name": "clerk",
        "instructions": "Be brief.",
        "model": {"name": "m", "maxRepairs": 1, "maxTurns": 4},
        "tools": [{"name": "lookup", "entrypoint": "m:f"}],
    }
    return {**base, **kw}


def reply(content=None, calls=(), tokens=10) -> dict:
    return {
        "content": content,
        "usage": {"total_tokens": tokens},
        "tool_calls": [{"id": f"c{i}", "name": n, "arguments": a} for i, (n, a) in enumerate(calls)],
    }


def test_start_builds_system_and_user_messages_with_schema_and_context() -> None:
    state = chat.start(agent(outputSchema=SCHEMA), "Why?", {"invoice": "4821"})
    system, user = state.messages
    assert system["content"].startswith("Be brief.") and json.dumps(SCHEMA, sort_keys=True) in system["content"]
    assert user["content"] == 'Why?\n\nContext (JSON):\n{"invoice": "4821"}'
    assert isinstance(chat.next_action(state), chat.CallModel)


def test_tool_calls_then_final_answer() -> None:
    state = chat.start(agent(), "Why?")
    state = chat.observe_model(state, reply("Let me look.", [("lookup", '{"id": "1"}')]))
    action = chat.next_action(state)
    assert isinstance(action, chat.CallTools) and action.calls[0].args == {"id": "1"} and action.calls[0].error is None
    assert state.reasoning == ("Let me look.",)
    state = chat.observe_tool(state, action.calls[0], {"tool_name": "lookup", "status": "ok", "output": {"x": 1}})
    assert state.messages[-1] == {"role": "tool", "tool_call_id": "c0", "content": '{"x": 1}'}
    state = chat.observe_model(state, reply("It was rejected."))
    done = chat.next_action(state)
    assert done == chat.Done("ok", "It was rejected.", {})
    assert state.traces()["token_usage"] == 20 and state.traces()["tool_calls"] == ["lookup"]


def test_unknown_tool_and_malformed_arguments_become_errors_without_running() -> None:
    state = chat.observe_model(chat.start(agent(), "x"), reply(None, [("drop_db", "{}"), ("lookup", "{oops")]))
    unknown, malformed = chat.next_action(state).calls
    assert "has no tool 'drop_db' (its tools: lookup)" in unknown.error
    assert "not valid JSON" in malformed.error
    assert chat.error_result(unknown)["status"] == "error"
    not_object = chat.observe_model(chat.start(agent(), "x"), reply(None, [("lookup", "[1]")]))
    assert "must be a JSON object" in chat.next_action(not_object).calls[0].error


def test_invalid_structured_output_is_repaired_once_then_fails_with_the_errors() -> None:
    state = chat.start(agent(outputSchema=SCHEMA), "x")
    state = chat.observe_model(state, reply('{"answer": 1}'))
    assert isinstance(chat.next_action(state), chat.CallModel)  # a repair round
    assert "answer: 1 is not of type 'string'" in state.messages[-1]["content"]
    repaired = chat.observe_model(state, reply('```json\n{"answer": "ok"}\n```'))
    assert chat.next_action(repaired) == chat.Done("ok", '```json\n{"answer": "ok"}\n```', {"answer": "ok"})
    failed = chat.observe_model(state, reply("no JSON here"))
    done = chat.next_action(failed)
    assert done.status == "failed" and "after 1 repair attempt(s)" in done.summary
    assert done.payload["validation_errors"][0].startswith("the reply must be a JSON object")


def test_max_turns_bounds_tool_loops() -> None:
    state = chat.start(agent(model={"name": "m", "maxTurns": 1}), "x")
    state = chat.observe_model(state, reply(None, [("lookup", "{}")]))
    state = chat.observe_tool(state, chat.next_action(state).calls[0], {"status": "ok", "output": 1})
    done = chat.next_action(state)
    assert done.status == "failed" and "maxTurns=1" in done.summary


def test_interpret_final_status_convention_and_limits() -> None:
    asked = chat.interpret_final(
        None, json.dumps({"status": "needs_more_info", "summary": "which?", "payload": {"a": 1}})
    )
    assert (asked["status"], asked["summary"], asked["payload"]) == ("needs_more_info", "which?", {"a": 1})
    plain = chat.interpret_final(None, "x" * 5000)
    assert plain["status"] == "ok" and len(plain["summary"]) < 4100 and plain["errors"] == []
    huge = chat.interpret_final(None, json.dumps({"blob": "y" * (300 * 1024)}))
    assert huge["payload"] == {} and "limit" in huge["errors"][0]
    bad_schema = chat.interpret_final({"type": "nope"}, "{}")
    assert "not a valid JSON Schema" in bad_schema["errors"][0]


def test_tool_message_content() -> None:
    assert chat.tool_message_content({"status": "error", "error": "boom"}) == '{"error": "boom"}'
    assert chat.tool_message_content({"status": "ok", "output": "text"}) == "text"
    assert "not JSON" in chat.tool_message_content({"status": "ok", "output": {1, 2}})
    ref = {"$blob": "abc", "bytes": 9, "preview": "x"}
    assert chat.tool_message_content({"status": "ok", "output": ref}) is ref


def test_router_plan_from_transfer_calls() -> None:
    tools = routing.router_tools([("billing", "Invoices."), ("research", "")])
    assert [t["function"]["name"] for t in tools] == ["transfer_to_billing", "transfer_to_research"]
    plan = routing.plan_from_response(
        ["billing", "research"],
        reply(
            "Invoice question.",
            [("transfer_to_research", "{}"), ("transfer_to_nobody", "{}"), ("transfer_to_research", "{}")],
        ),
    )
    assert plan == {"route": ["research"], "reason": "Invoice question."}
    assert routing.plan_from_response(["a"], reply("hmm"))["route"] == []


def test_parameters_from_signature() -> None:
    def tool(invoice_id: str, amount: float, flags: list[str] | None = None, **extra) -> dict:
        return {}

    params = openai_client.parameters_from_signature(tool)
    assert params["properties"]["invoice_id"] == {"type": "string"}
    assert params["properties"]["amount"] == {"type": "number"}
    assert params["required"] == ["invoice_id", "amount"] and params["additionalProperties"] is True


def test_api_key_resolution_order(tmp_path) -> None:
    spec = AgentSpec.model_validate(
        {"name": "invoice-specialist", "model": {"name": "m", "apiKeySecretRef": {"name": "llm", "key": "token"}}}
    )
    assert openai_client.env_key_name("invoice-specialist") == "AGENT_TREE_MODEL_API_KEY_INVOICE_SPECIALIST"
    env = {
        "AGENT_TREE_MODEL_API_KEY_INVOICE_SPECIALIST": "own",
        "AGENT_TREE_MODEL_API_KEY": "shared",
        "AGENT_TREE_SECRETS_DIR": str(tmp_path),
    }
    assert openai_client.api_key(spec, env) == "own"
    (tmp_path / "llm").mkdir()
    (tmp_path / "llm" / "token").write_text("from-secret\n")
    del env["AGENT_TREE_MODEL_API_KEY_INVOICE_SPECIALIST"]
    assert openai_client.api_key(spec, env) == "from-secret"
    (tmp_path / "llm" / "token").unlink()
    assert openai_client.api_key(spec, env) == "shared"
    with pytest.raises(openai_client.ModelConfigError, match="AGENT_TREE_MODEL_API_KEY_INVOICE_SPECIALIST"):
        openai_client.api_key(spec, {})
    assert openai_client.base_url(spec, {"AGENT_TREE_MODEL_BASE_URL": "http://x/v1"}) == "http://x/v1"
