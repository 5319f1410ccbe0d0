"""Fuzzing a worker's inputs at the activity level (docs/reliability.md, "Fuzzing"): generated tool
results through the tool-call activity and generated Chat Completions answers (through the real
``openai`` client, over a mock transport) through the model-call activity. Each ends as a result the
workflow can carry and fold into the chat loop, or as an activity error with a message (the workflow
makes it a step error after its bounded retries); every step written is one PostgreSQL can store.

Reduced in the normal test run; ``AGENT_TREE_FUZZ_EXAMPLES=1000 pytest -m fuzz tests/unit`` is the full one."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import fuzz_worker
import httpx
import pytest
from agent_tree_worker import inputs as t
from agent_tree_worker.activities import Activities
from fuzz_manifests import collect, examples
from openai import AsyncOpenAI
from temporalio.testing import ActivityEnvironment

from agent_tree.contract.temporal import DATA_CONVERTER
from agent_tree.providers import openai_chat as chat
from agent_tree.providers import openai_client

pytestmark = pytest.mark.fuzz
AGENT = {
    "name": "clerk",
    "model": {"name": "fz", "baseUrl": "http://fuzz.invalid/v1"},
    "tools": [{"name": "generated", "entrypoint": "fuzz_worker:generated", "timeoutSeconds": 5}],
}
SPEC = {"root": "clerk", "agents": [AGENT]}


class RecordingStream:
    """StepStream's interface; keeps what was published. With a ``url``, model calls stream."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url
        self.steps: list[dict[str, Any]] = []

    async def publish(self, run_id: str, steps: list[Any], *, final: dict[str, Any] | None = None) -> bool:
        self.steps += steps
        return True

    async def publish_transient(self, run_id: str, entries: list[Any]) -> bool:
        return True


def storable_problem(value: Any) -> str | None:
    """Why PostgreSQL's jsonb (and Redis) would refuse ``value``: not JSON, not UTF-8, or a NUL."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    return "holds NUL (\\u0000), which jsonb refuses" if "\\u0000" in text else None


def short(value: Any) -> str:
    try:
        return repr(value)[:120]
    except RecursionError:
        return "(nested too deep for repr)"


async def carried(value: Any) -> str | None:
    """Why Temporal could not carry ``value`` as an activity's result (None: it can)."""
    try:
        await DATA_CONVERTER.encode([value])
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    return None


async def test_generated_tool_results_end_as_results_or_clear_errors():
    corpus = collect(fuzz_worker.tool_outputs, examples(80))
    stream = RecordingStream()
    acts, env = Activities(None, stream, identity="fuzz"), ActivityEnvironment()
    failures, outcomes = [], Counter()
    for i, value in enumerate(corpus):
        fuzz_worker.VALUE = value
        inp = t.ToolCallInput(f"wf-fz-{i}", SPEC, "clerk", "generated", {}, [1, 1], [1, 2])
        stream.steps.clear()
        what = f"tool output {type(value).__name__} {short(value)}"
        try:
            result = await asyncio.wait_for(env.run(acts.tool_call, inp), 30)
        except Exception as exc:  # the workflow retries it (3 attempts), then records a tool error step
            outcomes[f"activity error {type(exc).__name__}"] += 1
            if not str(exc).strip():
                failures.append(f"{what}: activity error without a message ({type(exc).__name__})")
            continue
        outcomes[result["status"]] += 1
        if result["status"] == "error" and not (isinstance(result["error"], str) and result["error"].strip()):
            failures.append(f"{what}: an error without a message: {result['error']!r}")
        if problem := await carried(result):
            failures.append(f"{what}: Temporal cannot carry the result: {problem}")
        try:
            state = chat.observe_tool(chat.start(AGENT, "go"), chat.ToolCall("t1", "generated", {}), result)
            chat.next_action(state)
        except Exception as exc:
            failures.append(f"{what}: the chat loop fails on the result: {type(exc).__name__}: {exc}")
        for step in stream.steps:
            if problem := storable_problem(step):
                failures.append(f"{what}: step {step['type']} cannot be stored: {problem}")
    print(f"\n{len(corpus)} tool outputs: {dict(outcomes)}")
    assert not failures, f"{len(failures)} of {len(corpus)}:\n" + "\n".join(failures[:15])


async def test_generated_model_answers_end_as_responses_or_clear_errors(monkeypatch):
    corpus = collect(fuzz_worker.model_responses(), examples(80))
    answer: list[tuple[int, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        status, body = answer[0]
        kind = "text/event-stream" if body.startswith(b"data:") else "application/json"
        return httpx.Response(status, content=body, headers={"content-type": kind})

    def client_for(agent: Any, *, max_retries: int = 2) -> AsyncOpenAI:
        http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        return AsyncOpenAI(base_url="http://fuzz.invalid/v1", api_key="k", max_retries=0, http_client=http)

    monkeypatch.setattr(openai_client, "client_for", client_for)
    stream = RecordingStream(url="redis://fuzz.invalid")  # the calls stream (and fall back to plain ones)
    acts, env = Activities(None, stream, identity="fuzz"), ActivityEnvironment()
    failures, outcomes = [], Counter()
    for i, (status, body) in enumerate(corpus):
        answer[:] = [(status, body)]
        openai_client._no_streaming.clear()  # each answer is tried streamed first
        what = f"model answer {status} {body[:150]!r}"
        inp = t.ModelCallInput(f"wf-fz-{i}", SPEC, "clerk", [{"role": "user", "content": "go"}], ord=[1, 1])
        try:
            response = await asyncio.wait_for(env.run(acts.model_call, inp), 30)
        except Exception as exc:  # non-retryable, or retried 4 times: then the handoff fails naming the cause
            outcomes[f"activity error {type(exc).__name__}"] += 1
            if not str(exc).strip():
                failures.append(f"{what}: activity error without a message ({type(exc).__name__})")
            continue
        outcomes["response"] += 1
        if problem := await carried(response):
            failures.append(f"{what}: Temporal cannot carry the response: {problem}")
            continue
        try:  # what the workflow does with it (a failure here would fail the workflow task: a stuck run)
            state = chat.observe_model(chat.start(AGENT, "go"), json.loads(json.dumps(response)))
            chat.next_action(state)
        except Exception as exc:
            failures.append(f"{what}: the chat loop fails on the response: {type(exc).__name__}: {exc}")
        if problem := storable_problem(response):
            failures.append(f"{what}: the response cannot be recorded: {problem}")
    print(f"\n{len(corpus)} model answers: {dict(outcomes)}")
    assert not failures, f"{len(failures)} of {len(corpus)}:\n" + "\n".join(failures[:15])


async def test_nul_and_lone_surrogates_are_replaced_so_the_result_can_be_recorded():
    """Found by the fuzz above: such text failed every write of the step (PostgreSQL, Redis, Temporal)."""
    fuzz_worker.VALUE = {"text\x00": ["a\x00b", "c\ud800d"]}
    stream = RecordingStream()
    result = await ActivityEnvironment().run(
        Activities(None, stream).tool_call, t.ToolCallInput("wf-fz", SPEC, "clerk", "generated", {}, [1, 1], [1, 2])
    )
    assert result["output"] == {"text\ufffd": ["a\ufffdb", "c\ufffdd"]}
    assert [storable_problem(s) for s in stream.steps] == [None, None] and await carried(result) is None


async def test_a_usage_that_is_not_a_count_counts_zero(monkeypatch):
    """Found by the fuzz above: ``"total_tokens": "x"`` reached the workflow's sum and failed its task."""
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
    body["usage"] = {"prompt_tokens": -1, "completion_tokens": "many", "total_tokens": 2.5}
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200, json={**body, "model": "m"})))
    client = AsyncOpenAI(base_url="http://fuzz.invalid/v1", api_key="k", max_retries=0, http_client=http)
    monkeypatch.setattr(openai_client, "client_for", lambda agent, max_retries=2: client)
    response = await ActivityEnvironment().run(
        Activities(None, RecordingStream()).model_call,
        t.ModelCallInput("wf-fz", SPEC, "clerk", [{"role": "user", "content": "go"}], ord=[1, 1]),
    )
    assert response["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    chat.next_action(chat.observe_model(chat.start(AGENT, "go"), response))


@pytest.mark.parametrize("status", [401, 500])
async def test_an_endpoint_error_quoting_the_api_key_reaches_nobody_with_it(monkeypatch, status):
    """Some servers quote the key they were given in their 401; a proxy may do it in a 500 (retried)."""
    key = "sk-fz-secret-0123456789"
    monkeypatch.setenv(openai_client.env_key_name("clerk"), key)
    answer = {"error": {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error"}}
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(status, json=answer)))
    client = AsyncOpenAI(base_url="http://fuzz.invalid/v1", api_key=key, max_retries=0, http_client=http)
    monkeypatch.setattr(openai_client, "client_for", lambda agent, max_retries=2: client)
    with pytest.raises(Exception) as caught:
        await ActivityEnvironment().run(
            Activities(None, RecordingStream()).model_call,
            t.ModelCallInput("wf-fz", SPEC, "clerk", [{"role": "user", "content": "go"}], ord=[1, 1]),
        )
    assert key not in str(caught.value) and openai_client.REDACTED in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no traceback quotes it either


def test_a_reply_nested_too_deeply_is_a_reply_that_is_not_json():
    """Found by the worker-process fuzz: ``"[" * 3000`` raised RecursionError in the model-call activity."""
    from agent_tree.providers.replies import interpret_final

    assert interpret_final({"type": "object"}, "[" * 3000)["errors"] == [
        "the reply must be a JSON object: the JSON is nested too deeply"
    ]


def test_tool_call_arguments_nested_too_deeply_are_a_call_error_not_a_workflow_failure():
    """Found by the fuzz above: json.loads of ``"[" * 5000`` raised RecursionError in the chat loop,
    which runs in the workflow (its task failed on every attempt: a stuck run)."""
    state = chat.observe_model(
        chat.start(AGENT, "go"),
        {"content": None, "tool_calls": [{"id": "t1", "name": "generated", "arguments": "[" * 5000}], "usage": {}},
    )
    (call,) = chat.next_action(state).calls
    assert call.error.startswith("the arguments are nested too deeply to be read")
