"""The operator's read-only view of the run history in PostgreSQL (asyncpg): what a fork needs.

The operator resolves ``spec.forkFrom`` from the history, not from Kubernetes, so a run can be
retried or forked after its AgentRun was deleted. It only reads (the workers write the history).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg


async def _init(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class History:
    """A small pool on ``AGENT_TREE_DATABASE_URL`` (None: no history, forks cannot be resolved)."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def _conn_pool(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.url, min_size=0, max_size=2, init=_init, timeout=5, command_timeout=30
                )
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def latest_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The latest run (by start time) of AgentRun ``name`` in ``namespace``."""
        pool = await self._conn_pool()
        row = await pool.fetchrow(
            """SELECT workflow_id, name, tree, tree_revision, input, context, status FROM runs
               WHERE namespace = $1 AND name = $2 ORDER BY started_at DESC LIMIT 1""",
            namespace,
            name,
        )
        return dict(row) if row else None

    async def steps(self, workflow_id: str) -> list[dict[str, Any]]:
        """The run's steps in ord order: ord, type and the status a retry looks for."""
        pool = await self._conn_pool()
        rows = await pool.fetch(
            "SELECT ord, type, data->>'status' AS status FROM steps WHERE run_id = $1 ORDER BY ord", workflow_id
        )
        return [{"ord": list(r["ord"]), "type": r["type"], "data": {"status": r["status"]}} for r in rows]

    async def tree_spec(self, revision: str) -> dict[str, Any] | None:
        pool = await self._conn_pool()
        return await pool.fetchval("SELECT spec FROM tree_specs WHERE revision = $1", revision)

    async def fork_source(
        self, namespace: str, name: str
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]], dict[str, Any] | None]:
        """(latest run row of ``name``, its steps, its pinned tree spec): what ``plan_fork`` decides on."""
        source = await self.latest_run(namespace, name)
        if source is None:
            return None, [], None
        return source, await self.steps(source["workflow_id"]), await self.tree_spec(source["tree_revision"])
