"""Services that answer but cannot be used as configured: one line, exit 3, the variable to fix
(issue 10 item 12; the unreachable cases are in tests/unit/test_cli_unavailable.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from services import Postgres

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def agent_tree(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "agent-tree"), *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )


def one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    return proc.stderr.strip()


def test_database_without_schema_says_to_migrate(private_postgres: Postgres) -> None:
    env = {"AGENT_TREE_DATABASE_URL": private_postgres.url}  # a fresh database: never migrated
    port = private_postgres.port
    for args in (["runs"], ["history", "ns/run"]):
        line = one_line(agent_tree(*args, env=env))
        assert line == (
            f"agent-tree: cannot use PostgreSQL at 127.0.0.1:{port} (AGENT_TREE_DATABASE_URL): no agent-tree "
            'history schema (relation "runs" does not exist); run: agent-tree db migrate'
        )
    assert agent_tree("db", "migrate", env=env).returncode == 0
    assert agent_tree("runs", env=env).returncode == 0  # ...and after that it works


def test_missing_database(private_postgres: Postgres) -> None:
    url = private_postgres.url.rsplit("/", 1)[0] + "/no_such_db"
    line = one_line(agent_tree("runs", env={"DATABASE_URL": url}))
    assert line.startswith(f"agent-tree: cannot use PostgreSQL at 127.0.0.1:{private_postgres.port} (DATABASE_URL): ")
    assert 'database "no_such_db" does not exist' in line


def test_unknown_temporal_namespace(temporal_address: str) -> None:
    proc = agent_tree(
        "submit",
        "-f",
        "examples/invoice/agenttree.yaml",
        "-i",
        "hi",
        env={"AGENT_TREE_TEMPORAL_ADDRESS": temporal_address, "AGENT_TREE_TEMPORAL_NAMESPACE": "no-such-ns"},
    )
    line = one_line(proc)
    assert line.startswith(
        f"agent-tree: cannot use Temporal at {temporal_address} (AGENT_TREE_TEMPORAL_NAMESPACE): "
        "no namespace 'no-such-ns'"
    ), line
