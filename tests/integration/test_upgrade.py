"""Upgrade: a run started by engine v1 (one child workflow per agent turn) while its turn is in the middle
of a tool call, the v1 workers killed, today's workers deployed: the run ends on today's workers, still on
v1's path (its history has no ``one-workflow-per-run`` marker, so ``workflow.patched`` keeps it there and
``AgentWorkflow`` must stay registered), and the next run takes the v2 path. docs/durable-runs.md,
"Upgrading the engine".

The v1 engine is the repository at ``V1_ENGINE`` (the last commit before engine v2), exported with
``git archive`` and run as real worker processes with the same venv.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from durable_support import WorkerProcess, in_process_workers, unique, wait_for, worker_env
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from test_durable_failures import ANSWER, executions, queues, start_books

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
V1_ENGINE = "896c95d2eefc506414deb8fa997e72e916d85543"
CHILD = EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED


def export_v1(dest: Path) -> Path:
    """The v1 engine's sources (agent_tree, worker, the test agents) in ``dest``."""
    done = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", V1_ENGINE, "agent_tree", "worker", "tests/integration"],
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, (
        f"cannot export engine v1 ({V1_ENGINE[:12]}) from git: {done.stderr.decode().strip()} "
        "(a shallow clone lacks it: git fetch --unshallow)"
    )
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def v1_worker(old: Path, namespace: str, agent: str, env: dict[str, str], log_dir: Path) -> WorkerProcess:
    proc = WorkerProcess(namespace, "books", agent, env, log_dir)
    # The v1 sources first on the path; the CLI entry point of the venv would import today's code.
    # ("-c" puts the working directory, today's checkout, first on sys.path: drop it.)
    boot = "import sys; sys.path.remove(''); from agent_tree.cli import run; sys.exit(run())"
    proc.argv = [sys.executable, "-c", boot, *proc.argv[1:]]
    proc.env = {
        **env,
        "PYTHONPATH": os.pathsep.join(str(old / p) for p in ("", "worker", "tests/integration")),
    }
    return proc


async def has_child_workflows(client: Client, workflow_id: str) -> bool:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return any(e.event_type == CHILD for e in history.events)


async def test_a_v1_run_mid_tool_call_ends_on_v2_workers(
    client: Client, temporal_address: str, database_url: str, redis_url: str, test_dir: Path, tmp_path_factory
) -> None:
    old = export_v1(tmp_path_factory.mktemp("engine-v1"))
    namespace, key = unique("upgrade"), "k-upgrade"
    env = worker_env(temporal_address, database_url, redis_url, DURABLE_TEST_DIR=str(test_dir))
    v1 = [v1_worker(old, namespace, agent, env, test_dir) for agent in ("office", "intake", "bookkeeper")]
    try:
        for w in v1:
            w.start()
        for w in v1:
            await w.ready()
        handle = await start_books(client, namespace, key)
        await wait_for(lambda: (test_dir / f"holding-{key}").exists(), "the v1 run's gated tool call to start")
        assert executions(test_dir, key) == ["debit", "credit", "reconcile"]
        assert await has_child_workflows(client, handle.id)  # v1: the turns are child workflows
        for w in v1:
            w.kill()  # the rollout replaces every v1 pod, one mid tool call
    finally:
        for w in v1:
            w.stop()

    async with in_process_workers(client, queues(namespace, "office", "intake", "bookkeeper"), database_url, redis_url):
        (test_dir / f"release-{key}").write_text("go")
        result = await asyncio.wait_for(handle.result(), 120)
        assert result["status"] == "completed" and result["answer"] == ANSWER
        # Completed tool calls were not redone by the new workers; the interrupted one ran again once.
        assert executions(test_dir, key) == ["debit", "credit", "reconcile", "close"]

        # A run started after the upgrade is one workflow.
        key2 = "k-after"
        (test_dir / f"release-{key2}").write_text("go")
        after = await start_books(client, namespace, key2)
        assert (await asyncio.wait_for(after.result(), 60))["answer"] == ANSWER
        assert not await has_child_workflows(client, after.id)
