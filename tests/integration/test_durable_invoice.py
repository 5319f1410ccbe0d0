"""The invoice example, durable (one worker process per agent) vs embedded: same answer, same steps."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from agent_tree_worker.executor import AgentWorkflow
from agent_tree_worker.main import PASSTHROUGH
from agent_tree_worker.store import HistoryStore
from agent_tree_worker.stream import StepStream
from agent_tree_worker.workflows import AgentRunWorkflow
from durable_support import EXAMPLE, WorkerProcess, unique, worker_env
from temporalio.client import Client
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from agent_tree import naming
from agent_tree.cli import add_import_path, load_tree
from agent_tree.compiler import compile_tree
from agent_tree.contract import RUN_END, Progress, decode_step, run_input
from agent_tree.contract.temporal import DATA_CONVERTER, run_progress, start_run
from agent_tree.events import event_hooks

pytestmark = pytest.mark.integration
QUESTION = "Why was invoice #4821 rejected?"


async def embedded(question: str) -> tuple[Any, list[dict[str, Any]]]:
    tree, _ = load_tree(str(EXAMPLE / "agenttree.yaml"))
    add_import_path(str(EXAMPLE / "agenttree.yaml"))
    events: list[dict[str, Any]] = []

    async def sink(event: dict[str, Any]) -> None:
        events.append(event)

    result = await compile_tree(tree.spec, "invoice").orchestrator(hooks=event_hooks(sink)).run(question)
    return result, json.loads(json.dumps(events))


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "agent-tree"), *args], capture_output=True, text=True, env=env, timeout=60
    )


async def test_invoice_durable_equals_embedded(
    client: Client, temporal_address: str, database_url: str, redis_url: str, store: HistoryStore, tmp_path: Path
) -> None:
    tree, _ = load_tree(str(EXAMPLE / "agenttree.yaml"))
    namespace = unique("inv")
    env = worker_env(temporal_address, database_url, redis_url)
    workers = [WorkerProcess(namespace, "invoice", a.name, env, tmp_path).start() for a in tree.spec.agents]
    try:
        await asyncio.gather(*(w.ready() for w in workers))
        inp = run_input(namespace, "invoice", tree.spec, name="why-4821", uid=uuid.uuid4().hex[:8], input=QUESTION)
        handle = await start_run(client, inp)
        assert handle.id == naming.workflow_id(namespace, "why-4821", inp.uid)
        result = await asyncio.wait_for(handle.result(), 90)
        # The operator follows runs through this query when Redis is away (needs a live root worker).
        progress = await run_progress(handle)
        # `agent-tree submit` starts the same run from the manifest, without Kubernetes.
        submitted = await asyncio.to_thread(
            cli,
            "submit",
            "-f",
            str(EXAMPLE / "agenttree.yaml"),
            "-i",
            QUESTION,
            "--namespace",
            namespace,
            "--wait",
            env=env,
        )
    finally:
        for w in workers:
            w.stop()

    expected, events = await embedded(QUESTION)
    assert result["status"] == expected.status == "completed"
    assert result["answer"] == expected.answer
    assert result["final_agent"] == expected.final_agent == "verifier"
    assert result["payload"] == expected.payload
    assert result["plan"] == expected.plan
    assert result["steps"] == expected.steps == 3
    assert result["tree_revision"] == inp.revision

    assert submitted.returncode == 0, submitted.stderr
    assert json.loads(submitted.stdout)["answer"] == result["answer"]
    assert progress == Progress(phase="Succeeded", current_agent=None, steps=3, token_usage=0, plan=expected.plan)
    desc = await handle.describe()
    assert desc.task_queue == naming.task_queue(namespace, "invoice", "supervisor")

    steps = await store.steps(handle.id)
    assert [s["data"] for s in steps] == events, "durable step sequence differs from the embedded run"
    assert [s["ord"] for s in steps] == sorted(s["ord"] for s in steps)
    run = await store.get_run(handle.id)
    assert run["status"] == "completed" and run["answer"] == expected.answer and run["steps"] == 3
    calls = await store.tool_calls(handle.id)
    assert sorted(c["tool"] for c in calls) == ["erp_lookup", "policy_search", "verify_answer"]

    # Redis holds the same steps, in order, and an end marker.
    stream = StepStream(redis_url)
    entries = await stream.client.xrange(naming.stream_key(handle.id))
    await stream.close()
    decoded = [decode_step(fields) for _, fields in entries]
    assert [d["data"] for d in decoded if d["type"] != RUN_END] == events
    assert decoded[-1]["type"] == RUN_END and decoded[-1]["data"]["status"] == "completed"

    # The CLI reads the history back, by workflow id and by NAMESPACE/NAME.
    cli_env = worker_env(temporal_address, database_url, redis_url)
    shown = cli("history", f"{namespace}/why-4821", "--json", env=cli_env)
    assert shown.returncode == 0, shown.stderr
    assert [s["data"] for s in json.loads(shown.stdout)["steps"]] == events
    table = cli("history", handle.id, env=cli_env)
    assert table.returncode == 0 and "erp_lookup" in table.stdout and expected.answer in table.stdout
    logs = cli("logs", "-f", handle.id, env=cli_env)
    assert logs.returncode == 0, logs.stderr
    assert expected.answer in logs.stdout and logs.stdout.count("\n") == len(events)

    # The recorded history replays deterministically against the current workflow code.
    history = await handle.fetch_history()
    replayer = Replayer(
        workflows=[AgentRunWorkflow, AgentWorkflow],
        data_converter=DATA_CONVERTER,
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
        ),
    )
    await replayer.replay_workflow(history)
