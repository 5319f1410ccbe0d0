"""Live model tokens: a model agent's worker (a process) streams the model call and publishes the
text to the run's Redis stream as ``model_delta`` entries while the call is still going; PostgreSQL
keeps the final message only; ``agent-tree logs -f`` shows the text as it comes."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from agent_tree_worker import reader
from agent_tree_worker.store import HistoryStore
from agent_tree_worker.stream import StepStream
from durable_support import API_KEY, WorkerProcess, run_durable, tree_spec, unique, wait_for, worker_env
from fake_openai import FakeOpenAI
from temporalio.client import Client

from agent_tree import naming
from agent_tree.contract import MODEL_DELTA, MODEL_USAGE, RUN_END, decode_step, is_transient, run_input
from agent_tree.contract.temporal import run_workflow_id, start_run

pytestmark = pytest.mark.integration

ANSWER = (
    "Invoice #4821 was rejected because the purchase order number is missing; "
    "resubmit it with PO 7731 and it will be paid on the next run."
)


def live_tree(server: FakeOpenAI, case: str) -> Any:
    server.scripts[f"tok-router-{case}"] = [{"content": "Billing.", "tool_calls": [("transfer_to_writer", {})]}]
    server.scripts[f"tok-writer-{case}"] = [{"content": ANSWER, "usage": (40, 30)}]
    model = {"baseUrl": server.base_url}
    return tree_spec(
        {
            "root": "desk",
            "agents": [
                {"name": "desk", "children": ["writer"], "model": {**model, "name": f"tok-router-{case}"}},
                {
                    "name": "writer",
                    "description": "Writes the answer.",
                    "model": {**model, "name": f"tok-writer-{case}"},
                },
            ],
        }
    )


class StreamWatcher:
    """A direct XREAD reader of the run's stream: every entry, decoded, with when it arrived."""

    def __init__(self, redis_url: str, workflow_id: str) -> None:
        self.redis = aioredis.Redis.from_url(redis_url)
        self.key = naming.stream_key(workflow_id)
        self.entries: list[tuple[float, dict[str, Any]]] = []

    async def run(self) -> None:
        last = "0"
        while True:
            reply = await self.redis.xread({self.key: last}, block=200, count=500)
            for _key, rows in reply or []:
                for entry_id, fields in rows:
                    last = entry_id.decode()
                    entry = decode_step(fields)
                    self.entries.append((time.time(), entry))
                    if entry["type"] == RUN_END:
                        return

    def of(self, kind: str, agent: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, e in self.entries if e["type"] == kind and (e.get("agent") == agent)]


async def test_model_text_streams_live_before_the_call_returns_and_history_keeps_the_final_message(
    client: Client,
    temporal_address: str,
    database_url: str,
    redis_url: str,
    store: HistoryStore,
    fake_openai: FakeOpenAI,
    test_dir: Path,
) -> None:
    fake_openai.chunk_delay, fake_openai.chunk_chars = 0.05, 4  # ~32 chunks over ~1.6 s: a slow model
    namespace = unique("tok-live")
    spec = live_tree(fake_openai, "live")
    env = worker_env(temporal_address, database_url, redis_url, AGENT_TREE_MODEL_API_KEY=API_KEY)
    workers = [WorkerProcess(namespace, "ap", agent, env, test_dir).start() for agent in ("desk", "writer")]
    try:
        for w in workers:
            await w.ready()
        inp = run_input(namespace, "ap", spec, name=unique("run"), uid=uuid.uuid4().hex[:8], input="Why #4821?")
        watcher = StreamWatcher(redis_url, run_workflow_id(inp))
        watching = asyncio.create_task(watcher.run())
        logs_out = io.StringIO()
        logs_stream = StepStream(redis_url)
        logs = asyncio.create_task(
            reader.follow_logs(run_workflow_id(inp), store, logs_stream, follow=True, out=logs_out)
        )
        handle = await start_run(client, inp)

        async def usage_in_postgres() -> float | None:
            steps = await store.steps(handle.id)
            return time.time() if any(s["type"] == MODEL_USAGE and s["agent"] == "writer" for s in steps) else None

        usage_seen = await wait_for(usage_in_postgres, "the writer's model_usage step in PostgreSQL", 90, 0.02)
        result = await asyncio.wait_for(handle.result(), 90)
        await asyncio.wait_for(watching, 30)
        assert await asyncio.wait_for(logs, 30) == "completed"
        await logs_stream.close()
        await watcher.redis.aclose()
    finally:
        for w in workers:
            w.stop()
    assert result["status"] == "completed" and result["answer"] == ANSWER, result

    deltas = watcher.of(MODEL_DELTA, "writer")
    assert "".join(e["data"]["text"] for _, e in deltas) == ANSWER
    assert [e["data"]["seq"] for _, e in deltas] == list(range(len(deltas)))
    assert len({e["data"]["call"] for _, e in deltas}) == 1 and all(is_transient(e) for _, e in deltas)
    assert all("ord" not in e and e["data"]["model"] == "tok-writer-live" for _, e in deltas)
    # Live: the first text arrived while the model was still answering, and before the call's
    # model_usage step reached PostgreSQL or the stream.
    [streamed] = [s for s in fake_openai.streamed if s["body"]["model"] == "tok-writer-live"]
    first_delta = deltas[0][0]
    assert first_delta < streamed["done"] - 0.5, (first_delta, streamed)
    assert first_delta < usage_seen
    stream_types = [(e["type"], e.get("agent")) for _, e in watcher.entries]
    assert stream_types.index((MODEL_DELTA, "writer")) < stream_types.index((MODEL_USAGE, "writer"))
    # The routing call of a model supervisor (the plan activity) does not stream (docs/api.md).
    assert watcher.of(MODEL_DELTA, "desk") == []
    # PostgreSQL has the final message and no live text.
    steps = await store.steps(handle.id)
    assert MODEL_DELTA not in {s["type"] for s in steps}
    pool = await store._get_pool()
    assert await pool.fetchval("SELECT count(*) FROM steps WHERE type = $1", MODEL_DELTA) == 0
    # logs -f printed the text on one line per call, ended before the next step.
    out = logs_out.getvalue()
    assert f"   ~ writer: {ANSWER}\n" in out and "~ desk" not in out, out
    print(
        f"\nlive tokens: {len(deltas)} model_delta entries for {len(ANSWER)} chars; first delta "
        f"{streamed['done'] - first_delta:.2f}s before the model finished, "
        f"{usage_seen - first_delta:.2f}s before model_usage was in PostgreSQL"
    )


async def test_a_fast_stream_is_coalesced_into_few_entries(
    client: Client, database_url: str, redis_url: str, fake_openai: FakeOpenAI
) -> None:
    fake_openai.chunk_delay, fake_openai.chunk_chars = 0.0, 2  # 64 chunks as fast as the socket goes
    namespace = unique("tok-fast")
    handle, result = await run_durable(
        client,
        live_tree(fake_openai, "fast"),
        namespace=namespace,
        tree="ap",
        user_input="Why?",
        database_url=database_url,
        redis_url=redis_url,
    )
    assert result["answer"] == ANSWER
    r = aioredis.Redis.from_url(redis_url)
    rows = await r.xrange(naming.stream_key(handle.id))
    await r.aclose()
    deltas = [e for e in (decode_step(f) for _, f in rows) if e["type"] == MODEL_DELTA and e["agent"] == "writer"]
    assert "".join(e["data"]["text"] for e in deltas) == ANSWER
    chunks = -(-len(ANSWER) // 2)
    assert 1 <= len(deltas) < chunks / 4, (len(deltas), chunks)
    print(f"\ncoalescing: {chunks} content chunks -> {len(deltas)} model_delta entries")
