"""Which runs to list, from the history database: filters, pages and the one SQL query.

Shared by ``agent-tree runs`` (worker CLI) and the REST API (``GET /api/v1/namespaces/{ns}/runs``),
which differ only in how they name an option in an error: ``--limit`` on the command line,
``limit`` in a query string (``flags``). A run's ``status`` in the history is the workflow's result
(``running`` until it ends); it is shown as the AgentRun phase it maps to (:data:`PHASES`). Pages
are keyset-paginated on (``started_at``, ``workflow_id``): a cursor names the last run of a page, so
the next page starts right after it whatever was inserted meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

# AgentRun phase -> the history statuses it covers. Pending runs have no row yet (the worker writes
# the row when the workflow starts); AwaitingApproval is not recorded in the history database.
PHASES: dict[str, tuple[str, ...]] = {
    "Running": ("running",),
    "Succeeded": ("completed",),
    "Failed": ("failed", "max_steps_reached"),
    "Cancelled": ("cancelled",),
}
DEFAULT_LIMIT, MAX_LIMIT = 50, 1000
CLI_FLAGS: Mapping[str, str] = {k: f"--{k}" for k in ("namespace", "tree", "phase", "since", "limit", "cursor")}
QUERY_FIELDS: Mapping[str, str] = {k: k for k in CLI_FLAGS}
COLUMNS = (
    "workflow_id, namespace, name, uid, tree, tree_revision, root_agent, status, answer, steps,"
    " token_usage, started_at, finished_at"
)
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class UsageError(ValueError):
    """A bad option value; the message names the option (or query field) and what it accepts."""


TABLE_HEADER = ("NAME", "TREE", "PHASE", "STEPS", "TOKENS", "STARTED", "DURATION")


def align_columns(table: list[list[str]]) -> list[str]:
    """``agent-tree runs``' table (header first) as kubectl-like lines: columns padded, 3 spaces apart."""
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return ["   ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in table]


def phase_of(status: str) -> str:
    """The AgentRun phase a history status maps to (an unknown status is shown as it is)."""
    return next((phase for phase, statuses in PHASES.items() if status in statuses), status)


def parse_duration(text: str, flag: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w``; anything else is a :class:`UsageError` naming ``flag``."""
    match = _DURATION.match(text.strip())
    if not match:
        raise UsageError(f"{flag} {text!r}: expected a number and a unit (s, m, h, d, w), e.g. 90m or 30d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_phases(text: str, flag: str = "--phase") -> tuple[str, ...]:
    """``Failed`` or ``failed,cancelled`` -> the history statuses of those phases."""
    by_name = {p.lower(): p for p in PHASES}
    statuses: list[str] = []
    for part in text.split(","):
        phase = by_name.get(part.strip().lower())
        if phase is None:
            raise UsageError(
                f"{flag} {text!r}: expected one of {', '.join(PHASES)} (comma-separated for several); "
                "Pending runs are not in the history database yet"
            )
        statuses.extend(s for s in PHASES[phase] if s not in statuses)
    return tuple(statuses)


def parse_limit(text: str, flag: str = "--limit", maximum: int = MAX_LIMIT) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= maximum:
        raise UsageError(f"{flag} {text!r}: expected a whole number from 1 to {maximum}")
    return value


def encode_cursor(row: Mapping[str, Any]) -> str:
    """The cursor of the page that follows ``row`` (the last run of a page)."""
    raw = json.dumps([row["started_at"].isoformat(), row["workflow_id"]], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str, flag: str = "--cursor") -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        started, workflow_id = json.loads(raw)
        when = datetime.fromisoformat(started)
        if when.tzinfo is None or not isinstance(workflow_id, str):
            raise ValueError
        return when, workflow_id
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise UsageError(
            f"{flag} {text!r}: not a cursor of this listing (the 'more:' line of 'agent-tree runs', "
            "or nextCursor of the API)"
        ) from None


@dataclass(frozen=True)
class RunsQuery:
    """A validated listing request."""

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
        flags: Mapping[str, str] = CLI_FLAGS,
    ) -> RunsQuery:
        """Validate the raw option values (``flags``: how each option is named in an error).

        Raises:
            UsageError: an option value that cannot be used; the message names the option.
        """
        if namespace is not None and not namespace.strip():
            raise UsageError(f"{flags['namespace']} '': expected a namespace name (or -A for all namespaces)")
        if tree is not None and not tree.strip():
            raise UsageError(f"{flags['tree']} '': expected an AgentTree name")
        return cls(
            namespace=namespace,
            tree=tree,
            statuses=parse_phases(phase, flags["phase"]) if phase is not None else None,
            since=parse_duration(since, flags["since"]) if since is not None else None,
            limit=parse_limit(limit, flags["limit"]) if limit is not None else DEFAULT_LIMIT,
            before=decode_cursor(cursor, flags["cursor"]) if cursor is not None else None,
        )


def list_runs_sql(
    *,
    namespace: str | None = None,
    tree: str | None = None,
    statuses: tuple[str, ...] | None = None,
    since: datetime | None = None,
    before: tuple[datetime, str] | None = None,
    limit: int = DEFAULT_LIMIT,
) -> tuple[str, list[Any]]:
    """The query (and its parameters) of runs newest first (``started_at``, then ``workflow_id``).

    Keyset pagination: ``before`` is the (``started_at``, ``workflow_id``) of the last run of the
    previous page; the next page starts strictly after it, so rows inserted meanwhile never shift a
    page (index ``runs_started_idx`` / ``runs_ns_started_idx``, migration 0002).
    """
    where, params = [], []
    for clause, value in (
        ("namespace = ${}", namespace),
        ("tree = ${}", tree),
        ("status = ANY(${}::text[])", list(statuses) if statuses is not None else None),
        ("started_at >= ${}", since),
        ("(started_at, workflow_id) < (${}, ${})", before),
    ):
        if value is None:
            continue  # only the filters given, so the planner sees a plain indexable condition
        values = list(value) if isinstance(value, tuple) else [value]
        where.append(clause.format(*range(len(params) + 1, len(params) + 1 + len(values))))
        params.extend(values)
    sql = (
        f"SELECT {COLUMNS} FROM runs"
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" ORDER BY started_at DESC, workflow_id DESC LIMIT ${len(params) + 1}"
    )
    return sql, [*params, limit]
