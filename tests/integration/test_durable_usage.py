"""Durable runs (one worker process per agent, real Temporal, PostgreSQL, Redis) count what happens
below a turn: a nested supervisor's leaf, an agent called as a tool, a planner's and model
supervisors' routing calls; a Python agent's payload that violates its outputSchema fails its turn.
Embedded runs of the same trees give the same totals and the same steps."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from agent_tree_worker.dispatch import COUNT_NESTED_USAGE
from agent_tree_worker.executor import AgentWorkflow
from agent_tree_worker.main import PASSTHROUGH
from agent_tree_worker.store import HistoryStore
from agent_tree_worker.workflows import AgentRunWorkflow
from durable_support import API_KEY, WorkerProcess, run_durable, run_embedded, tree_spec, unique, worker_env
from fake_openai import USAGE_TREE_TOTAL, FakeOpenAI, script_usage_tree, usage_tree
from temporalio.client import Client
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from agent_tree.contract import Progress, run_input
from agent_tree.contract.temporal import DATA_CONVERTER, run_progress, start_run

pytestmark = pytest.mark.integration

SCHEMA = {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}}
VIOLATION = "payload.amount: 'x' is not of type 'number'"


def python_tree(base_url: str) -> Any:
    """office -> [bad-pricer (violates its outputSchema), desk (nested supervisor) -> stamper (Python;
    asks expert, a model agent, as a tool: in-process, inside stamper's activity)]."""
    return tree_spec(
        {
            "root": "office",
            "planner": "durable_agents:counting_planner",
            "agents": [
                {"name": "office", "children": ["bad-pricer", "desk"]},
                {"name": "bad-pricer", "entrypoint": "durable_agents:bad_pricer", "outputSchema": SCHEMA},
                {"name": "desk", "children": ["stamper"]},
                {
                    "name": "stamper",
                    "entrypoint": "durable_agents:stamper",
                    "outputSchema": SCHEMA,
                    "tools": [
                        {"name": "lookup", "entrypoint": "durable_agents:lookup"},
                        {"name": "ask_expert", "agent": "expert"},
                    ],
                },
                {"name": "expert", "model": {"name": "u-py-expert", "baseUrl": base_url}},
            ],
        }
    )


async def run_with_worker_processes(
    client: Client, spec: Any, env: dict[str, str], log_dir: Path, user_input: str
) -> tuple[Any, dict[str, Any], Progress]:
    """Start one ``agent-tree worker`` process per agent, run ``spec``; returns (handle, result, progress)."""
    namespace = unique("tok")
    workers = [WorkerProcess(namespace, "t", a.name, env, log_dir).start() for a in spec.agents]
    try:
        await asyncio.gather(*(w.ready() for w in workers))
        inp = run_input(namespace, "t", spec, name=unique("run"), uid=uuid.uuid4().hex[:8], input=user_input)
        handle = await start_run(client, inp)
        result = await asyncio.wait_for(handle.result(), 120)
        progress = await run_progress(handle)
    finally:
        for w in workers:
            w.stop()
    return handle, result, progress


def without_durations(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_durations(v) for k, v in value.items() if k != "duration_ms"}
    if isinstance(value, list):
        return [without_durations(v) for v in value]
    return value


async def assert_replays(handle: Any) -> None:
    """The run's own history replays on the current code (the patch marker is in it)."""
    history = await handle.fetch_history()
    markers = [e for e in history.events if e.HasField("marker_recorded_event_attributes")]
    assert any(COUNT_NESTED_USAGE.encode() in e.SerializeToString() for e in markers), "no patch marker"
    replayer = Replayer(
        workflows=[AgentRunWorkflow, AgentWorkflow],
        data_converter=DATA_CONVERTER,
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
        ),
    )
    await replayer.replay_workflow(history)


async def test_nested_supervisor_agent_tool_planner_and_python_outputschema(
    client: Client,
    temporal_address: str,
    database_url: str,
    redis_url: str,
    store: HistoryStore,
    fake_openai: FakeOpenAI,
    tmp_path: Path,
) -> None:
    fake_openai.scripts["u-py-expert"] = [{"content": "fine", "usage": (100, 60)}]
    spec = python_tree(fake_openai.base_url)
    env = worker_env(temporal_address, database_url, redis_url, AGENT_TREE_MODEL_API_KEY=API_KEY)
    handle, result, progress = await run_with_worker_processes(client, spec, env, tmp_path, "stamp invoice 7")

    # 500 (stamper, under the nested supervisor desk) + 160 (expert, stamper's tool) + 42 (planner)
    assert result["status"] == "completed", result
    assert result["final_agent"] == "desk" and result["payload"] == {"amount": 12.5}
    assert result["token_usage"] == 702 and progress.token_usage == 702
    run = await store.get_run(handle.id)
    assert run["token_usage"] == 702

    steps = await store.steps(handle.id)
    usage = [(s["agent"], s["data"]["total_tokens"], s["data"]["model"]) for s in steps if s["type"] == "model_usage"]
    # the tree's planner (recorded as the root's), and the model call of the agent used as a tool
    assert usage == [("office", 42, "plan-1"), ("expert", 160, "u-py-expert")]
    # bad-pricer's payload violated its outputSchema: its turn failed, naming the path; office went on.
    bad = next(s["data"] for s in steps if s["type"] == "handoff" and s["agent"] == "bad-pricer")
    assert bad["status"] == "failed" and VIOLATION in bad["summary"]
    assert bad["payload"] == {"validation_errors": [VIOLATION]}
    assert [s["agent"] for s in steps if s["type"] == "agent_start"] == ["office", "bad-pricer", "desk", "stamper"]

    embedded, events = await run_embedded(spec, "stamp invoice 7")
    assert embedded.status == "completed" and embedded.token_usage == result["token_usage"]
    desk = next(h for h in embedded.handoffs if h.from_agent == "desk")
    assert desk.traces.token_usage == 660 and desk.traces.tool_calls == ["lookup", "ask_expert"]
    # the same steps (an agent tool's output holds its tool results, whose durations differ)
    assert without_durations([s["data"] for s in steps if s["type"] != "model_usage"]) == without_durations(events)
    await assert_replays(handle)


async def test_model_routers_and_model_agent_tool_every_call_counted_with_its_step(
    client: Client,
    temporal_address: str,
    database_url: str,
    redis_url: str,
    store: HistoryStore,
    fake_openai: FakeOpenAI,
    tmp_path: Path,
) -> None:
    script_usage_tree(fake_openai)
    spec = tree_spec(usage_tree(fake_openai.base_url))
    env = worker_env(temporal_address, database_url, redis_url, AGENT_TREE_MODEL_API_KEY=API_KEY)
    handle, result, progress = await run_with_worker_processes(client, spec, env, tmp_path, "Is invoice 7 ok?")

    calls = list(fake_openai.requests)
    assert len(calls) == 5  # desk routes, ops routes, billing twice, expert once
    total = USAGE_TREE_TOTAL
    assert result["status"] == "completed" and result["answer"] == "Invoice 7 is fine."
    assert result["token_usage"] == total and progress.token_usage == total

    steps = await store.steps(handle.id)
    usage = [(s["agent"], s["data"]["total_tokens"]) for s in steps if s["type"] == "model_usage"]
    # one model_usage step per call, in the order the calls were made
    assert usage == [("desk", 120), ("ops", 130), ("billing", 140), ("expert", 160), ("billing", 150)]
    assert sum(t for _, t in usage) == total

    fake_openai.requests.clear()
    embedded, events = await run_embedded(spec, "Is invoice 7 ok?")
    assert len(fake_openai.requests) == 5
    assert embedded.status == "completed" and embedded.token_usage == result["token_usage"]
    assert [s["data"] for s in steps if s["type"] != "model_usage"] == events
    await assert_replays(handle)


@pytest.mark.parametrize(
    ("budgets", "status", "answer"),
    [
        (
            {"maxTokens": 100},
            "failed",
            "budget exhausted: spec.budgets.maxTokens is 100; the run used 500 tokens, stopped before the next "
            "agent turn",
        ),
        ({"maxToolCalls": 1, "maxTokens": 1000}, "completed", "fallback answered"),
    ],
)
async def test_budgets_see_the_tokens_of_a_nested_supervisors_leaf(
    client: Client,
    database_url: str,
    redis_url: str,
    store: HistoryStore,  # migrated
    budgets: dict[str, int],
    status: str,
    answer: str,
) -> None:
    spec = tree_spec(
        {
            "root": "office",
            "agents": [
                {"name": "office", "children": ["desk", "fallback"]},
                {"name": "desk", "children": ["spender"]},
                {
                    "name": "spender",
                    "entrypoint": "durable_agents:spender",
                    "tools": [{"name": "lookup", "entrypoint": "durable_agents:lookup"}],
                },
                {"name": "fallback", "entrypoint": "durable_agents:fallback"},
            ],
        }
    )
    _, result = await run_durable(
        client,
        spec,
        namespace=unique("tok"),
        tree="t",
        user_input="stamp 7",
        database_url=database_url,
        redis_url=redis_url,
        budgets=budgets,
    )
    # desk failed after its leaf used 500 tokens and 1 tool call: over maxTokens=100 the run stops
    # before trying fallback; within the budgets (1 tool call is not above maxToolCalls=1) it goes on.
    assert (result["status"], result["answer"]) == (status, answer)
    assert result["usage"]["tokens"] == 500 and result["usage"]["toolCalls"] == 1
