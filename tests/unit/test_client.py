"""``agent_tree.client`` against the real API application (in-memory services, see client_fakes):
typed answers, errors with their fields, pagination, and an event stream that survives cut connections."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from client_fakes import NS, World, free_port, serve

from agent_tree.api_models import RunView, StepItem, WhoAmI
from agent_tree.client import ApiError, ApiUnreachable, Client, Event
from agent_tree.sse import SseDecoder

TOKEN = "alice-token"


# --- the SSE format -----------------------------------------------------------------------------
def decode(*chunks: str) -> tuple[list[Event], SseDecoder]:
    decoder = SseDecoder()
    events = [e for chunk in chunks for e in decoder.feed(chunk)]
    return events, decoder


def test_multi_line_data_comments_and_fields_in_any_chunking() -> None:
    text = (
        'retry: 1500\n\n: keep-alive\n\nid: 1.2\nevent: reasoning\ndata: {"a":\n'
        "data:  1}\n\nevent: note\ndata:plain\ndata\n\n"
    )
    whole, decoder = decode(text)
    assert [(e.id, e.event, e.data) for e in whole] == [("1.2", "reasoning", {"a": 1}), (None, "note", "plain\n")]
    assert decoder.retry_ms == 1500 and decoder.last_id == "1.2"
    for size in (1, 2, 3, 7):  # the same events whatever the chunks
        assert decode(*(text[i : i + size] for i in range(0, len(text), size)))[0] == whole


def test_line_endings_ids_and_retry_edge_cases() -> None:
    # CRLF split between two chunks, a lone CR, an id holding NUL (ignored), retry with a non-digit
    # (ignored), an event without data (not dispatched, but its id counts), default event name.
    events, decoder = decode("id: 7\r", "\ndata: x\r\rid: 8\0\rretry: 5s\r\r", "id: 9\n\n", "data: y\n\n")
    assert [(e.id, e.event, e.data) for e in events] == [("7", "message", "x"), (None, "message", "y")]
    assert decoder.last_id == "9" and decoder.retry_ms is None


def test_the_id_of_an_event_cut_off_is_not_resumed_from() -> None:
    events, decoder = decode('id: 1\ndata: {}\n\nid: 2\ndata: {"half')
    assert [e.id for e in events] == ["1"] and decoder.last_id == "1"


# --- a transport that cuts streams --------------------------------------------------------------
class CutStream(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


class Cutting(httpx.AsyncBaseTransport):
    """The real application behind a network that cuts the n-th event stream after ``cuts[n]`` steps
    (in the middle of the next frame), or answers with ``canned`` bodies / statuses first."""

    def __init__(self, inner: httpx.AsyncBaseTransport, cuts=(), canned=()) -> None:
        self.inner = inner
        self.cuts = list(cuts)
        self.canned = list(canned)
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(time.monotonic())
        if request.url.path.endswith("/events") and self.canned:
            status, body = self.canned.pop(0)
            return httpx.Response(status, content=body.encode(), headers={"content-type": "text/event-stream"})
        response = await self.inner.handle_async_request(request)
        if not request.url.path.endswith("/events") or not self.cuts:
            return response
        keep, frames, seen = self.cuts.pop(0), [], 0
        for frame in (await response.aread()).split(b"\n\n"):
            frames.append(frame)
            seen += frame.startswith(b"id: ")
            if seen == keep:
                break
        partial = b"\n\n".join(frames) + b'\n\nid: 99\nevent: reasoning\ndata: {"half'
        return httpx.Response(response.status_code, headers=response.headers, stream=CutStream(partial))


def ids(events: list[Event]) -> list[str | None]:
    return [e.id for e in events if e.id is not None]


async def collect(api: Client, name: str, **kw) -> list[Event]:
    return [event async for event in api.events(NS, name, **kw)]


# --- the event stream ---------------------------------------------------------------------------
async def test_a_finished_run_streams_snapshot_every_step_then_end() -> None:
    world = World()
    world.add_run("done", steps=3, status="completed")
    async with Client("http://api", TOKEN, transport=world.transport()) as api:
        events = await collect(api, "done")
    assert [e.event for e in events] == ["snapshot", "reasoning", "reasoning", "reasoning", "end"]
    assert ids(events) == ["1", "2", "3"] and events[1].data["data"]["thought"] == "step 1"
    assert RunView.model_validate(events[0].data).name == "done"
    assert events[-1].data == {"status": "completed", "answer": "done"}


async def test_a_cut_stream_is_resumed_with_last_event_id_and_nothing_is_lost_or_repeated() -> None:
    world = World(retry_ms=10)
    world.add_run("cut", steps=5, status="completed")
    net = Cutting(world.transport(), cuts=[2, 2])
    async with Client("http://api", TOKEN, transport=net) as api:
        events = await collect(api, "cut")
    assert ids(events) == ["1", "2", "3", "4", "5"] and events[-1].event == "end"
    # The half-received frame (id 99) is not resumed from: the last COMPLETE event's id is.
    assert [r.headers.get("last-event-id") for r in net.requests] == [None, "2", "4"]
    assert [e.event for e in events].count("snapshot") == 3  # each connection opens with one


async def test_a_reconnect_event_resumes_after_the_servers_retry_delay() -> None:
    world = World()
    world.add_run("slow", steps=3, status="completed")
    first = 'retry: 150\n\nevent: snapshot\ndata: {}\n\nid: 1\nevent: reasoning\ndata: {"ord":[1]}\n\n'
    first += 'event: reconnect\ndata: {"after":"1"}\n\n'
    net = Cutting(world.transport(), canned=[(200, first)])
    async with Client("http://api", TOKEN, transport=net, reconnect_ms=5) as api:
        events = await collect(api, "slow")
    assert ids(events) == ["1", "2", "3"] and "reconnect" not in [e.event for e in events]
    assert net.requests[1].headers["last-event-id"] == "1"
    assert net.times[1] - net.times[0] >= 0.14  # retry: 150 was honoured
    # Without reconnect the caller sees the reconnect event and the iterator ends there.
    net = Cutting(world.transport(), canned=[(200, first)])
    async with Client("http://api", TOKEN, transport=net) as api:
        events = await collect(api, "slow", reconnect=False)
    assert [e.event for e in events] == ["snapshot", "reasoning", "reconnect"] and len(net.requests) == 1


async def test_503_is_retried_404_is_raised_and_retries_are_bounded() -> None:
    world = World(retry_ms=10)
    world.add_run("r", steps=1, status="completed")
    net = Cutting(world.transport(), canned=[(503, '{"status":503,"reason":"ServiceUnavailable","message":"x"}')])
    async with Client("http://api", TOKEN, transport=net, reconnect_ms=10) as api:
        assert ids(await collect(api, "r", last_event_id=None)) == ["1"]
        with pytest.raises(ApiError) as missing:
            await collect(api, "nope")
    assert missing.value.status == 404 and missing.value.reason == "NotFound"
    down = Cutting(world.transport(), canned=[(503, "busy")] * 5)
    async with Client("http://api", TOKEN, transport=down, max_reconnects=2, reconnect_ms=10) as api:
        with pytest.raises(ApiError) as busy:
            await collect(api, "r")
    assert busy.value.status == 503 and len(down.requests) == 3


async def test_a_live_run_streams_steps_and_model_text_over_real_http() -> None:
    world = World()
    wid = world.add_run("live", steps=1)
    got_text = threading.Event()
    with serve(world) as url:

        def produce() -> None:
            deadline = time.monotonic() + 60
            while not world.feeds.following() and time.monotonic() < deadline:
                time.sleep(0.01)  # the client is connected and its feed runs (a poll, not a wait)
            world.feeds.delta(wid, "2", 0, "Hel")
            world.feeds.delta(wid, "2", 1, "lo")
            got_text.wait(60)  # the text arrives while the model call is still going
            world.history.add_step(wid, [2])
            world.history.add_step(wid, [3])
            world.history.finish(wid)

        producer = threading.Thread(target=produce)
        producer.start()
        events = []
        async with Client(url, TOKEN) as api:
            async with asyncio.timeout(60):
                async for event in api.events(NS, "live"):
                    events.append(event)
                    if event.event == "model_delta" and event.data["data"]["text"] == "lo":
                        assert ids(events) == ["1"]  # before the step that ends the call
                        got_text.set()
        producer.join()
    names = [e.event for e in events]
    assert names[0] == "snapshot" and names[-1] == "end" and ids(events) == ["1", "2", "3"]
    deltas = [e.data["data"]["text"] for e in events if e.event == "model_delta"]
    assert deltas == ["Hel", "lo"] and names.index("model_delta") < names.index("end")


# --- resources and errors -----------------------------------------------------------------------
async def test_typed_reads_and_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World()
    for i in range(3):
        world.add_run(f"run-{i}", steps=3, status="completed")
    monkeypatch.setenv("AGENT_TREE_TOKEN", TOKEN)  # the token from the environment
    async with Client("http://api", transport=world.transport()) as api:
        assert await api.whoami() == WhoAmI(username="alice", groups=["system:authenticated"])
        page = await api.runs(NS, limit=2)
        assert len(page.items) == 2 and page.nextCursor
        assert sorted([r.name async for r in api.all_runs(NS, limit=1)]) == ["run-0", "run-1", "run-2"]
        steps = [s async for s in api.all_steps(NS, "run-1", limit=2)]
        assert all(isinstance(s, StepItem) for s in steps) and [s.number for s in steps] == [1, 2, 3]
        view = await api.run(NS, "run-1")
        assert view.phase == "Succeeded" and view.result["answer"] == "done"


async def test_errors_carry_status_reason_message_and_fields() -> None:
    world = World()
    world.add_tree()
    async with Client("http://api", None, transport=world.transport()) as anonymous:
        with pytest.raises(ApiError) as no_token:
            await anonymous.whoami()
    assert no_token.value.status == 401 and no_token.value.reason == "Unauthorized"
    async with Client("http://api", TOKEN, transport=world.transport()) as api:
        with pytest.raises(ApiError) as bad:
            await api.create_run(NS, {"treeRef": {"name": "tree"}, "input": "q", "maxStep": 3}, generate_name="q-")
        with pytest.raises(ApiError) as forbidden:
            await api.runs("other-ns")
        with pytest.raises(ApiError) as page:
            await api.runs(NS, limit=10**9)
    assert bad.value.status == 422 and [e.field for e in bad.value.errors] == ["spec.maxStep"]
    assert forbidden.value.status == 403 and forbidden.value.reason == "Forbidden"
    assert page.value.status == 422 and page.value.errors[0].field == "limit"
    assert world.kube.objects.keys() == {k for k in world.kube.objects if "/agentruns/" not in k}  # none created
    async with Client(f"http://127.0.0.1:{free_port()}", TOKEN) as api:
        with pytest.raises(ApiUnreachable) as down:
            await api.whoami()
    assert down.value.status == 0 and "cannot reach the agent-tree API" in str(down.value)


async def test_writes_create_decide_retry_fork_and_cancel_as_the_caller() -> None:
    world = World()
    world.add_tree()
    world.add_run("src", steps=4, status="failed")
    world.add_approval("src", "a1")
    async with Client("http://api", TOKEN, transport=world.transport()) as api:
        made = await api.create_run(NS, {"treeRef": {"name": "tree"}, "input": "q"}, name="new-run")
        assert (made.name, made.createdBy) == ("new-run", "alice")
        listed = await api.approvals(NS, "src")
        assert [(a.id, a.pending) for a in listed.items] == [("a1", True)]
        decided = await api.approve(NS, "src", "a1", reason="fine")
        assert decided.approval.decision == "approve" and decided.message.startswith("approved approval a1")
        retried = await api.retry(NS, "src", new_name="src-again")
        forked = await api.fork(NS, "src", step=2, input="other", context={"k": "v"})
        await api.cancel(NS, "new-run")
    created = {path.rsplit("/", 1)[-1]: obj for path, obj in world.kube.objects.items() if "/agentruns/" in path}
    assert created["src-again"]["spec"]["forkFrom"] == {"run": "src"}
    assert created[forked.name]["spec"]["forkFrom"] == {
        "run": "src",
        "step": 2,
        "input": "other",
        "context": {"k": "v"},
    }
    assert retried.name == "src-again" and "new-run" not in created
    assert {token for method, _, token in world.kube.calls if method in ("POST", "PATCH", "DELETE")} == {TOKEN}


async def test_fork_step_counts_recorded_steps_not_the_runs_turns() -> None:
    # The history's runs.steps is the number of agent turns (3 here); steps as `agent-tree history`
    # numbers them are the recorded rows (6): step 5 is valid, step 7 is refused naming the 6.
    world = World()
    world.add_tree()
    wid = world.add_run("src", steps=6, status="completed")
    world.history.rows[wid]["steps"] = 3
    async with Client("http://api", TOKEN, transport=world.transport()) as api:
        made = await api.fork(NS, "src", step=5)
        with pytest.raises(ApiError) as bad:
            await api.fork(NS, "src", step=7)
    assert made.name.startswith("src-fork-")
    assert bad.value.status == 422 and bad.value.errors[0].field == "step" and "has 6 steps" in bad.value.message
