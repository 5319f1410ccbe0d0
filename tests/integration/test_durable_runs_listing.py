"""``agent-tree runs`` on a real PostgreSQL, with runs written by the store's own API (issue 10 item 8):
newest first, filters, keyset pages that new runs do not shift, JSON, the index, and the console script."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from agent_tree_worker.store import HistoryStore
from services import Postgres

from agent_tree.cli import main

pytestmark = pytest.mark.integration

CLOCK: dict[str, datetime] = {}
"""The instant the rows' ages count from: taken when the first row is recorded (not at collection: a
long session would age the rows past the --since windows before this module runs); one for all rows."""
# (namespace, name, tree, minutes ago, final status or None while running)
RUNS = [
    ("team-a", "why-1", "invoice", 50, "completed"),
    ("team-a", "why-2", "invoice", 40, "failed"),
    ("team-a", "why-3", "invoice", 30, None),
    ("team-a", "why-4", "invoice", 20, "max_steps_reached"),
    ("team-b", "books-1", "books", 20, "cancelled"),  # the same started_at as why-4: the id breaks the tie
    ("team-b", "books-2", "books", 10, "completed"),
    ("team-a", "why-5", "invoice", 5, "completed"),
    ("team-a", "old-1", "invoice", 3 * 24 * 60, "completed"),  # three days ago
]


def workflow_id(ns: str, name: str) -> str:
    return f"agentrun.{ns}.{name}.uid-{name}"


async def record(store: HistoryStore, ns: str, name: str, tree: str, minutes: int, status: str | None) -> None:
    """A run as a worker records it: start_run, then finish_run when it ended."""
    wid = workflow_id(ns, name)
    started = CLOCK.setdefault("now", datetime.now(UTC)) - timedelta(minutes=minutes)
    await store.start_run(
        {
            "workflow_id": wid,
            "run_id": "r1",
            "namespace": ns,
            "name": name,
            "uid": f"uid-{name}",
            "tree": tree,
            "revision": "rev1",
            "root": "sup",
            "input": "why?",
            "context": {},
            "started_at": started,
        },
        "test",
    )
    if status is not None:
        await store.finish_run(wid, {"status": status, "answer": "a", "steps": 3, "token_usage": 120}, "test")
        conn = await asyncpg.connect(store.url)
        try:  # finished 95 s after it started (finish_run stamps now())
            await conn.execute(
                "UPDATE runs SET finished_at = started_at + interval '95 seconds' WHERE workflow_id = $1", wid
            )
        finally:
            await conn.close()


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pg = Postgres(tmp_path_factory.mktemp("pg")).start()

    async def fill() -> None:
        store = HistoryStore(pg.url)
        try:
            await store.migrate()
            for run in RUNS:
                await record(store, *run)
        finally:
            await store.close()

    asyncio.run(fill())
    yield pg.url
    pg.cleanup()


@pytest.fixture
def runs(database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``agent-tree runs ARGS`` in-process: (exit code, stdout, stderr)."""
    monkeypatch.setenv("AGENT_TREE_DATABASE_URL", database)

    def call(*args: str) -> tuple[int, str, str]:
        code = main(["runs", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return call


def names(table: str) -> list[str]:
    header, *rows = table.strip().splitlines()
    col = header.split().index("NAME")
    return [r.split()[col] for r in rows]


def newest_first(keep=lambda run: True) -> list[str]:
    ordered = sorted(RUNS, key=lambda r: (-r[3], workflow_id(r[0], r[1])), reverse=True)
    return [r[1] for r in ordered if keep(r)]


def test_all_namespaces_newest_first_with_kubectl_columns(runs) -> None:
    code, out, err = runs()
    assert code == 0 and err == "", err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "TREE", "PHASE", "STEPS", "TOKENS", "STARTED", "DURATION"]
    assert names(out) == newest_first()
    by_name = {line.split()[1]: line.split() for line in lines[1:]}
    assert by_name["why-4"][3:6] == ["Failed", "3", "120"] and by_name["why-4"][-1] == "1m35s"
    assert by_name["why-3"][3] == "Running" and by_name["why-3"][-1] == "-"
    assert by_name["books-1"][0] == "team-b" and by_name["books-1"][3] == "Cancelled"
    # the tie (same started_at): the larger workflow id (agentrun.team-b...) comes first
    assert names(out).index("books-1") + 1 == names(out).index("why-4")


def test_pages_follow_the_cursor_and_new_runs_do_not_shift_them(runs, database: str) -> None:
    seen: list[str] = []
    args: list[str] = ["--limit", "3"]
    pages = 0
    while True:
        code, out, err = runs(*args)
        assert code == 0
        seen += names(out)
        pages += 1
        if pages == 1:  # a run starting between two page reads lands on no later page
            asyncio.run(_record_one(database, "team-a", "late-1", "invoice", 0, None))
        if not err:
            break
        assert err.startswith("more: --cursor ") and err.count("\n") == 1, err
        args = ["--limit", "3", "--cursor", err.split()[-1]]
    assert pages == 3
    assert seen == newest_first()  # every run once, in order, without the one added meanwhile
    code, out, _ = runs("--limit", "3")
    assert names(out)[0] == "late-1"  # ...which the first page now shows
    asyncio.run(_delete(database, workflow_id("team-a", "late-1")))


async def _record_one(url: str, *run) -> None:
    store = HistoryStore(url)
    try:
        await record(store, *run)
    finally:
        await store.close()


async def _delete(url: str, wid: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DELETE FROM runs WHERE workflow_id = $1", wid)
    finally:
        await conn.close()


def test_filters(runs) -> None:
    code, out, _ = runs("-n", "team-a")
    assert code == 0 and out.split()[0] == "NAME"  # one namespace: no NAMESPACE column, as kubectl
    assert names(out) == newest_first(lambda r: r[0] == "team-a")
    assert names(runs("--tree", "books")[1]) == ["books-2", "books-1"]
    assert names(runs("--phase", "Failed")[1]) == ["why-4", "why-2"]  # failed and max_steps_reached
    assert names(runs("--phase", "running,cancelled")[1]) == ["books-1", "why-3"]
    assert names(runs("--since", "1h")[1]) == newest_first(lambda r: r[3] <= 60)
    assert names(runs("-n", "team-a", "--tree", "invoice", "--phase", "Succeeded", "--since", "2h")[1]) == [
        "why-5",
        "why-1",
    ]
    code, out, err = runs("-n", "nobody")
    assert (code, out, err) == (0, "", "No runs found in namespace nobody.\n")


def test_json_pages(runs) -> None:
    code, out, _ = runs("--json", "--limit", "2", "--phase", "Succeeded")
    doc = json.loads(out)
    assert code == 0 and [r["name"] for r in doc["runs"]] == ["why-5", "books-2"]
    assert {r["phase"] for r in doc["runs"]} == {"Succeeded"} and doc["runs"][0]["duration_seconds"] == 95.0
    assert doc["runs"][0]["workflow_id"] == workflow_id("team-a", "why-5")
    last = json.loads(runs("--json", "--limit", "2", "--phase", "Succeeded", "--cursor", doc["next_cursor"])[1])
    assert [r["name"] for r in last["runs"]] == ["why-1", "old-1"] and last["next_cursor"] is None


def test_the_listing_query_can_use_the_new_indexes(database: str) -> None:
    async def plan(where: str) -> str:
        conn = await asyncpg.connect(database)
        try:
            await conn.execute("SET enable_seqscan = off")
            rows = await conn.fetch(
                f"EXPLAIN SELECT * FROM runs {where} ORDER BY started_at DESC, workflow_id DESC LIMIT 51"
            )
            return "\n".join(r[0] for r in rows)
        finally:
            await conn.close()

    assert "runs_started_idx" in asyncio.run(plan(""))
    assert "runs_ns_started_idx" in asyncio.run(plan("WHERE namespace = 'team-a'"))


def test_console_script(database: str) -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "agent-tree"), "runs", "--tree", "books"],
        env={"PATH": "/usr/bin:/bin", "AGENT_TREE_DATABASE_URL": database},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert names(proc.stdout) == ["books-2", "books-1"]
