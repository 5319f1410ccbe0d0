"""Fuzzing a real worker process (docs/reliability.md, "Fuzzing"): ``agent-tree worker`` serves a model
agent whose endpoint (fake_openai, streaming) answers generated replies and whose tool returns generated
values (text with NUL or lone surrogates, 300 KB, nested 5000 deep, bytes, NaN, a set, an object, a big
integer, an exception). Every run ends - completed, or failed with the cause - within its deadline (no
stuck workflow), its tool call is one tool_end step (ok, or an error naming why), and the history holds
the run's end.

Reduced in the normal test run; ``AGENT_TREE_FUZZ_EXAMPLES=1000 pytest -m fuzz tests/integration`` runs
a 100-run sample (one run per ten examples; 12 in the reduced run)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from agent_tree_worker.store import HistoryStore
from durable_support import API_KEY, WorkerProcess, tree_spec, unique, worker_env
from fake_openai import FakeOpenAI
from fuzz_tools import KINDS
from hypothesis import strategies as st
from temporalio.client import Client

from agent_tree import naming
from agent_tree.contract import run_input
from agent_tree.contract.temporal import start_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from fuzz_manifests import collect, examples

pytestmark = [pytest.mark.integration, pytest.mark.fuzz]
REPLIES = ["All good.", "a\x00b", "c\ud800d", "z" * 300_000, "[" * 3000, "", '{"status": "failed", "summary": 5}']
cases = st.tuples(
    st.sampled_from([*sorted(KINDS), "raise", "unknown-kind"]),
    st.integers(0, 5),
    st.sampled_from(REPLIES),
    st.sampled_from(["{", "[1]", None]),  # arguments that are not an object, or None: the generated ones
)


def script(drawn: list[tuple[str, int, str, str | None]]):
    def reply(request: dict[str, Any]) -> dict[str, Any]:
        question = next(m["content"] for m in request["messages"] if m["role"] == "user")
        kind, n, final, bad_args = drawn[int(question.split("#")[1])]
        if any(m["role"] == "tool" for m in request["messages"]):
            return {"content": final}
        calls: list[tuple[str, Any]] = [("generated", {"kind": kind, "n": n})]
        if bad_args is not None:
            calls.append(("generated", bad_args))
        return {"content": "Let me look.", "tool_calls": calls}

    return reply


async def test_a_worker_process_ends_every_run_on_generated_replies_and_tool_results(
    client: Client, temporal_address: str, database_url: str, redis_url: str, store: HistoryStore, tmp_path: Path
) -> None:
    drawn = collect(cases, max(8, examples(120) // 10))
    namespace, tree = unique("fz-wp"), "fuzz"
    # Streamed in 4 KB chunks: a 300 KB reply in 4-character chunks outlasts the model call's 150 s
    # start-to-close timeout on a loaded 2-core machine (see docs/reliability.md, "Fuzzing").
    with FakeOpenAI({"fz-clerk": [script(drawn)] * 3}, chunk_chars=4096) as fake:
        spec = tree_spec(
            {
                "root": "desk",
                "agents": [
                    {"name": "desk", "children": ["clerk"]},
                    {
                        "name": "clerk",
                        "model": {"name": "fz-clerk", "baseUrl": fake.base_url, "maxTurns": 3},
                        "tools": [{"name": "generated", "entrypoint": "fuzz_tools:generated", "timeoutSeconds": 20}],
                    },
                ],
            }
        )
        env = worker_env(temporal_address, database_url, redis_url, AGENT_TREE_MODEL_API_KEY=API_KEY)
        workers = [WorkerProcess(namespace, tree, agent, env, tmp_path).start() for agent in ("desk", "clerk")]
        try:
            for worker in workers:
                await worker.ready()
            handles = []
            for i in range(len(drawn)):
                inp = run_input(namespace, tree, spec, name=f"case-{i}", uid=uuid.uuid4().hex[:8], input=f"case #{i}")
                handles.append(await start_run(client, inp))
            results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 600)
        finally:
            for worker in workers:
                worker.stop()
        log = workers[1].log.read_text(errors="replace")
    outcomes, problems = Counter(), []
    for (kind, n, final, bad_args), handle, result in zip(drawn, handles, results, strict=True):
        outcomes[(kind, result["status"])] += 1
        steps = await store.steps(handle.id)
        ends = [s["data"] for s in steps if s["type"] == "tool_end"]
        row = await store.get_run(handle.id)
        case = f"{kind}/{n} reply={final[:20]!r} args={bad_args!r}"
        if result["status"] not in ("completed", "failed"):
            problems.append(f"{case}: ended {result['status']}")
        if not ends or any(e["status"] == "error" and not e.get("error") for e in ends):
            problems.append(f"{case}: tool_end steps {ends!r:.300}")
        if row is None or row["status"] != result["status"]:
            problems.append(
                f"{case}: the history's row {row and row['status']} is not the run's end {result['status']}"
            )
    print(f"\n{len(drawn)} runs through a worker process: {sorted(outcomes.items())}")
    assert "Traceback" not in log or "Completing activity as failed" in log, log[-3000:]
    assert problems == [], "\n".join(problems[:15])
    assert naming.task_queue(namespace, tree, "clerk") in log or "ready" in log
