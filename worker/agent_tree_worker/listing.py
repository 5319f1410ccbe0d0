"""``agent-tree runs``: past and current runs from PostgreSQL, newest first, a page at a time.

The options, the cursor and the query are :mod:`agent_tree.runs_query` (the REST API lists runs with
the same ones); this module fetches a page and renders it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent_tree.durations import format_duration
from agent_tree.runs_query import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    PHASES,
    TABLE_HEADER,
    RunsQuery,
    UsageError,
    align_columns,
    decode_cursor,
    encode_cursor,
    parse_duration,
    parse_limit,
    parse_phases,
    phase_of,
)

if TYPE_CHECKING:  # the parser imports this module; asyncpg loads only when a command runs
    from agent_tree_worker.store import HistoryStore

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "PHASES",
    "RunsQuery",
    "UsageError",
    "decode_cursor",
    "encode_cursor",
    "fetch_page",
    "parse_duration",
    "parse_limit",
    "parse_phases",
    "phase_of",
    "render_table",
    "to_json",
]


async def fetch_page(
    store: HistoryStore, query: RunsQuery, now: datetime | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of runs and the cursor of the next page (None on the last page)."""
    since = (now or datetime.now(UTC)) - query.since if query.since else None
    rows = await store.list_runs(
        namespace=query.namespace,
        tree=query.tree,
        statuses=query.statuses,
        since=since,
        before=query.before,
        limit=query.limit + 1,  # one more than shown: tells whether another page exists
    )
    page = rows[: query.limit]
    return page, (encode_cursor(page[-1]) if len(rows) > query.limit else None)


def _duration(row: dict[str, Any]) -> float | None:
    if row.get("finished_at") is None:
        return None
    return (row["finished_at"] - row["started_at"]).total_seconds()


def render_table(rows: list[dict[str, Any]], *, show_namespace: bool) -> list[str]:
    """kubectl-like columns: [NAMESPACE] NAME TREE PHASE STEPS TOKENS STARTED DURATION."""
    table = [(["NAMESPACE"] if show_namespace else []) + list(TABLE_HEADER)]
    for r in rows:
        took = _duration(r)
        table.append(
            ([r["namespace"]] if show_namespace else [])
            + [
                r["name"],
                r["tree"],
                phase_of(r["status"]),
                str(r["steps"]),
                str(r["token_usage"]),
                r["started_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                format_duration(took) if took is not None else "-",
            ]
        )
    return align_columns(table)


def to_json(rows: list[dict[str, Any]], next_cursor: str | None) -> str:
    """``{"runs": [...], "next_cursor": ...}``; each run with its history columns, phase and duration."""
    runs = []
    for r in rows:
        item = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()}
        item["phase"] = phase_of(r["status"])
        item["duration_seconds"] = _duration(r)
        runs.append(item)
    return json.dumps({"runs": runs, "next_cursor": next_cursor}, indent=2, default=str)
