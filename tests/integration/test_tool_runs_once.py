"""A tool call whose worker stops answering for longer than the heartbeat timeout (SIGSTOP for 12 s,
then SIGCONT: a worker starved of CPU or cut off from the server does the same) is retried by Temporal on
that same worker while the first attempt's tool is still running. The retry joins the running execution
instead of starting the tool again: one side effect (docs/reliability.md; the fault suite saw it run
twice). Real worker processes, Temporal dev server, PostgreSQL and Redis; a Python agent and a model
agent (their tool calls take different paths in the worker)."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from durable_support import API_KEY, WorkerProcess, tree_spec, unique, wait_for, worker_env
from fake_openai import FakeOpenAI
from temporalio.client import Client

from agent_tree.contract import run_input
from agent_tree.contract.temporal import start_run

pytestmark = pytest.mark.integration
STOPPED_SECONDS = 12  # > the 8 s heartbeat timeout of tool calls and Python turns


def spec_for(kind: str, base_url: str) -> Any:
    tool = {"name": "slow_pay", "entrypoint": "durable_agents:slow_pay", "timeoutSeconds": 60}
    worker: dict[str, Any] = (
        {"name": "worker", "entrypoint": "durable_agents:payer", "tools": [tool]}
        if kind == "python"
        else {"name": "worker", "model": {"name": "once-clerk", "baseUrl": base_url}, "tools": [tool]}
    )
    return tree_spec({"root": "office", "agents": [{"name": "office", "children": ["worker"]}, worker]})


@pytest.mark.parametrize("kind", ["python", "model"])
async def test_a_retry_on_the_same_worker_joins_the_running_tool_call(
    client: Client,
    temporal_address: str,
    database_url: str,
    redis_url: str,
    fake_openai: FakeOpenAI,
    test_dir: Path,
    kind: str,
) -> None:
    key = uuid.uuid4().hex[:10]
    fake_openai.scripts["once-clerk"] = [{"tool_calls": [("slow_pay", {"key": key})]}, {"content": "paid"}]
    spec = spec_for(kind, fake_openai.base_url)
    namespace = unique("once")
    env = worker_env(
        temporal_address, database_url, redis_url, DURABLE_TEST_DIR=str(test_dir), AGENT_TREE_MODEL_API_KEY=API_KEY
    )
    workers = {a.name: WorkerProcess(namespace, "t", a.name, env, test_dir).start() for a in spec.agents}
    try:
        await asyncio.gather(*(w.ready() for w in workers.values()))
        inp = run_input(namespace, "t", spec, name=unique("run"), uid=uuid.uuid4().hex[:8], input=f"pay {key}")
        handle = await start_run(client, inp)
        paying = test_dir / f"paying-{key}"
        await wait_for(paying.exists, "the tool call to start", within=60)
        pid = int(paying.read_text())
        assert pid == workers["worker"].proc.pid  # type: ignore[union-attr]
        await asyncio.sleep(1)
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(STOPPED_SECONDS)
        finally:
            os.kill(pid, signal.SIGCONT)
        result = await asyncio.wait_for(handle.result(), 90)
    finally:
        for w in workers.values():
            w.stop()

    assert result["status"] == "completed", result
    # Temporal did retry the call (or the Python turn holding it) ...
    history = await handle.fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert max(attempts) >= 2, attempts
    # ... and the tool ran once, under one idempotency key that names the run's workflow
    lines = [line.split() for line in (test_dir / "payments.log").read_text().splitlines()]
    assert len(lines) == 1, lines
    assert lines[0][0] == key and lines[0][1].startswith(f"{handle.id}/"), lines
