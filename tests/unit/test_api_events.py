"""A run's event stream in-process: framing, resume position, catch-up while a feed runs, order without
duplicates, heartbeats, the end, and a slow client being dropped instead of growing memory."""

from __future__ import annotations

import asyncio
from typing import Any

from agent_tree_api import feeds as feeds_module
from agent_tree_api import sse
from api_fakes import client, make_services

WF = "agentrun.team-a.live.u1"
ALICE = {"Authorization": "Bearer alice-token"}


def parse(raw: bytes) -> list[dict[str, Any]]:
    """SSE frames as dicts (id, event, data text, or comment / retry)."""
    frames = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        frame: dict[str, Any] = {}
        for line in block.split("\n"):
            key, _, value = line.partition(": ") if not line.startswith(":") else ("comment", "", line[1:].strip())
            frame[key] = value
        frames.append(frame)
    return frames


async def collect(gen, limit_s: float = 5.0) -> list[dict[str, Any]]:
    """Every frame until the generator ends by itself (it must, after ``end``)."""
    out: list[bytes] = []

    async def run() -> None:
        async for chunk in gen:
            out.append(chunk)

    await asyncio.wait_for(run(), limit_s)
    return parse(b"".join(out))


async def test_a_finished_run_gives_snapshot_history_then_end_and_resumes_after_a_position():
    svc = make_services()
    for i in range(1, 6):
        svc.history.add_step(WF, [i])
    svc.history.runs[WF] = {"status": "completed", "answer": "done"}
    frames = await collect(sse.events(svc, WF, None, {"name": "live"}, finished=True))
    assert frames[0] == {"retry": "2000"}
    assert frames[1]["event"] == "snapshot" and "id" not in frames[1]
    assert [f["id"] for f in frames[2:-1]] == ["1", "2", "3", "4", "5"]
    assert {f["event"] for f in frames[2:-1]} == {"reasoning"}  # named by the history's step type
    assert frames[-1]["event"] == "end" and '"status":"completed"' in frames[-1]["data"] and "id" not in frames[-1]
    resumed = await collect(sse.events(svc, WF, [3], {}, finished=True))
    assert [f["id"] for f in resumed if "id" in f] == ["4", "5"]


async def test_live_steps_arrive_once_in_order_across_a_catch_up_and_a_running_feed():
    svc = make_services()
    svc.history.add_step(WF, [1])
    first = sse.events(svc, WF, None, {}, finished=False)
    got_first = asyncio.create_task(collect(first))
    await asyncio.sleep(0.1)
    svc.history.add_step(WF, [2])
    svc.history.add_step(WF, [2, 1])
    await asyncio.sleep(0.1)
    # a second client joins the running feed at position 1: it reads 2 and 2.1 itself, then follows
    second = asyncio.create_task(collect(sse.events(svc, WF, [1], {}, finished=False)))
    await asyncio.sleep(0.1)
    svc.history.add_step(WF, [3])
    svc.history.runs[WF] = {"status": "completed", "answer": "a"}
    one, two = await got_first, await second
    assert [f["id"] for f in one if "id" in f] == ["1", "2", "2.1", "3"]
    assert [f["id"] for f in two if "id" in f] == ["2", "2.1", "3"]
    assert one[-1]["event"] == two[-1]["event"] == "end"
    assert svc.feeds.open_feeds == 0  # the feed stopped with its last listener
    assert svc.metrics.open_streams._value.get() == 0


async def test_silence_sends_a_heartbeat_comment():
    svc = make_services()  # heartbeat_seconds=0.2
    gen = sse.events(svc, WF, None, {}, finished=False)
    chunks = [await gen.__anext__() for _ in range(3)]
    await gen.aclose()
    assert chunks[2] == b": keep-alive\n\n"


async def test_a_client_that_falls_behind_is_told_to_reconnect(monkeypatch):
    monkeypatch.setattr(feeds_module, "QUEUE_MAX", 3)
    svc = make_services()
    sub = svc.feeds.subscribe(WF, None)
    feed = svc.feeds._feeds[WF]
    for i in range(1, 6):
        feed.broadcast("step", {"ord": [i]})
    kinds = [sub.queue.get_nowait()[0] for _ in range(sub.queue.qsize())]
    svc.feeds.unsubscribe(sub)
    assert kinds == ["step", "step", "step", "drop"]


async def test_a_client_that_reconnects_while_the_feed_it_left_is_being_cancelled_gets_a_live_feed():
    svc = make_services()
    svc.history.add_step(WF, [1])
    first = svc.feeds.subscribe(WF, None)
    assert (await asyncio.wait_for(first.queue.get(), 2))[0] == "step"
    svc.feeds.unsubscribe(first)  # its last listener left: the feed is cancelled, not yet done
    # ... and the client is back before the cancellation ran (a reconnect handled in between)
    again = svc.feeds.subscribe(WF, [1])
    svc.history.add_step(WF, [2])
    svc.history.runs[WF] = {"status": "completed", "answer": "a"}
    kind, payload = await asyncio.wait_for(again.queue.get(), 2)  # a reader is there for it
    assert kind == "step" and payload.ord == [2]
    assert (await asyncio.wait_for(again.queue.get(), 2))[0] == "end"
    svc.feeds.unsubscribe(again)


async def test_the_http_stream_has_the_headers_proxies_need():
    svc = make_services()
    svc.history.runs[WF] = {
        "workflow_id": WF, "namespace": "team-a", "name": "live", "uid": "u1", "status": "completed",
        "steps": 1, "answer": "x", "started_at": None, "finished_at": None,
    }  # fmt: skip
    svc.history.add_step(WF, [1])
    async with client(svc) as http:
        r = await http.get("/api/v1/namespaces/team-a/runs/live/events", headers={**ALICE, "Last-Event-ID": "0"})
        bad = await http.get("/api/v1/namespaces/team-a/runs/live/events", headers={**ALICE, "Last-Event-ID": "x.y"})
        bad_since = await http.get("/api/v1/namespaces/team-a/runs/live/events?since=a", headers=ALICE)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-accel-buffering"] == "no" and r.headers["cache-control"] == "no-cache"
    assert [f.get("event") for f in parse(r.content)] == [None, "snapshot", "reasoning", "end"]
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "Last-Event-ID"
    assert bad_since.status_code == 400 and bad_since.json()["errors"][0]["field"] == "since"


async def test_model_text_is_passed_on_without_reading_postgresql_and_the_end_marker_ends_the_feed():
    from agent_tree.contract import encode_model_delta, encode_run_end

    svc = make_services()
    svc.history.add_step(WF, [1])
    raw = lambda fields: {k.encode(): v.encode() for k, v in fields.items()}  # noqa: E731 - Redis gives bytes
    batches = [
        [(f"1-{i}", raw(encode_model_delta(agent="a", model="m", call="1", seq=i, text=f"t{i}", ts="")))]
        for i in range(20)
    ]
    batches.append([("2-0", raw(encode_run_end({"status": "completed", "answer": "t"})))])
    reads = 0
    steps = svc.history.steps

    async def counting_steps(*args, **kwargs):
        nonlocal reads
        reads += 1
        return await steps(*args, **kwargs)

    async def stream_position(workflow_id):
        return "0-0"

    async def read_stream(workflow_id, after):
        await asyncio.sleep(0.01)
        return batches.pop(0) if batches else []

    svc.history.steps = counting_steps
    svc.feeds.stream_position = stream_position
    svc.feeds.read_stream = read_stream
    svc.feeds.poll_seconds = 60  # no timed status checks: only the stream can end it
    frames = await collect(sse.events(svc, WF, None, {}, finished=False))
    assert [f["event"] for f in frames[2:]] == ["reasoning"] + ["model_delta"] * 20 + ["end"]
    assert '"text":"t0"' in frames[3]["data"] and "id" not in frames[3]
    assert reads == 2  # once when the feed starts, once for the end marker; none for the 20 text batches


async def test_a_feed_encodes_each_step_once_and_a_client_behind_gets_them_in_one_write():
    """Two listeners of one feed get the same bytes object (encoded once, not once per client); what
    is queued for a listener goes out in one chunk, in order."""
    svc = make_services()
    subs = [svc.feeds.subscribe(WF, None) for _ in range(2)]
    feed = svc.feeds._feeds[WF]
    feed.task.cancel()  # the test plays the feed
    for i in range(1, 4):
        svc.history.add_step(WF, [i])
    await feed.read_history()
    queued = [[sub.queue.get_nowait() for _ in range(sub.queue.qsize())] for sub in subs]
    assert [p.ord for _, p in queued[0]] == [[1], [2], [3]]
    assert all(a[1].frame is b[1].frame for a, b in zip(*queued, strict=True))
    for item in queued[0]:
        subs[0].queue.put_nowait(item)
    gen = sse.events(svc, WF, None, {}, finished=False)
    for sub in subs:
        svc.feeds.unsubscribe(sub)
    # a listener with three steps and the end queued: one write after retry and snapshot
    svc.feeds.subscribe = lambda wf, since: subs[0]  # type: ignore[method-assign]
    subs[0].queue.put_nowait(("end", b"event: end\ndata: {}\n\n"))
    chunks = [chunk async for chunk in gen]
    assert len(chunks) == 3, chunks
    assert [f.get("id") for f in parse(chunks[2])] == ["1", "2", "3", None]
