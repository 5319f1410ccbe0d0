"""A long run stays within Temporal's history limits: 500 tool calls by one model agent complete, and
what one step costs in history events and bytes is measured (docs/durable-runs.md, "History size")."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agent_tree_worker.store import HistoryStore
from durable_support import run_durable, tree_spec, unique
from fake_openai import FakeOpenAI
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from agent_tree.cli import load_tree

pytestmark = pytest.mark.integration

TOOL_CALLS = 500
PER_REPLY = 20  # maxTurns caps model calls per turn at 50: the model asks for 20 lookups at a time


def tree(base_url: str, model: str) -> Any:
    return tree_spec(
        {
            "root": "desk",
            "maxSteps": 2,
            "agents": [
                {"name": "desk", "children": ["clerk"]},
                {
                    "name": "clerk",
                    "description": "Looks invoices up, one by one.",
                    "model": {"name": model, "baseUrl": base_url, "maxTurns": 50},
                    "tools": [{"name": "lookup", "entrypoint": "durable_agents:lookup"}],
                },
            ],
        }
    )


async def history_size(client: Client, workflow_id: str) -> tuple[int, int]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return len(history.events), len(json.dumps(history.to_json_dict()).encode())


async def test_run_with_500_tool_calls_completes_and_its_history_stays_bounded(
    client: Client, database_url: str, redis_url: str, fake_openai: FakeOpenAI
) -> None:
    sizes = {}
    for calls in (PER_REPLY, TOOL_CALLS):
        model = unique("long-model")
        fake_openai.scripts[model] = [
            *(
                {"tool_calls": [("lookup", {"invoice_id": f"{r}-{i}"}) for i in range(PER_REPLY)]}
                for r in range(calls // PER_REPLY)
            ),
            {"content": f"looked up {calls} invoices"},
        ]
        handle, result = await run_durable(
            client,
            tree(fake_openai.base_url, model),
            namespace=unique("long"),
            tree="ap",
            user_input="Look every invoice up.",
            database_url=database_url,
            redis_url=redis_url,
            within=600,
        )
        assert result["status"] == "completed", result
        assert result["answer"] == f"looked up {calls} invoices"
        sizes[calls] = await history_size(client, handle.id)
    (events_10, bytes_10), (events_n, bytes_n) = sizes[PER_REPLY], sizes[TOOL_CALLS]
    per_call_events = (events_n - events_10) / (TOOL_CALLS - PER_REPLY)
    per_call_bytes = (bytes_n - bytes_10) / (TOOL_CALLS - PER_REPLY)
    print(
        f"history: {events_n} events, {bytes_n} bytes for {TOOL_CALLS} tool calls; "
        f"{per_call_events:.1f} events and {per_call_bytes:.0f} bytes per tool call (with its share of the model calls)"
    )
    # Temporal refuses a history over 51,200 events or 50 MiB. One tool call is one activity (scheduled,
    # started, completed) plus the workflow task that schedules the next: no child workflow per turn.
    assert per_call_events < 7
    assert events_n < 51_200 // 10
    assert bytes_n < 50 * 1024 * 1024 // 10


async def test_a_run_continues_as_new_between_root_turns_on_real_workers(
    client: Client, database_url: str, redis_url: str
) -> None:
    """The invoice tree (3 root turns) with the threshold at 10 events: the run continues as new after
    each turn, on the real workers, and ends as one run: same answer as without, every step once."""

    tree, _ = load_tree("examples/invoice/agenttree.yaml")
    question = "Why was invoice #4821 rejected?"
    kw = {"tree": "invoice", "user_input": question, "database_url": database_url, "redis_url": redis_url}
    _, plain = await run_durable(client, tree.spec, namespace=unique("plain"), **kw)
    handle, continued = await run_durable(client, tree.spec, namespace=unique("can"), continue_after_events=10, **kw)
    assert continued["status"] == plain["status"] == "completed"
    assert (continued["answer"], continued["steps"]) == (plain["answer"], plain["steps"])
    # Follow the chain through the histories (not visibility, which may lag): first run -> ... -> last.
    runs, run_id = 0, handle.first_execution_run_id
    while run_id:
        runs += 1
        last = (await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()).events[-1]
        continued_as_new = last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id if continued_as_new else None
        )
    assert runs == 3, "one run per root turn: continued as new twice"
    store = HistoryStore(database_url)
    try:
        steps = await store.steps(handle.id)
    finally:
        await store.close()
    kinds = [(s["type"], s["agent"]) for s in steps]
    assert kinds.count(("agent_start", "supervisor")) == 1 and kinds.count(("agent_end", "supervisor")) == 1
    assert [a for k, a in kinds if k == "agent_start"] == ["supervisor", "triage", "invoice-specialist", "verifier"]
