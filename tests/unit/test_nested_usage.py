"""Token usage and tool calls below a turn count in the parent's traces and the run's token_usage
(embedded): nested supervisors, agents called as tools, a planner's and a model supervisor's routing
model calls."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from agent_tree import AgentNode, AgentTree, RunContext, SupervisorOrchestrator
from agent_tree.compiler import compile_tree
from agent_tree.providers import openai_chat as chat
from agent_tree.spec import AgentTreeSpec
from agent_tree.usage import report_model_usage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from fake_openai import USAGE_TREE_TOTAL, FakeOpenAI, script_usage_tree, usage_tree


def stamp(invoice_id: str) -> dict[str, Any]:
    return {"invoice_id": invoice_id, "stamped": True}


async def leaf(ctx: RunContext):
    await ctx.call_tool("stamp", invoice_id="7")
    ctx.add_tokens(500)
    return ctx.ok("stamped", {"id": "7"})


def nested_tree() -> AgentTree:
    root = AgentNode("supervisor")
    mid = root.add_child(AgentNode("desk"))  # no behaviour: a nested supervisor
    worker = mid.add_child(AgentNode("stamper", leaf))
    worker.add_tool(stamp)
    return AgentTree(root)


async def test_nested_supervisor_hands_back_its_leafs_tokens_and_tool_calls() -> None:
    result = await SupervisorOrchestrator(nested_tree()).run("stamp 7")
    assert result.status == "completed" and result.token_usage == 500
    desk = result.handoffs[0]
    assert desk.from_agent == "desk" and desk.traces.token_usage == 500
    assert desk.traces.tool_calls == ["stamp"] and desk.traces.tool_results[0].output["stamped"] is True


async def test_agent_called_as_a_tool_counts_in_the_callers_traces() -> None:
    async def expert(ctx: RunContext):
        await ctx.call_tool("stamp", invoice_id=ctx.input)
        ctx.add_tokens(300)
        return ctx.ok("expert says yes")

    async def asker(ctx: RunContext):
        answer = await ctx.call_tool("ask_expert", input="7")
        ctx.add_tokens(20)
        return ctx.ok(answer.output["summary"])

    root = AgentNode("supervisor")
    helper = AgentNode("expert", expert)
    helper.add_tool(stamp)
    caller = root.add_child(AgentNode("asker", asker))
    caller.add_tool(helper.as_tool("ask_expert"))
    result = await SupervisorOrchestrator(AgentTree(root)).run("ask")
    traces = result.handoffs[0].traces
    assert traces.token_usage == 320 and result.token_usage == 320
    assert traces.tool_calls == ["ask_expert", "stamp"]
    assert [r.tool_name for r in traces.tool_results] == ["ask_expert", "stamp"]


async def test_a_planners_reported_model_calls_count_in_the_run() -> None:
    async def planner(user_input: str) -> dict[str, Any]:
        await report_model_usage("planner", {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42})
        return {"route": ["desk"]}

    result = await SupervisorOrchestrator(nested_tree(), planner=planner).run("stamp 7")
    assert result.plan == {"route": ["desk"]} and result.token_usage == 500 + 42


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AGENT_TREE_MODEL_API_KEY", "sk-unit")
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "integration"))
    with FakeOpenAI() as s:
        yield s


def llm_spec(base_url: str) -> AgentTreeSpec:
    return AgentTreeSpec.model_validate(usage_tree(base_url))


LLM_TOTAL = USAGE_TREE_TOTAL


async def test_model_routers_nested_model_supervisor_and_model_agent_tool_all_count(server: FakeOpenAI) -> None:
    script_usage_tree(server)
    result = await compile_tree(llm_spec(server.base_url)).orchestrator().run("Is invoice 7 ok?")
    assert result.status == "completed" and result.answer == "Invoice 7 is fine."
    assert len(server.requests) == 5
    assert result.token_usage == LLM_TOTAL
    ops = result.handoffs[0]
    assert ops.from_agent == "ops" and ops.traces.token_usage == 130 + 140 + 150 + 160
    assert ops.traces.tool_calls == ["ask_expert"]


def test_chat_loop_adds_an_agent_tools_calls_and_tokens() -> None:
    # The durable model agent keeps its traces in the pure loop's state, not in a RunContext.
    agent = {"name": "billing", "model": {"name": "m"}, "tools": [{"name": "ask", "agent": "expert"}, {"name": "f"}]}
    state = chat.start(agent, "q")
    state = chat.observe_model(
        state,
        {"content": None, "tool_calls": [{"id": "1", "name": "ask", "arguments": "{}"}], "usage": {"total_tokens": 5}},
    )
    inner = {"tool_calls": ["f2"], "tool_results": [{"tool_name": "f2", "output": 1}], "token_usage": 70}
    handoff = {"from_agent": "expert", "status": "ok", "summary": "s", "payload": {}, "traces": inner}
    state = chat.observe_tool(state, state.pending[0], {"tool_name": "ask", "status": "ok", "output": handoff})
    traces = state.traces()
    assert traces["token_usage"] == 75 and traces["tool_calls"] == ["ask", "f2"]
    # a plain tool whose output merely looks like a handoff adds nothing
    state = chat.observe_model(
        state, {"content": None, "tool_calls": [{"id": "2", "name": "f", "arguments": "{}"}], "usage": {}}
    )
    state = chat.observe_tool(state, state.pending[0], {"tool_name": "f", "status": "ok", "output": handoff})
    assert state.traces()["token_usage"] == 75 and state.traces()["tool_calls"] == ["ask", "f2", "f"]
