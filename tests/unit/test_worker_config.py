"""Worker configuration, CLI wiring, migrations, payload and stream helpers (no services needed)."""

from __future__ import annotations

import argparse
from datetime import timedelta

import pytest
from agent_tree_worker import payloads
from agent_tree_worker.cli import parse_duration
from agent_tree_worker.config import WorkerConfig
from agent_tree_worker.migrate import load_migrations
from agent_tree_worker.stream import StepStream

from agent_tree.cli import build_parser
from agent_tree.contract import decode_step, encode_step, ord_str, parse_ord
from agent_tree.settings import SettingsError


def test_queue_from_option_tree_agent_or_env() -> None:
    assert WorkerConfig.load(task_queue="q1", env={}).task_queue == "q1"
    cfg = WorkerConfig.load(tree="team-a/invoice", agent="triage", env={})
    assert cfg.task_queue == "agent-tree.team-a.invoice.triage"
    env = {
        "AGENT_TREE_TREE": "ns/t",
        "AGENT_TREE_AGENT": "a",
        "AGENT_TREE_GRACEFUL_SHUTDOWN_SECONDS": "7",
        "TEMPORAL_ADDRESS": "t:1",
        "AGENT_TREE_PYTHONPATH": "/x:/y",
    }
    cfg = WorkerConfig.load(env=env)
    assert (cfg.task_queue, cfg.graceful_shutdown_seconds, cfg.settings.temporal_address) == (
        "agent-tree.ns.t.a",
        7,
        "t:1",
    )
    assert cfg.paths == ("/x", "/y")
    assert WorkerConfig.load(env={"AGENT_TREE_TASK_QUEUE": "q2", "AGENT_TREE_MIGRATE": "false"}).migrate is False


def test_config_errors_name_the_variable() -> None:
    with pytest.raises(SettingsError, match="AGENT_TREE_TASK_QUEUE"):
        WorkerConfig.load(env={})
    with pytest.raises(SettingsError, match="expected NAMESPACE/NAME"):
        WorkerConfig.load(tree="invoice", agent="a", env={})
    with pytest.raises(SettingsError, match="AGENT_TREE_GRACEFUL_SHUTDOWN_SECONDS"):
        WorkerConfig.load(task_queue="q", env={"AGENT_TREE_GRACEFUL_SHUTDOWN_SECONDS": "soon"})
    with pytest.raises(SettingsError, match=r"AGENT_TREE_STREAM_MAXLEN=0 is outside 1\.\.10000000"):
        WorkerConfig.load(task_queue="q", env={"AGENT_TREE_STREAM_MAXLEN": "0"})


def test_stream_maxlen_from_env_small_ones_trimmed_exactly() -> None:
    assert WorkerConfig.load(task_queue="q", env={}).stream_maxlen == 10_000
    assert WorkerConfig.load(task_queue="q", env={"AGENT_TREE_STREAM_MAXLEN": "5"}).stream_maxlen == 5
    # "MAXLEN ~ 5" would never trim a short stream (Redis trims whole nodes of 100 entries)
    assert StepStream("redis://x", maxlen=5).approximate is False
    assert StepStream("redis://x").approximate is True


def test_cli_registers_worker_commands() -> None:
    parser = build_parser()
    args = parser.parse_args(["worker", "--tree", "ns/t", "--agent", "a"])
    assert args.tree == "ns/t" and args.agent == "a"
    assert parser.parse_args(["db", "purge", "--older-than", "30d"]).older_than == timedelta(days=30)
    assert parser.parse_args(["logs", "-f", "ns/run"]).follow is True
    assert parser.parse_args(["history", "agentrun.ns.x.u", "--json"]).json is True
    assert parse_duration("12h") == timedelta(hours=12)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration("forever")


def test_migrations_are_versioned_and_ordered() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)
    assert migrations[0].version == 1
    first = migrations[0].sql
    for table in ("runs", "steps", "tool_calls", "blobs", "audit_log"):
        assert f"CREATE TABLE {table}" in first
    assert "append-only" in first and "pg_advisory" not in first


def test_payload_helpers() -> None:
    ref = payloads.make_ref("x" * 500)
    assert payloads.is_ref(ref) and ref["bytes"] == 500 and len(ref["preview"]) == payloads.PREVIEW_CHARS
    assert payloads.not_json_reason({1}) and payloads.not_json_reason({"a": [1]}) is None
    assert payloads.json_size({"a": "é"}) == len('{"a":"é"}'.encode())


def test_stream_entries_round_trip() -> None:
    step = {
        "ord": [3, 1, 2],
        "type": "tool_end",
        "agent": "a",
        "data": {"type": "tool_end", "output": "x" * 20000},
        "ts": "2026-01-01T00:00:00+00:00",
    }
    entry = encode_step(step)
    assert entry["ord"] == "3.1.2" and parse_ord(ord_str([3, 1, 2])) == [3, 1, 2]
    back = decode_step({k.encode(): v.encode() for k, v in entry.items()})
    assert back["ord"] == [3, 1, 2] and back["data"]["truncated"] is True and "output" not in back["data"]


class _Pipe:
    def __init__(self, calls: list) -> None:
        self.calls = calls

    def xadd(self, key: str, fields: dict, **kw: object) -> None:
        self.calls.append(kw)

    def expire(self, *args: object) -> None:
        pass

    async def execute(self) -> None:
        pass


class _Client:
    def __init__(self) -> None:
        self.calls: list = []

    def pipeline(self, transaction: bool) -> _Pipe:
        return _Pipe(self.calls)


async def test_publish_trims_to_maxlen() -> None:
    step = {"ord": [1], "type": "reasoning", "agent": "a", "data": {"type": "reasoning"}}
    for maxlen, approximate in ((3, False), (10_000, True)):
        stream = StepStream("redis://x", maxlen=maxlen)
        stream._client = client = _Client()  # type: ignore[assignment]
        assert await stream.publish("run", [step], final={"status": "completed", "answer": ""}) is True
        assert await stream.publish_transient("run", [{"type": "model_delta"}]) is True
        assert client.calls == [{"maxlen": maxlen, "approximate": approximate}] * 3


async def test_publish_never_raises_when_redis_is_down() -> None:
    stream = StepStream("redis://127.0.0.1:1/0")
    step = {"ord": [1], "type": "reasoning", "agent": "a", "data": {"type": "reasoning"}}
    assert await stream.publish("run", [step]) is False
    assert await stream.publish("run", [step]) is False  # backing off: no second connection attempt
    await stream.close()
    assert await StepStream(None).publish("run", [step]) is False
