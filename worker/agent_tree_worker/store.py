"""Run history in PostgreSQL (asyncpg): runs, steps, the tool-call journal, blobs and the audit log.

Every write is idempotent on a natural key (``ON CONFLICT DO NOTHING``), because activities run at
least once. Connection failures (a restarting PostgreSQL) are retried for ``retry_seconds`` with
backoff; past that the error propagates and the calling activity is retried by Temporal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from agent_tree.contract import RUN_STATUSES, Step
from agent_tree.runs_query import list_runs_sql
from agent_tree_worker import payloads
from agent_tree_worker.migrate import migrate

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRYABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now (starting up)
    asyncpg.exceptions.TooManyConnectionsError,
)
TERMINAL = RUN_STATUSES


async def _init(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=payloads.dumps, decoder=json.loads, schema="pg_catalog")


class HistoryStore:
    """A connection pool plus the queries of the history schema."""

    def __init__(
        self, url: str, *, retry_seconds: float = 30.0, max_size: int = 5, retry_log_level: int = logging.WARNING
    ) -> None:
        self.url = url
        self.retry_seconds = retry_seconds
        self.retry_log_level = retry_log_level  # the CLI's short retries stay quiet: it reports the outcome once
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def _get_pool(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.url, min_size=0, max_size=self.max_size, init=_init, timeout=5, command_timeout=30
                )
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.1
        while True:
            try:
                pool = await self._get_pool()
                async with pool.acquire(timeout=10) as conn:
                    return await fn(conn)
            except RETRYABLE as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.log(
                    self.retry_log_level,
                    "PostgreSQL unavailable (%s: %s); retrying in %.1fs",
                    type(exc).__name__,
                    exc,
                    delay,
                )
                if self._pool is not None:
                    await self._pool.expire_connections()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def migrate(self) -> list[str]:
        return await self._run(migrate)

    # --- runs and audit -------------------------------------------------------------------------

    async def start_run(self, run: dict[str, Any], actor: str) -> None:
        async def q(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute(
                    """INSERT INTO runs (workflow_id, run_id, namespace, name, uid, tree, tree_revision, root_agent,
                                         input, context, started_at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                       ON CONFLICT (workflow_id) DO NOTHING""",
                    run["workflow_id"],
                    run["run_id"],
                    run["namespace"],
                    run["name"],
                    run["uid"],
                    run["tree"],
                    run["revision"],
                    run["root"],
                    run["input"],
                    run["context"],
                    _ts(run.get("started_at")),
                )
                fork = run.get("fork")
                if fork:  # a retried or forked run: link it to its source (the source is not changed)
                    await conn.execute(
                        """UPDATE runs SET forked_from = $2, fork_step = $3, fork_until_ord = $4
                           WHERE workflow_id = $1""",
                        run["workflow_id"],
                        fork["workflow_id"],
                        fork["step"],
                        fork["until_ord"],
                    )
                    await self._audit(
                        conn,
                        f"{run['workflow_id']}:run_forked",
                        run["workflow_id"],
                        actor,
                        "run_forked",
                        {"source": fork["workflow_id"], "source_name": fork["name"], "step": fork["step"]},
                    )
                await self._audit(
                    conn,
                    f"{run['workflow_id']}:run_started",
                    run["workflow_id"],
                    actor,
                    "run_started",
                    {"tree": run["tree"], "revision": run["revision"], "run_id": run["run_id"]},
                )

        await self._run(q)

    async def finish_run(self, workflow_id: str, result: dict[str, Any], actor: str) -> None:
        async def q(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute(
                    """UPDATE runs SET status = $2, answer = $3, result = $4, steps = $5, token_usage = $6,
                                       finished_at = coalesce(finished_at, now()), updated_at = now()
                       WHERE workflow_id = $1""",
                    workflow_id,
                    result["status"],
                    result.get("answer"),
                    result,
                    int(result.get("steps") or 0),
                    int(result.get("token_usage") or 0),
                )
                await self._audit(
                    conn,
                    f"{workflow_id}:run_finished",
                    workflow_id,
                    actor,
                    "run_finished",
                    {"status": result["status"], "final_agent": result.get("final_agent")},
                )

        await self._run(q)

    @staticmethod
    async def _audit(
        conn: asyncpg.Connection, key: str, run_id: str | None, actor: str, action: str, details: dict[str, Any]
    ) -> None:
        await conn.execute(
            """INSERT INTO audit_log (key, run_id, actor, action, details) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (key) DO NOTHING""",
            key,
            run_id,
            actor,
            action,
            details,
        )

    async def audit(self, key: str, run_id: str | None, actor: str, action: str, details: dict[str, Any]) -> None:
        await self._run(lambda conn: self._audit(conn, key, run_id, actor, action, details))

    # --- steps ----------------------------------------------------------------------------------

    async def write_steps(self, run_id: str, steps: list[Step]) -> list[Step]:
        """Insert steps (the contract's :class:`~agent_tree.contract.Step`); returns them as stored
        (large fields of ``data`` replaced by blob references)."""
        if not steps:
            return []
        stored, blobs = [], []
        for step in steps:
            data = dict(step["data"])
            for key, value in list(data.items()):
                if key != "type" and payloads.json_size(value) > payloads.BLOB_THRESHOLD:
                    text = payloads.dumps(value)
                    blobs.append((payloads.blob_id(text), run_id, len(text.encode()), text))
                    data[key] = payloads.make_ref(text)
            stored.append({**step, "data": data})

        async def q(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                if blobs:
                    await conn.executemany(
                        "INSERT INTO blobs (id, run_id, bytes, content) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        blobs,
                    )
                await conn.executemany(
                    """INSERT INTO steps (run_id, ord, type, agent, data, created_at) VALUES ($1, $2, $3, $4, $5, $6)
                       ON CONFLICT (run_id, ord) DO NOTHING""",
                    [(run_id, s["ord"], s["type"], s.get("agent"), s["data"], _ts(s.get("ts"))) for s in stored],
                )

        await self._run(q)
        return stored

    async def steps(self, run_id: str, after: list[int] | None = None) -> list[Step]:
        """Steps of a run in order (optionally only those after ``after``)."""
        rows = await self._run(
            lambda conn: conn.fetch(
                """SELECT ord, type, agent, data, created_at FROM steps
                   WHERE run_id = $1 AND ($2::integer[] IS NULL OR ord > $2) ORDER BY ord""",
                run_id,
                after,
            )
        )
        return [_step(r) for r in rows]

    # --- runs lookups ---------------------------------------------------------------------------

    async def get_run(self, workflow_id: str) -> dict[str, Any] | None:
        row = await self._run(lambda conn: conn.fetchrow("SELECT * FROM runs WHERE workflow_id = $1", workflow_id))
        return dict(row) if row else None

    async def latest_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        row = await self._run(
            lambda conn: conn.fetchrow(
                "SELECT * FROM runs WHERE namespace = $1 AND name = $2 ORDER BY started_at DESC LIMIT 1",
                namespace,
                name,
            )
        )
        return dict(row) if row else None

    async def runs_of_tree(self, namespace: str, tree: str, limit: int = 50) -> list[dict[str, Any]]:
        rows = await self._run(
            lambda conn: conn.fetch(
                "SELECT * FROM runs WHERE namespace = $1 AND tree = $2 ORDER BY started_at DESC LIMIT $3",
                namespace,
                tree,
                limit,
            )
        )
        return [dict(r) for r in rows]

    async def list_runs(
        self,
        *,
        namespace: str | None = None,
        tree: str | None = None,
        statuses: tuple[str, ...] | None = None,
        since: datetime | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Runs newest first (``started_at``, then ``workflow_id``, descending), at most ``limit``;
        ``before`` is the cursor position (:func:`agent_tree.runs_query.list_runs_sql`)."""
        sql, params = list_runs_sql(
            namespace=namespace, tree=tree, statuses=statuses, since=since, before=before, limit=limit
        )
        rows = await self._run(lambda conn: conn.fetch(sql, *params))
        return [dict(r) for r in rows]

    # --- recorded calls (retry and fork) ---------------------------------------------------------

    async def record_call(self, run_id: str, ord_: list[int], kind: str, result: Any) -> None:
        """Keep what a call returned, keyed by the ord of the step recording its outcome (idempotent)."""
        await self._run(
            lambda conn: conn.execute(
                """INSERT INTO recorded_calls (run_id, ord, kind, result) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (run_id, ord) DO NOTHING""",
                run_id,
                ord_,
                kind,
                result,
            )
        )

    async def recorded_call(self, run_id: str, ord_: list[int]) -> dict[str, Any] | None:
        row = await self._run(
            lambda conn: conn.fetchrow(
                "SELECT kind, result FROM recorded_calls WHERE run_id = $1 AND ord = $2", run_id, ord_
            )
        )
        return dict(row) if row else None

    async def fork_of(self, run_id: str) -> tuple[str, list[int]] | None:
        """(source workflow id, ord of the last reused step) of a forked run; None for any other run."""
        row = await self._run(
            lambda conn: conn.fetchrow("SELECT forked_from, fork_until_ord FROM runs WHERE workflow_id = $1", run_id)
        )
        if row is None or row["forked_from"] is None:
            return None
        return row["forked_from"], list(row["fork_until_ord"])

    async def put_tree_spec(self, revision: str, spec: dict[str, Any]) -> None:
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO tree_specs (revision, spec) VALUES ($1, $2) ON CONFLICT (revision) DO NOTHING",
                revision,
                spec,
            )
        )

    async def tree_spec(self, revision: str) -> dict[str, Any] | None:
        return await self._run(lambda conn: conn.fetchval("SELECT spec FROM tree_specs WHERE revision = $1", revision))

    # --- journal and blobs ----------------------------------------------------------------------

    async def journal_get(self, journal_key: str, seq: int) -> dict[str, Any] | None:
        row = await self._run(
            lambda conn: conn.fetchrow(
                "SELECT tool, args, result FROM tool_calls WHERE journal_key = $1 AND seq = $2", journal_key, seq
            )
        )
        return dict(row) if row else None

    async def journal_put(
        self,
        journal_key: str,
        seq: int,
        *,
        run_id: str,
        agent: str,
        tool: str,
        args: dict[str, Any],
        result: dict[str, Any],
        attempt: int,
    ) -> None:
        await self._run(
            lambda conn: conn.execute(
                """INSERT INTO tool_calls (journal_key, seq, run_id, agent, tool, args, result, status, attempt)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (journal_key, seq) DO NOTHING""",
                journal_key,
                seq,
                run_id,
                agent,
                tool,
                args,
                result,
                result.get("status", "ok"),
                attempt,
            )
        )

    async def tool_calls(self, run_id: str) -> list[dict[str, Any]]:
        rows = await self._run(
            lambda conn: conn.fetch(
                "SELECT * FROM tool_calls WHERE run_id = $1 ORDER BY completed_at, journal_key, seq", run_id
            )
        )
        return [dict(r) for r in rows]

    async def put_blob(self, run_id: str, value: Any) -> dict[str, Any]:
        """Store ``value`` (any JSON) and return its reference."""
        text = payloads.dumps(value)
        ref = payloads.make_ref(text)
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO blobs (id, run_id, bytes, content) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                ref["$blob"],
                run_id,
                ref["bytes"],
                text,
            )
        )
        return ref

    async def get_blob(self, ref: dict[str, Any] | str) -> Any:
        """The value a reference points to."""
        blob = ref["$blob"] if isinstance(ref, dict) else ref
        text = await self._run(lambda conn: conn.fetchval("SELECT content FROM blobs WHERE id = $1", blob))
        if text is None:
            raise LookupError(f"blob {blob} is not in the history database (purged?)")
        return json.loads(text)

    async def resolve(self, value: Any) -> Any:
        """``value`` with every blob reference (at any depth) replaced by what it points to."""
        if payloads.is_ref(value):
            return await self.get_blob(value)
        if isinstance(value, dict):
            return {k: await self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [await self.resolve(v) for v in value]
        return value

    # --- retention ------------------------------------------------------------------------------

    async def purge(self, older_than: timedelta, *, dry_run: bool = False) -> dict[str, int]:
        """Delete finished runs older than ``older_than`` with their steps, journal, blobs and audit rows."""
        cutoff = datetime.now().astimezone() - older_than

        async def q(conn: asyncpg.Connection) -> dict[str, int]:
            async with conn.transaction():
                ids = [
                    r["workflow_id"]
                    for r in await conn.fetch(
                        "SELECT workflow_id FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1", cutoff
                    )
                ]
                counts = {"runs": len(ids)}
                if dry_run:
                    return counts
                await conn.execute("SET LOCAL agent_tree.purge = 'on'")
                for table, column in (
                    ("steps", "run_id"),
                    ("tool_calls", "run_id"),
                    ("recorded_calls", "run_id"),
                    ("blobs", "run_id"),
                    ("audit_log", "run_id"),
                    ("runs", "workflow_id"),
                ):
                    status = await conn.execute(f"DELETE FROM {table} WHERE {column} = ANY($1::text[])", ids)
                    counts[table] = int(status.split()[-1])
                return counts

        return await self._run(q)


def _ts(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value or datetime.now().astimezone()
    return datetime.fromisoformat(str(value))


def _step(row: asyncpg.Record) -> Step:
    return {
        "ord": list(row["ord"]),
        "type": row["type"],
        "agent": row["agent"],
        "data": row["data"],
        "ts": row["created_at"].isoformat(),
    }
