"""Durability: a worker killed mid tool call, PostgreSQL restarted mid-run, Redis stopped mid-run."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from agent_tree_worker.store import HistoryStore
from durable_support import (
    WorkerProcess,
    in_process_workers,
    run_embedded,
    tree_spec,
    unique,
    wait_for,
    worker_env,
)
from services import Postgres, Redis
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError

from agent_tree import naming
from agent_tree.contract import run_input
from agent_tree.contract.temporal import start_run

pytestmark = pytest.mark.integration

BOOKS = tree_spec(
    {
        "root": "office",
        "agents": [
            {"name": "office", "children": ["intake", "bookkeeper"]},
            {"name": "intake", "entrypoint": "durable_agents:intake"},
            {
                "name": "bookkeeper",
                "entrypoint": "durable_agents:bookkeeper",
                "tools": [
                    {"name": "ledger_step", "entrypoint": "durable_agents:ledger_step"},
                    {"name": "gated", "entrypoint": "durable_agents:gated"},
                ],
            },
        ],
    }
)
ANSWER = "booked: debit, credit, reconcile, close"


def executions(test_dir: Path, key: str) -> list[str]:
    log = test_dir / "executions.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.split()[1] for line in lines if line.split()[0] == key]


def queues(namespace: str, *agents: str) -> list[str]:
    return [naming.task_queue(namespace, "books", a) for a in agents]


async def start_books(client: Client, namespace: str, key: str):
    inp = run_input(namespace, "books", BOOKS, name=unique("book"), uid=uuid.uuid4().hex[:8], input=f"book it {key}")
    return await start_run(client, inp)


async def test_kill_9_specialist_worker_mid_tool_call(
    client: Client, temporal_address: str, database_url: str, redis_url: str, store: HistoryStore, test_dir: Path
) -> None:
    namespace, key = unique("kill"), unique("k")
    specialist = WorkerProcess(
        namespace,
        "books",
        "bookkeeper",
        worker_env(temporal_address, database_url, redis_url, DURABLE_TEST_DIR=str(test_dir)),
        test_dir,
    ).start()
    try:
        async with in_process_workers(client, queues(namespace, "office", "intake"), database_url, redis_url):
            await specialist.ready()
            handle = await start_books(client, namespace, key)
            await wait_for(lambda: (test_dir / f"holding-{key}").exists(), "the gated tool call to start")
            assert executions(test_dir, key) == ["debit", "credit", "reconcile"]
            specialist.kill()  # kill -9 while the tool call is in progress
            specialist.start()  # a replacement worker (the Deployment's new pod)
            await specialist.ready()
            (test_dir / f"release-{key}").write_text("go")
            result = await asyncio.wait_for(handle.result(), 90)
    finally:
        specialist.stop()

    assert result["status"] == "completed" and result["answer"] == ANSWER
    # Completed tool calls ran exactly once; the interrupted one ran again and completed once.
    assert executions(test_dir, key) == ["debit", "credit", "reconcile", "close"]
    calls = await store.tool_calls(handle.id)
    assert [(c["tool"], c["seq"]) for c in sorted(calls, key=lambda c: c["seq"])] == [
        ("ledger_step", 1),
        ("ledger_step", 2),
        ("ledger_step", 3),
        ("gated", 4),
    ]
    assert [c["attempt"] for c in sorted(calls, key=lambda c: c["seq"])] == [1, 1, 1, 2]
    assert len({c["journal_key"] for c in calls}) == 1  # one agent turn, retried, not restarted
    steps = await store.steps(handle.id)
    ends = [s["data"]["output"]["step"] for s in steps if s["type"] == "tool_end"]
    assert ends == ["debit", "credit", "reconcile", "close"]


async def test_postgres_restarted_mid_run_loses_no_step(
    client: Client, redis_url: str, private_postgres: Postgres, test_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace, key = unique("pg"), unique("k")
    store = HistoryStore(private_postgres.url)
    await store.migrate()
    try:
        async with in_process_workers(
            client, queues(namespace, "office", "intake", "bookkeeper"), private_postgres.url, redis_url
        ):
            handle = await start_books(client, namespace, key)
            await wait_for(lambda: (test_dir / f"holding-{key}").exists(), "the gated tool call to start")
            private_postgres.stop()
            # The tool completes while PostgreSQL is down: its journal entry and steps must still land.
            (test_dir / f"release-{key}").write_text("go")
            await wait_for(lambda: "close" in executions(test_dir, key), "the gated tool to complete")
            private_postgres.start()
            result = await asyncio.wait_for(handle.result(), 120)
        assert result["status"] == "completed" and result["answer"] == ANSWER
        _, events = await run_embedded(BOOKS, f"book it {key}")
        steps = await store.steps(handle.id)
        assert [s["data"] for s in steps] == events, "a step was lost or duplicated across the restart"
        assert len(await store.tool_calls(handle.id)) == 4
        assert (await store.get_run(handle.id))["status"] == "completed"
    finally:
        await store.close()


def agent_tree_cli(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "agent-tree"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


async def test_redis_stopped_run_completes_and_logs_fall_back_to_postgres(
    client: Client,
    temporal_address: str,
    database_url: str,
    store: HistoryStore,
    private_redis: Redis,
    test_dir: Path,
) -> None:
    namespace, key = unique("redis"), unique("k")
    env = worker_env(temporal_address, database_url, private_redis.url)
    async with in_process_workers(
        client, queues(namespace, "office", "intake", "bookkeeper"), database_url, private_redis.url
    ):
        handle = await start_books(client, namespace, key)
        await wait_for(lambda: (test_dir / f"holding-{key}").exists(), "the gated tool call to start")
        follower = agent_tree_cli("logs", "-f", handle.id, env=env)  # follows the live stream
        await wait_for(lambda: (private_redis.root / "redis.log").exists(), "redis log")
        private_redis.stop()
        (test_dir / f"release-{key}").write_text("go")
        result = await asyncio.wait_for(handle.result(), 90)
        assert result["status"] == "completed" and result["answer"] == ANSWER
        out, err = await asyncio.to_thread(follower.communicate, timeout=60)
    steps = await store.steps(handle.id)
    assert follower.returncode == 0, err
    assert "Redis unavailable" in err and "following PostgreSQL" in err
    lines = out.strip().splitlines()
    assert len(lines) == len(steps), out
    assert ANSWER in lines[-1] and "tool gated" in out

    # After the run, with Redis still down, `logs` reads everything from PostgreSQL.
    again = agent_tree_cli("logs", "-f", handle.id, env=env)
    out2, err2 = await asyncio.to_thread(again.communicate, timeout=60)
    assert again.returncode == 0, err2
    assert out2 == out


async def test_cancelled_run_is_recorded_and_stops_its_turns(
    client: Client, database_url: str, redis_url: str, store: HistoryStore, test_dir: Path
) -> None:
    namespace, key = unique("cancel"), unique("k")
    async with in_process_workers(client, queues(namespace, "office", "intake", "bookkeeper"), database_url, redis_url):
        handle = await start_books(client, namespace, key)
        await wait_for(lambda: (test_dir / f"holding-{key}").exists(), "the gated tool call to start")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 60)
        run = await store.get_run(handle.id)  # written before the workflow closed
        assert run["status"] == "cancelled" and run["answer"] == "the run was cancelled"
        assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert "close" not in executions(test_dir, key)  # the held tool call was cancelled, not completed
