"""The history schema on a real PostgreSQL: migrations (CLI, concurrent starts), idempotent writes,
the append-only audit log and the retention purge."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from agent_tree_worker.store import HistoryStore
from durable_support import unique
from services import Postgres

pytestmark = pytest.mark.integration


def cli(*args: str, url: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "AGENT_TREE_DATABASE_URL": url}
    return subprocess.run(
        [str(Path(sys.executable).parent / "agent-tree"), *args], capture_output=True, text=True, env=env, timeout=60
    )


async def test_migrations_cli_concurrent_and_idempotent(private_postgres: Postgres) -> None:
    first = cli("db", "migrate", url=private_postgres.url)
    assert first.returncode == 0 and "applied: 0001_history" in first.stdout, first.stderr
    again = cli("db", "migrate", url=private_postgres.url)
    assert again.returncode == 0 and "up to date" in again.stdout
    stores = [HistoryStore(private_postgres.url) for _ in range(4)]
    try:
        assert await asyncio.gather(*(s.migrate() for s in stores)) == [[]] * 4  # advisory lock: no race
    finally:
        for s in stores:
            await s.close()


async def test_idempotent_writes_audit_and_purge(private_postgres: Postgres) -> None:
    store = HistoryStore(private_postgres.url)
    await store.migrate()
    run_id = unique("agentrun.ns.r")
    row = {
        "workflow_id": run_id,
        "run_id": "r1",
        "namespace": "ns",
        "name": "r",
        "uid": "u",
        "tree": "t",
        "revision": "abc",
        "root": "sup",
        "input": "hi",
        "context": {},
    }
    step = {"ord": [1], "type": "agent_start", "agent": "sup", "data": {"type": "agent_start", "agent": "sup"}}
    try:
        for _ in range(2):  # activities run at least once: every write may happen twice
            await store.start_run(row, "test")
            await store.write_steps(run_id, [step, {**step, "ord": [2, 1], "data": {"type": "x", "big": "y" * 70000}}])
            await store.finish_run(run_id, {"status": "completed", "answer": "done", "steps": 1}, "test")
        steps = await store.steps(run_id)
        assert [s["ord"] for s in steps] == [[1], [2, 1]]
        assert steps[1]["data"]["big"]["bytes"] == 70002  # large field stored as a blob
        assert await store.get_blob(steps[1]["data"]["big"]) == "y" * 70000
        conn = await asyncpg.connect(private_postgres.url)
        try:
            audit = await conn.fetch("SELECT action FROM audit_log WHERE run_id = $1 ORDER BY id", run_id)
            assert [a["action"] for a in audit] == ["run_started", "run_finished"]
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE run_id = $1", run_id)
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute("DELETE FROM audit_log WHERE run_id = $1", run_id)
            await conn.execute(
                "UPDATE runs SET finished_at = now() - interval '40 days' WHERE workflow_id = $1", run_id
            )
        finally:
            await conn.close()
        dry = cli("db", "purge", "--older-than", "30d", "--dry-run", url=private_postgres.url)
        assert dry.returncode == 0 and "would delete: 1 runs" in dry.stdout, dry.stderr
        purged = cli("db", "purge", "--older-than", "30d", url=private_postgres.url)
        assert purged.returncode == 0 and "2 steps" in purged.stdout and "2 audit_log" in purged.stdout, purged.stdout
        assert await store.get_run(run_id) is None and await store.steps(run_id) == []
    finally:
        await store.close()
