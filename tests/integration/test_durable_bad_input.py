"""Bad input ends as a clear step error or a clean run failure, never a stuck workflow: a model
calling an unknown tool or sending malformed arguments, a tool that raises, a tool returning
something that is not JSON, a 5 MB tool result, an unknown model, and a 5 MB run input."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from agent_tree_worker.store import HistoryStore
from durable_support import in_process_workers, run_durable, tree_spec, unique
from fake_openai import FakeOpenAI
from temporalio.client import Client
from temporalio.service import RPCError

from agent_tree import naming
from agent_tree.contract import RunInputError, run_input
from agent_tree.contract.temporal import start_run

pytestmark = pytest.mark.integration
FIVE_MB = 5 * 1024 * 1024


def bad_tree(base_url: str) -> object:
    return tree_spec(
        {
            "root": "front",
            "agents": [
                {"name": "front", "children": ["ghost", "clerk"]},
                {"name": "ghost", "model": {"name": "no-such-model", "baseUrl": base_url}},
                {
                    "name": "clerk",
                    "model": {"name": "clerk", "baseUrl": base_url},
                    "tools": [
                        {"name": "raises", "entrypoint": "durable_agents:raises_tool"},
                        {"name": "not_json", "entrypoint": "durable_agents:not_json_tool"},
                        {"name": "big", "entrypoint": "durable_agents:big_tool"},
                    ],
                },
            ],
        }
    )


async def test_bad_tool_calls_end_as_clear_step_errors(
    client: Client, database_url: str, redis_url: str, store: HistoryStore, fake_openai: FakeOpenAI
) -> None:
    fake_openai.scripts["clerk"] = [
        {
            "tool_calls": [
                ("erase_everything", {}),
                ("raises", {}),
                ("not_json", {}),
                ("big", {"size": FIVE_MB}),
                ("raises", "{not json"),
            ]
        },
        {"content": "Checked every tool."},
    ]
    handle, result = await run_durable(
        client,
        bad_tree(fake_openai.base_url),
        namespace=unique("bad"),
        tree="bad",
        user_input="check the tools",
        database_url=database_url,
        redis_url=redis_url,
    )
    assert result["status"] == "completed" and result["answer"] == "Checked every tool."
    steps = await store.steps(handle.id)

    ghost = next(s["data"] for s in steps if s["type"] == "handoff" and s["agent"] == "ghost")
    assert ghost["status"] == "failed"
    assert "model call of agent 'ghost' failed" in ghost["summary"] and "404" in ghost["summary"]

    ends = [s["data"] for s in steps if s["type"] == "tool_end"]
    assert [e["tool"] for e in ends] == ["erase_everything", "raises", "not_json", "big", "raises"]
    assert ends[0]["status"] == "error" and "has no tool 'erase_everything'" in ends[0]["error"]
    assert ends[1]["status"] == "error" and ends[1]["error"] == "RuntimeError: the ERP is on fire"
    assert ends[2]["status"] == "error" and "returned a value that is not JSON" in ends[2]["error"]
    assert ends[3]["status"] == "ok" and ends[3]["output"]["bytes"] == FIVE_MB + 2  # stored as a blob
    assert ends[4]["status"] == "error" and "arguments are not valid JSON" in ends[4]["error"]

    # The model saw every error, and the whole 5 MB result (read back from the blob store) ...
    tool_messages = [m for m in fake_openai.requests_for("clerk")[1]["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 5 and len(tool_messages[3]["content"]) == FIVE_MB
    assert "the ERP is on fire" in tool_messages[1]["content"]
    # ... while Temporal history carried only a reference.
    history = await handle.fetch_history()
    assert sum(e.ByteSize() for e in history.events) < 256 * 1024
    assert await store.get_blob(ends[3]["output"]) == "x" * FIVE_MB


async def test_oversized_input_is_refused_or_fails_the_run_cleanly(
    client: Client, database_url: str, redis_url: str, store: HistoryStore, fake_openai: FakeOpenAI
) -> None:
    spec = bad_tree(fake_openai.base_url)
    namespace = unique("big")
    with pytest.raises(RunInputError, match=r"spec\.input: the input is 5242880 characters; the limit is 65536"):
        run_input(namespace, "bad", spec, name="huge", uid="u1", input="x" * FIVE_MB)

    # Started directly (bypassing the check) with 100 KB: the workflow fails the run itself, at once.
    inp = run_input(namespace, "bad", spec, name="large", uid=uuid.uuid4().hex[:8], input="short")
    inp.input = "y" * 100_000
    queues = [naming.task_queue(namespace, "bad", a.name) for a in spec.agents]
    async with in_process_workers(client, queues, database_url, redis_url):
        handle = await start_run(client, inp)
        result = await asyncio.wait_for(handle.result(), 60)
        # 5 MB straight to Temporal is refused by the server (payload limit): a clear error, no workflow.
        inp.input, inp.uid = "z" * FIVE_MB, uuid.uuid4().hex[:8]
        with pytest.raises(RPCError, match="larger than max"):
            await start_run(client, inp)
        with pytest.raises(RPCError, match=r"(?i)not found"):
            await client.get_workflow_handle(naming.workflow_id(namespace, inp.name, inp.uid)).describe()
    assert result["status"] == "failed" and result["steps"] == 0
    assert result["answer"] == "the input is 100000 characters; the limit is 65536 (AgentRun spec.input)"
    run = await store.get_run(handle.id)
    assert run["status"] == "failed" and run["answer"] == result["answer"]
