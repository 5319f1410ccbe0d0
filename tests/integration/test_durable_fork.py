"""Retry and fork from any step (docs/run-control.md, "Retry and fork"), on real Temporal + PostgreSQL
with workers: a fork answers every call up to its step from the source's records (counting tools and
the fake OpenAI server's request log show nothing ran again), runs live after, marks the reused
steps and links both runs; a retry re-runs the tool that failed and Succeeds."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from agent_tree_worker.store import HistoryStore
from durable_support import EXAMPLE, in_process_workers, tree_spec, unique
from fake_openai import FakeOpenAI
from temporalio.client import Client
from test_durable_llm import GOOD, TOOL_TURNS, llm_tree, script

from agent_tree import naming
from agent_tree.cli import load_tree
from agent_tree.contract import run_input
from agent_tree.contract.control import ForkSource, fork_point, reused
from agent_tree.contract.temporal import start_run
from agent_tree.spec import AgentTreeSpec

pytestmark = pytest.mark.integration
QUESTION = "Why was invoice #4821 rejected?"


def calls(directory: Path, tool: str) -> int:
    """How many times ``tool`` of fork_tools ran."""
    path = directory / f"calls-{tool}.log"
    return len(path.read_text().splitlines()) if path.exists() else 0


def counted_invoice() -> AgentTreeSpec:
    """The invoice example with its tools replaced by counting wrappers (same results)."""
    tree, _ = load_tree(str(EXAMPLE / "agenttree.yaml"))
    doc = tree.spec.model_dump(mode="json", exclude_none=True)
    for agent in doc["agents"]:
        for tool in agent.get("tools") or []:
            tool["entrypoint"] = f"fork_tools:{tool['name']}"
    return AgentTreeSpec.model_validate(doc)


async def run(client: Client, spec: AgentTreeSpec, namespace: str, tree: str, name: str, **kw: Any) -> tuple[str, dict]:
    inp = run_input(namespace, tree, spec, name=name, uid=uuid.uuid4().hex[:8], **kw)
    handle = await start_run(client, inp)
    return handle.id, await asyncio.wait_for(handle.result(), 90)


async def fork_of(store: HistoryStore, source: str, step: int | None) -> tuple[ForkSource, dict[str, Any]]:
    """What the operator puts into the fork's RunInput: the fork point and the source's pinned spec."""
    row = await store.get_run(source)
    number, until = fork_point(await store.steps(source), step, row["name"])
    spec = await store.tree_spec(row["tree_revision"])
    assert spec is not None, "the source's pinned tree spec is not in the history"
    return ForkSource(workflow_id=source, name=row["name"], step=number, until_ord=until), spec


def comparable(steps: list[dict[str, Any]]) -> list[tuple[list[int], str, dict[str, Any]]]:
    return [(s["ord"], s["type"], {k: v for k, v in s["data"].items() if k != "reused"}) for s in steps]


async def test_fork_invoice_from_a_middle_step_reuses_recorded_calls(
    client: Client, database_url: str, redis_url: str, store: HistoryStore, test_dir: Path
) -> None:
    spec = counted_invoice()
    namespace = unique("fk-inv")
    queues = [naming.task_queue(namespace, "invoice", a.name) for a in spec.agents]
    async with in_process_workers(client, queues, database_url, redis_url):
        source, first = await run(client, spec, namespace, "invoice", "why-4821", input=QUESTION)
        assert first["status"] == "completed", first
        assert [calls(test_dir, t) for t in ("erp_lookup", "policy_search", "verify_answer")] == [1, 1, 1]
        src_steps = await store.steps(source)
        # Fork after the specialist's ERP lookup: the planner, triage's turn and the lookup are reused.
        step = next(
            i for i, s in enumerate(src_steps, 1) if s["type"] == "tool_end" and s["data"]["tool"] == "erp_lookup"
        )
        fork, pinned = await fork_of(store, source, step)
        forked, second = await run(
            client,
            AgentTreeSpec.model_validate(pinned),
            namespace,
            "invoice",
            "why-4821-fork",
            input=QUESTION,
            fork=fork,
        )
    assert second["status"] == "completed", second
    assert second["answer"] == first["answer"] and second["payload"] == first["payload"]
    # The lookup (before the step) did not run again; the policy search and the verification did.
    assert [calls(test_dir, t) for t in ("erp_lookup", "policy_search", "verify_answer")] == [1, 2, 2]

    steps = await store.steps(forked)
    assert comparable(steps) == comparable(src_steps), "the fork took another path than its source"
    marked = [s["ord"] for s in steps if s["data"].get("reused")]
    assert marked == [s["ord"] for s in src_steps[:step]], "exactly steps 1..N are marked reused"
    assert not any(s["data"].get("reused") for s in src_steps), "the source is not changed"
    row = await store.get_run(forked)
    assert (row["forked_from"], row["fork_step"], list(row["fork_until_ord"])) == (source, step, fork.until_ord)
    audit = await store._run(
        lambda c: c.fetchrow("SELECT details FROM audit_log WHERE run_id = $1 AND action = 'run_forked'", forked)
    )
    assert audit["details"] == {"source": source, "source_name": "why-4821", "step": step}
    # The reused planner call came from the source's record too (an entrypoint planner is a call).
    recorded = await store._run(
        lambda c: c.fetch("SELECT ord, kind FROM recorded_calls WHERE run_id = $1 ORDER BY ord", source)
    )
    assert sorted(r["kind"] for r in recorded) == ["plan", "tool", "tool", "tool"]
    assert [r["kind"] for r in recorded if reused(list(r["ord"]), fork.until_ord)] == ["plan", "tool"]


async def test_fork_llm_tree_makes_no_model_request_for_reused_steps(
    client: Client, database_url: str, redis_url: str, store: HistoryStore, fake_openai: FakeOpenAI, test_dir: Path
) -> None:
    script(fake_openai, "fork", [*TOOL_TURNS, {"content": json.dumps(GOOD)}], [])
    doc = llm_tree(fake_openai.base_url, "fork").model_dump(mode="json", exclude_none=True)
    for agent in doc["agents"]:
        for tool in agent.get("tools") or []:
            tool["entrypoint"] = f"fork_tools:{tool['name']}"
    spec = AgentTreeSpec.model_validate(doc)
    namespace = unique("fk-llm")
    queues = [naming.task_queue(namespace, "ap", a.name) for a in spec.agents]
    async with in_process_workers(client, queues, database_url, redis_url):
        source, first = await run(client, spec, namespace, "ap", "ask", input=QUESTION)
        assert first["status"] == "completed", first
        router, billing = len(fake_openai.requests_for("router-fork")), len(fake_openai.requests_for("billing-fork"))
        assert (router, billing, calls(test_dir, "lookup"), calls(test_dir, "policy")) == (1, 3, 1, 1)
        src_steps = await store.steps(source)
        step = next(i for i, s in enumerate(src_steps, 1) if s["type"] == "tool_end" and s["data"]["tool"] == "lookup")
        fork, pinned = await fork_of(store, source, step)
        forked, second = await run(
            client, AgentTreeSpec.model_validate(pinned), namespace, "ap", "ask-fork", input=QUESTION, fork=fork
        )
    assert second["status"] == "completed" and second["payload"] == GOOD, second
    # No request for the routing call nor the first billing call (both before the step); the two
    # billing calls after the lookup went to the server again. The lookup did not run again.
    assert len(fake_openai.requests_for("router-fork")) == 1
    assert len(fake_openai.requests_for("billing-fork")) == 3 + 2
    assert (calls(test_dir, "lookup"), calls(test_dir, "policy")) == (1, 2)
    steps = await store.steps(forked)
    assert comparable(steps) == comparable(src_steps)
    assert [s["ord"] for s in steps if s["data"].get("reused")] == [s["ord"] for s in src_steps[:step]]
    assert second["token_usage"] == first["token_usage"]  # reused calls count their recorded usage


async def test_retry_reruns_the_failed_tool_and_reuses_what_came_before(
    client: Client, database_url: str, redis_url: str, store: HistoryStore, test_dir: Path
) -> None:
    spec = tree_spec(
        {
            "root": "boss",
            "agents": [
                {"name": "boss", "description": "Delegates.", "children": ["doer"]},
                {
                    "name": "doer",
                    "description": "Does the job.",
                    "entrypoint": "fork_tools:careful",
                    "tools": [
                        {"name": "prepare", "entrypoint": "fork_tools:prepare"},
                        {"name": "flaky", "entrypoint": "fork_tools:flaky"},
                    ],
                },
            ],
        }
    )
    namespace = unique("fk-retry")
    queues = [naming.task_queue(namespace, "jobs", a.name) for a in spec.agents]
    async with in_process_workers(client, queues, database_url, redis_url):
        source, first = await run(client, spec, namespace, "jobs", "job", input="do job-1")
        assert first["status"] == "failed", first
        assert (calls(test_dir, "prepare"), calls(test_dir, "flaky")) == (1, 1)
        fork, pinned = await fork_of(store, source, None)  # a retry: no step
        src_steps = await store.steps(source)
        failed = src_steps[fork.step]  # the step after the reused ones: the failed tool_end
        assert (failed["type"], failed["data"]["tool"], failed["data"]["status"]) == ("tool_end", "flaky", "error")
        retried, second = await run(
            client, AgentTreeSpec.model_validate(pinned), namespace, "jobs", "job-retry", input="do job-1", fork=fork
        )
    assert second["status"] == "completed", second
    assert (calls(test_dir, "prepare"), calls(test_dir, "flaky")) == (1, 2)  # prepare reused, flaky live
    steps = await store.steps(retried)
    assert [s["ord"] for s in steps if s["data"].get("reused")] == [s["ord"] for s in src_steps[: fork.step]]
    assert [s["data"]["status"] for s in steps if s["type"] == "tool_end"] == ["ok", "ok"]
