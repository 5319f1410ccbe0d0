"""``agent-tree runs`` without a database: option parsing, cursors, the table and the JSON (issue 10 item 8)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from agent_tree_worker import listing
from agent_tree_worker.listing import RunsQuery, UsageError

from agent_tree.cli import main
from agent_tree.durations import format_duration

T0 = datetime(2026, 12, 2, 5, 0, 0, 123456, tzinfo=UTC)


def row(name: str, status: str = "completed", *, ns: str = "team-a", took: float | None = 95.0, **kw) -> dict:
    return {
        "workflow_id": f"agentrun.{ns}.{name}.u1",
        "namespace": ns,
        "name": name,
        "tree": "invoice",
        "status": status,
        "steps": 3,
        "token_usage": 1200,
        "started_at": T0,
        "finished_at": T0 + timedelta(seconds=took) if took is not None else None,
        **kw,
    }


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        ("running", "Running"),
        ("completed", "Succeeded"),
        ("failed", "Failed"),
        ("max_steps_reached", "Failed"),
        ("cancelled", "Cancelled"),
    ],
)
def test_history_status_maps_to_the_agentrun_phase(status: str, phase: str) -> None:
    assert listing.phase_of(status) == phase
    assert status in listing.parse_phases(phase.lower())


def test_phase_filter_accepts_several_and_rejects_others_naming_the_valid_values() -> None:
    assert listing.parse_phases("Failed,cancelled") == ("failed", "max_steps_reached", "cancelled")
    with pytest.raises(UsageError) as bad:
        listing.parse_phases("Done")
    assert str(bad.value).startswith("--phase 'Done': expected one of Running, Succeeded, Failed, Cancelled")
    with pytest.raises(UsageError, match="Pending runs are not in the history database"):
        listing.parse_phases("Pending")


@pytest.mark.parametrize("text", ["0", "-3", "1001", "ten", ""])
def test_limit_must_be_1_to_1000(text: str) -> None:
    with pytest.raises(UsageError, match=r"^--limit .*: expected a whole number from 1 to 1000$"):
        listing.parse_limit(text)


def test_since_durations() -> None:
    assert listing.parse_duration("90m", "--since") == timedelta(minutes=90)
    assert listing.parse_duration("2w", "--since") == timedelta(weeks=2)
    with pytest.raises(UsageError, match=r"^--since 'banana': expected a number and a unit \(s, m, h, d, w\)"):
        listing.parse_duration("banana", "--since")


def test_cursor_round_trip_keeps_microseconds_and_rejects_garbage() -> None:
    cursor = listing.encode_cursor(row("a"))
    assert listing.decode_cursor(cursor) == (T0, "agentrun.team-a.a.u1")
    for bad in ("banana", "", listing.encode_cursor({"started_at": datetime(2026, 1, 1), "workflow_id": "x"})):
        with pytest.raises(
            UsageError, match=r"--cursor .*: not a cursor of this listing \(the 'more:' line of 'agent-tree runs'"
        ):
            listing.decode_cursor(bad)


def test_query_defaults_and_empty_names() -> None:
    q = RunsQuery.parse()
    assert (q.namespace, q.statuses, q.since, q.limit, q.before) == (None, None, None, 50, None)
    with pytest.raises(UsageError, match="--namespace ''"):
        RunsQuery.parse(namespace="")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "0s"), (4, "4s"), (92, "1m32s"), (3600 * 2 + 180, "2h3m"), (86400 * 3 + 3600 * 4, "3d4h")],
)
def test_duration_column_matches_kubectl_get_agentruns(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_table_columns_with_and_without_namespace() -> None:
    rows = [row("why-4821"), row("still-going", "running", took=None), row("boom", "max_steps_reached", ns="b")]
    lines = listing.render_table(rows, show_namespace=True)
    assert lines[0].split() == ["NAMESPACE", "NAME", "TREE", "PHASE", "STEPS", "TOKENS", "STARTED", "DURATION"]
    assert lines[1].split() == [
        "team-a",
        "why-4821",
        "invoice",
        "Succeeded",
        "3",
        "1200",
        "2026-12-02T05:00:00Z",
        "1m35s",
    ]
    assert lines[2].split()[3:] == ["Running", "3", "1200", "2026-12-02T05:00:00Z", "-"]  # no duration until it ends
    assert lines[3].split()[:4] == ["b", "boom", "invoice", "Failed"]
    # columns line up: every PHASE cell starts where the header's does
    start = lines[0].index("PHASE")
    assert all(line[start:].split()[0] in ("PHASE", "Succeeded", "Running", "Failed") for line in lines)
    narrow = listing.render_table(rows[:1], show_namespace=False)
    assert narrow[0].split()[0] == "NAME" and narrow[1].split()[0] == "why-4821"


def test_json_has_phase_duration_and_the_next_cursor() -> None:
    doc = json.loads(listing.to_json([row("a"), row("b", "running", took=None)], "CUR"))
    assert doc["next_cursor"] == "CUR"
    assert [(r["name"], r["phase"], r["duration_seconds"]) for r in doc["runs"]] == [
        ("a", "Succeeded", 95.0),
        ("b", "Running", None),
    ]
    assert doc["runs"][0]["started_at"] == T0.isoformat()


@pytest.mark.parametrize(
    ("argv", "flag", "accepts"),
    [
        (["--limit", "0"], "--limit '0'", "from 1 to 1000"),
        (["--since", "banana"], "--since 'banana'", "(s, m, h, d, w)"),
        (["--phase", "Done"], "--phase 'Done'", "Running, Succeeded, Failed, Cancelled"),
        (["--cursor", "nope"], "--cursor 'nope'", "the 'more:' line"),
    ],
)
def test_bad_option_is_one_line_naming_the_flag_exit_2(
    argv: list[str], flag: str, accepts: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENT_TREE_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["runs", *argv]) == 2  # checked before any database is needed
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"agent-tree runs: {flag}: ") and accepts in err, err
