"""The API's read-only view of the history in PostgreSQL (asyncpg): runs, and steps a page at a time.

The workers write the history; the API only reads it. The runs listing is the CLI's
(:mod:`agent_tree.runs_query`); steps are keyset-paginated on ``ord`` (primary key ``(run_id, ord)``),
so a page costs an index range scan however long the run.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import asyncpg

from agent_tree.contract import Step
from agent_tree.runs_query import list_runs_sql

RUN_COLUMNS = (
    "workflow_id, namespace, name, uid, tree, tree_revision, root_agent, input, context, status, answer, result,"
    " steps, token_usage, started_at, finished_at, forked_from, fork_step"
)


async def _init(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class HistoryUnavailable(Exception):
    """No history database is configured, or it cannot be reached."""


class History:
    """A pool on ``AGENT_TREE_DATABASE_URL`` (None: every read raises :class:`HistoryUnavailable`)."""

    def __init__(self, url: str | None, *, max_size: int = 10) -> None:
        self.url = url
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        if not self.url:
            raise HistoryUnavailable("no history database: AGENT_TREE_DATABASE_URL is not set")
        async with self._lock:
            if self._pool is None:
                try:
                    self._pool = await asyncpg.create_pool(
                        self.url, min_size=0, max_size=self.max_size, init=_init, timeout=5, command_timeout=30
                    )
                except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                    raise HistoryUnavailable(f"the history database is not reachable ({type(exc).__name__})") from exc
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _fetch(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        pool = await self.pool()
        try:
            return await pool.fetch(sql, *params)
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise HistoryUnavailable(f"the history database is not reachable ({type(exc).__name__})") from exc

    async def list_runs(self, **filters: Any) -> list[dict[str, Any]]:
        """Runs newest first; ``filters`` as :func:`agent_tree.runs_query.list_runs_sql` takes them."""
        sql, params = list_runs_sql(**filters)
        return [dict(r) for r in await self._fetch(sql, *params)]

    async def latest_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The latest run (by start) of AgentRun ``name``: its current incarnation, or its last one if deleted."""
        rows = await self._fetch(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE namespace = $1 AND name = $2 ORDER BY started_at DESC LIMIT 1",
            namespace,
            name,
        )
        return dict(rows[0]) if rows else None

    async def run(self, workflow_id: str) -> dict[str, Any] | None:
        rows = await self._fetch(f"SELECT {RUN_COLUMNS} FROM runs WHERE workflow_id = $1", workflow_id)
        return dict(rows[0]) if rows else None

    async def count_steps(self, workflow_id: str) -> int:
        """How many steps the run recorded (what ``spec.forkFrom.step`` and the steps' ``number`` count)."""
        rows = await self._fetch("SELECT count(*) AS n FROM steps WHERE run_id = $1", workflow_id)
        return int(rows[0]["n"])

    async def tail(self, workflow_id: str) -> tuple[int, list[int] | None]:
        """(how many steps the run has recorded, the ord of the last one or None): one primary-key range read."""
        rows = await self._fetch("SELECT count(*) AS n, max(ord) AS last FROM steps WHERE run_id = $1", workflow_id)
        last = rows[0]["last"] if rows else None
        return (int(rows[0]["n"]) if rows else 0), (list(last) if last is not None else None)

    async def steps(self, workflow_id: str, after: list[int] | None = None, limit: int = 1000) -> list[Step]:
        """Up to ``limit`` steps after ``after`` (None: from the first), in order."""
        rows = await self._fetch(
            """SELECT ord, type, agent, data, created_at FROM steps
               WHERE run_id = $1 AND ($2::integer[] IS NULL OR ord > $2) ORDER BY ord LIMIT $3""",
            workflow_id,
            after,
            limit,
        )
        return [
            {
                "ord": list(r["ord"]),
                "type": r["type"],
                "agent": r["agent"],
                "data": r["data"],
                "ts": _iso(r["created_at"]),
            }
            for r in rows
        ]


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""
