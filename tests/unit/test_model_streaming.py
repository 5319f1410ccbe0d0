"""Streaming model calls: the chunks assembled into the reply a plain call returns, the fallback for
endpoints that cannot stream, and the coalescing of the text published live (``model_delta``)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from agent_tree_worker import deltas
from agent_tree_worker.stream import StepStream

from agent_tree.contract import MODEL_DELTA, decode_step
from agent_tree.providers import openai_client
from agent_tree.providers.openai_stream import ReplyAssembler
from agent_tree.spec import AgentSpec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from fake_openai import FakeOpenAI

TEXT = "Invoice #4821 was rejected: the purchase order number is missing."
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


# --- assembling chunks -------------------------------------------------------------------------------
def test_chunks_assemble_content_tool_call_fragments_finish_reason_and_usage():
    def chunk(delta=None, finish=None, usage=None, choices=True):
        body = {"model": "m-1", "usage": usage, "choices": []}
        if choices:
            body["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
        return body

    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me "}),
        chunk({"content": "check."}),
        chunk({"tool_calls": [{"index": 0, "id": "c0", "function": {"name": "lookup", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "c1", "function": {"name": "ask", "arguments": '{"q"'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"id": '}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": ': "x"}'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "7}"}}]}),
        chunk({}, "tool_calls"),
        chunk(usage={"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}, choices=False),
    ]
    reply = ReplyAssembler()
    texts = [reply.add(c) for c in chunks]
    assert "".join(texts) == "Let me check." and texts[0] == "" and texts[3] == ""
    assert reply.reply() == {
        "content": "Let me check.",
        "tool_calls": [
            {"id": "c0", "name": "lookup", "arguments": '{"id": 7}'},
            {"id": "c1", "name": "ask", "arguments": '{"q": "x"}'},
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        "finish_reason": "tool_calls",
        "model": "m-1",
    }


def test_a_stream_without_usage_reads_zero_and_one_without_choices_is_an_error():
    reply = ReplyAssembler()
    reply.add({"model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]})
    assert reply.reply()["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    empty = ReplyAssembler()
    empty.add({"model": "m", "choices": [], "usage": None})
    with pytest.raises(ValueError, match="no choices"):
        empty.reply()


# --- the real client against the local streaming endpoint ----------------------------------------------
@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AGENT_TREE_MODEL_API_KEY", "sk-unit")
    monkeypatch.setattr(openai_client, "_no_streaming", set())


def agent(base_url: str, name: str, **model: Any) -> AgentSpec:
    return AgentSpec.model_validate({"name": "billing", "model": {"name": name, "baseUrl": base_url, **model}})


SCRIPT = {
    "text": [{"content": TEXT, "usage": (30, 12)}],
    "tools": [{"content": "Looking it up.", "tool_calls": [("lookup", {"invoice_id": "4821", "deep": True})]}],
}


@pytest.mark.parametrize("name", ["text", "tools"])
async def test_a_streamed_reply_equals_the_plain_one_and_its_text_arrives_in_deltas(env, name):
    with FakeOpenAI(dict(SCRIPT), chunk_chars=5) as server:
        a = agent(server.base_url, name)
        messages = [{"role": "user", "content": "Why?"}]
        plain = await openai_client.call_model(a, messages, TOOLS)
        got: list[str] = []
        streamed = await openai_client.call_model(a, messages, TOOLS, on_delta=got.append)
        assert [r["body"].get("stream") for r in server.requests] == [None, True]
        assert server.requests[1]["body"]["stream_options"] == {"include_usage": True}
    assert streamed == plain
    assert "".join(got) == plain["content"] and len(got) > 1


async def test_an_async_on_delta_is_awaited(env):
    got: list[str] = []

    async def sink(text: str) -> None:
        got.append(text)

    with FakeOpenAI(dict(SCRIPT)) as server:
        reply = await openai_client.call_model(agent(server.base_url, "text"), [], None, on_delta=sink)
    assert "".join(got) == TEXT == reply["content"]


async def test_an_endpoint_that_refuses_streaming_is_called_plainly_from_then_on(env):
    with FakeOpenAI(dict(SCRIPT), refuse_stream=True) as server:
        a = agent(server.base_url, "text")
        got: list[str] = []
        first = await openai_client.call_model(a, [], None, on_delta=got.append)
        second = await openai_client.call_model(a, [], None, on_delta=got.append)
        assert [bool(r["body"].get("stream")) for r in server.requests] == [True, False, False]
    assert first == second and first["content"] == TEXT and first["usage"]["total_tokens"] == 42
    assert got == []  # nothing was streamed; the reply is whole


async def test_a_stream_without_usage_still_answers(env):
    with FakeOpenAI(dict(SCRIPT), stream_usage=False) as server:
        reply = await openai_client.call_model(agent(server.base_url, "text"), [], None, on_delta=lambda t: None)
    assert reply["content"] == TEXT and reply["usage"]["total_tokens"] == 0


async def test_model_stream_false_never_streams(env):
    with FakeOpenAI(dict(SCRIPT)) as server:
        got: list[str] = []
        reply = await openai_client.call_model(
            agent(server.base_url, "text", stream=False), [], None, on_delta=got.append
        )
        assert [r["body"].get("stream") for r in server.requests] == [None]
    assert reply["content"] == TEXT and got == []


# --- coalescing and publishing -----------------------------------------------------------------------
async def until(predicate, what: str, deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def test_deltas_are_coalesced_by_time_and_size_and_the_rest_is_sent_at_close():
    now = [0.0]
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    c = deltas.Coalescer(send, interval=60, max_chars=10, clock=lambda: now[0])
    for piece in ("ab", "cd", "ef"):
        await c.add(piece)
    assert sent == []  # under 10 chars and within the interval
    await c.add("ghijk")  # 11 chars wait: sent at once
    assert sent == ["abcdefghijk"]
    await c.add("l")
    now[0] += 61  # the interval is up: the next piece goes out with what waits
    await c.add("m")
    assert sent == ["abcdefghijk", "lm"]
    await c.add("n")
    await c.close()
    assert sent == ["abcdefghijk", "lm", "n"]


async def test_a_pause_of_the_model_does_not_hold_back_the_text():
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    c = deltas.Coalescer(send, interval=0.05, max_chars=200)
    await c.add("Hel")
    await c.add("lo")
    await until(lambda: sent == ["Hello"], "the timer's flush")  # no further piece came
    await c.close()
    assert sent == ["Hello"]


class FakeStream:
    url = "redis://fake"

    def __init__(self, fail: BaseException | None = None) -> None:
        self.entries: list[dict[str, str]] = []
        self.fail = fail

    async def publish_transient(self, run_id: str, entries: list[dict[str, str]]) -> bool:
        if self.fail is not None:
            raise self.fail
        self.entries += entries
        return True


async def test_the_publisher_numbers_the_pieces_and_splits_long_text():
    stream = FakeStream()
    publish = deltas.DeltaPublisher(stream, "run-1", agent="billing", model="m", call="3.2")  # type: ignore[arg-type]
    await publish("Hello")
    await publish("x" * (deltas.ENTRY_CHARS + 1))
    got = [decode_step(e) for e in stream.entries]
    assert [(g["type"], g["data"]["call"], g["data"]["seq"], len(g["data"]["text"])) for g in got] == [
        (MODEL_DELTA, "3.2", 0, 5),
        (MODEL_DELTA, "3.2", 1, deltas.ENTRY_CHARS),
        (MODEL_DELTA, "3.2", 2, 1),
    ]
    assert got[0]["agent"] == "billing" and got[0]["data"]["model"] == "m" and "ord" not in got[0]


async def test_publishing_never_fails_the_call():
    publish = deltas.DeltaPublisher(FakeStream(RuntimeError("boom")), "r", agent="a", model="m", call="1")  # type: ignore[arg-type]
    await publish("text")  # logged, not raised
    down = StepStream("redis://127.0.0.1:1/0")  # nothing listens there
    assert await down.publish_transient("r", [{"type": MODEL_DELTA, "data": "{}"}]) is False
    await down.close()


def test_no_live_text_without_redis_or_with_stream_false():
    a = AgentSpec.model_validate({"name": "a", "model": {"name": "m"}})
    off = AgentSpec.model_validate({"name": "a", "model": {"name": "m", "stream": False}})
    assert deltas.live_text(StepStream(None), "r", a, "1") is None
    assert deltas.live_text(StepStream("redis://x"), "r", off, "1") is None
    assert isinstance(deltas.live_text(StepStream("redis://x"), "r", a, "1"), deltas.Coalescer)
