"""``agent-tree runs``: past and current runs from PostgreSQL, newest first, a page at a time.

The history database holds every run a worker started, also after its AgentRun was deleted. A run's
``status`` there is the workflow's result (``running`` until it ends); the listing shows it as the
AgentRun phase it maps to (:data:`PHASES`). Pages are keyset-paginated on (``started_at``,
``workflow_id``): the cursor printed under a full page names the last run shown, so the next page
starts right after it whatever was inserted meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from agent_tree.durations import format_duration

if TYPE_CHECKING:  # the parser imports this module; asyncpg loads only when a command runs
    from agent_tree_worker.store import HistoryStore

# AgentRun phase -> the history statuses it covers. Pending runs have no row yet (the worker writes
# the row when the workflow starts); AwaitingApproval is not recorded in the history database.
PHASES: dict[str, tuple[str, ...]] = {
    "Running": ("running",),
    "Succeeded": ("completed",),
    "Failed": ("failed", "max_steps_reached"),
    "Cancelled": ("cancelled",),
}
DEFAULT_LIMIT, MAX_LIMIT = 50, 1000
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class UsageError(ValueError):
    """A bad option value; the message names the option and what it accepts."""


def phase_of(status: str) -> str:
    """The AgentRun phase a history status maps to (an unknown status is shown as it is)."""
    return next((phase for phase, statuses in PHASES.items() if status in statuses), status)


def parse_duration(text: str, flag: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w``; anything else is a :class:`UsageError` naming ``flag``."""
    match = _DURATION.match(text.strip())
    if not match:
        raise UsageError(f"{flag} {text!r}: expected a number and a unit (s, m, h, d, w), e.g. 90m or 30d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_phases(text: str) -> tuple[str, ...]:
    """``Failed`` or ``failed,cancelled`` -> the history statuses of those phases."""
    by_name = {p.lower(): p for p in PHASES}
    statuses: list[str] = []
    for part in text.split(","):
        phase = by_name.get(part.strip().lower())
        if phase is None:
            raise UsageError(
                f"--phase {text!r}: expected one of {', '.join(PHASES)} (comma-separated for several); "
                "Pending runs are not in the history database yet"
            )
        statuses.extend(s for s in PHASES[phase] if s not in statuses)
    return tuple(statuses)


def parse_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise UsageError(f"--limit {text!r}: expected a whole number from 1 to {MAX_LIMIT}")
    return value


def encode_cursor(row: dict[str, Any]) -> str:
    """The cursor of the page that follows ``row`` (the last run of a page)."""
    raw = json.dumps([row["started_at"].isoformat(), row["workflow_id"]], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        started, workflow_id = json.loads(raw)
        when = datetime.fromisoformat(started)
        if when.tzinfo is None or not isinstance(workflow_id, str):
            raise ValueError
        return when, workflow_id
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise UsageError(f"--cursor {text!r}: not a cursor printed by 'agent-tree runs' (the 'more:' line)") from None


@dataclass(frozen=True)
class RunsQuery:
    """A parsed ``agent-tree runs`` command line."""

    namespace: str | None = None
    tree: str | None = None
    statuses: tuple[str, ...] | None = None
    since: timedelta | None = None
    limit: int = DEFAULT_LIMIT
    before: tuple[datetime, str] | None = None

    @classmethod
    def parse(
        cls,
        *,
        namespace: str | None = None,
        tree: str | None = None,
        phase: str | None = None,
        since: str | None = None,
        limit: str | None = None,
        cursor: str | None = None,
    ) -> RunsQuery:
        """Validate the raw option values.

        Raises:
            UsageError: an option value that cannot be used; the message names the option.
        """
        if namespace is not None and not namespace.strip():
            raise UsageError("--namespace '': expected a namespace name (or -A for all namespaces)")
        if tree is not None and not tree.strip():
            raise UsageError("--tree '': expected an AgentTree name")
        return cls(
            namespace=namespace,
            tree=tree,
            statuses=parse_phases(phase) if phase is not None else None,
            since=parse_duration(since, "--since") if since is not None else None,
            limit=parse_limit(limit) if limit is not None else DEFAULT_LIMIT,
            before=decode_cursor(cursor) if cursor is not None else None,
        )


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
    header = ["NAME", "TREE", "PHASE", "STEPS", "TOKENS", "STARTED", "DURATION"]
    table = [(["NAMESPACE"] if show_namespace else []) + header]
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
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return ["   ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in table]


def to_json(rows: list[dict[str, Any]], next_cursor: str | None) -> str:
    """``{"runs": [...], "next_cursor": ...}``; each run with its history columns, phase and duration."""
    runs = []
    for r in rows:
        item = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()}
        item["phase"] = phase_of(r["status"])
        item["duration_seconds"] = _duration(r)
        runs.append(item)
    return json.dumps({"runs": runs, "next_cursor": next_cursor}, indent=2, default=str)
