"""``agent-tree logs -f`` prints live model text (transient ``model_delta`` stream entries) as it
arrives, one line per model call, and still takes the steps from PostgreSQL."""

from __future__ import annotations

import io
import json
from typing import Any

from agent_tree_worker import reader

from agent_tree.contract import MODEL_USAGE, RUN_END, decode_step, encode_model_delta

WID = "agentrun.team.why.u-1"
TS = "2026-12-02T08:00:00.000000+00:00"


def step(ord_: list[int], kind: str, **data: Any) -> dict[str, Any]:
    return {"ord": ord_, "type": kind, "agent": "a", "data": {"type": kind, "agent": "a", **data}, "ts": TS}


def delta(call: str, seq: int, text: str) -> dict[str, Any]:
    return decode_step(encode_model_delta(agent="a", model="m", call=call, seq=seq, text=text, ts=TS))


class FakeStore:
    def __init__(self, steps: list[dict]) -> None:
        self.rows = list(steps)
        self.reads = 0

    async def steps(self, workflow_id: str, after: list[int] | None = None) -> list[dict]:
        self.reads += 1
        return [s for s in self.rows if after is None or s["ord"] > after]

    async def get_run(self, workflow_id: str) -> dict | None:
        return None


class FakeStream:
    """One batch of entries per XREAD; ``before[i]`` runs before batch ``i`` is handed out."""

    url = "redis://fake"

    def __init__(self, batches: list[list[dict]], before: dict[int, Any] | None = None) -> None:
        self.batches = batches
        self.before = before or {}
        self.served = 0

    async def follow(self, run_id: str, last_id: str = "0", block_ms: int = 1000):
        if self.served >= len(self.batches):
            return
        if self.served in self.before:
            self.before[self.served]()
        for i, entry in enumerate(self.batches[self.served]):
            yield f"{self.served}-{i}", entry
        self.served += 1


async def follow(store: FakeStore, stream: FakeStream, as_json: bool = False) -> list[str]:
    out = io.StringIO()
    status = await reader.follow_logs(WID, store, stream, follow=True, as_json=as_json, out=out, err=io.StringIO())
    assert status == "completed"
    return out.getvalue().splitlines()


async def test_model_text_is_printed_as_it_arrives_on_one_line_per_call():
    store = FakeStore([step([1], "agent_start", input="Why?")])
    usage = step([3], MODEL_USAGE, model="m", total_tokens=7)
    end = {"type": RUN_END, "agent": None, "data": {"status": "completed"}, "ord": [], "ts": ""}
    stream = FakeStream(
        [
            [delta("1", 0, "stale")],  # a call whose reply is already printed (ord 1): a late join skips it
            [delta("3", 0, "Hel"), delta("3", 1, "lo,\nworld")],
            [delta("3", 2, "!")],
            [usage, end],
        ],
        # The model_usage step reaches PostgreSQL only after the call's text was printed.
        before={3: lambda: store.rows.append(usage)},
    )
    lines = await follow(store, stream)
    assert lines[0] == reader.render(store.rows[0])
    assert lines[1] == "08:00:00.000   ~ a: Hello,"
    assert lines[2] == "    world!"
    assert lines[3] == reader.render(usage)
    assert len(lines) == 4 and "stale" not in "\n".join(lines)
    # Batches of model text only read nothing from PostgreSQL (nothing new is there).
    assert store.reads == 2  # the first read, and the one after the batch with the step


async def test_with_json_each_delta_is_one_json_line():
    store = FakeStore([])
    end = {"type": RUN_END, "agent": None, "data": {"status": "completed"}, "ord": [], "ts": ""}
    d0, d1 = delta("2", 0, "a"), delta("2", 1, "b")
    lines = await follow(store, FakeStream([[d0, d1], [end]]), as_json=True)
    assert [json.loads(line) for line in lines] == [d0, d1]


async def test_a_retried_call_starts_a_new_line():
    store = FakeStore([])
    end = {"type": RUN_END, "agent": None, "data": {"status": "completed"}, "ord": [], "ts": ""}
    lines = await follow(store, FakeStream([[delta("2", 0, "Hel"), delta("2", 0, "Hello")], [end]]))
    assert lines == ["08:00:00.000   ~ a: Hel", "08:00:00.000   ~ a: Hello"]
