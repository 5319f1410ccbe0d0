"""Hypothesis strategies of what a worker receives from outside (docs/reliability.md, "Fuzzing"):
tool results (:data:`tool_outputs`: huge, not UTF-8, deeply nested, not JSON, wrong types, text with
NUL and lone surrogates) and model responses (:func:`model_responses`: raw HTTP answers of a Chat
Completions endpoint: odd content, odd tool calls, wrong types, not JSON, bytes that are not UTF-8,
error statuses). ``generated`` is the tool the fuzz trees call: it returns (or raises) :data:`VALUE`."""

from __future__ import annotations

import datetime
import decimal
import json
from typing import Any

from hypothesis import strategies as st

VALUE: Any = None


class Boom(Exception):
    pass


def generated() -> Any:
    """The fuzz trees' tool: returns the generated value, or raises it when it is an exception."""
    if isinstance(VALUE, BaseException):
        raise VALUE
    return VALUE


any_text = st.text(st.characters(exclude_categories=[]), max_size=40)  # NUL and lone surrogates included


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque>"


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=10,
)
tool_outputs = st.one_of(
    json_like,
    st.sampled_from([70_000, 300_000, 2_000_000]).map(lambda n: "x" * n),
    st.binary(max_size=30),
    st.sampled_from([10, 200, 900, 5000]).map(nested),
    st.sampled_from(
        [
            float("nan"),
            float("inf"),
            {1, 2},
            (1, "a"),
            Opaque(),
            {(1, 2): "tuple key"},
            2**200,
            decimal.Decimal("1.5"),
            datetime.datetime(2026, 1, 1),
            b"\xff\xfe",
            "a\x00b",
            "a\ud800b",
            {"k\x00": "v"},
        ]
    ),
    any_text.map(lambda m: Boom(m)),
    st.sampled_from([MemoryError("fuzz"), RecursionError("deep"), UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")]),
)


def completion(content: Any = "ok", tool_calls: Any = None, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "fz",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        **extra,
    }


def call(name: Any = "generated", arguments: Any = "{}", id_: Any = "t1") -> dict[str, Any]:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


@st.composite
def model_responses(draw: st.DrawFn) -> tuple[int, bytes]:
    """(HTTP status, body) of a Chat Completions answer."""
    kind = draw(
        st.sampled_from(
            ["content", "tool_calls", "wrong_types", "shape", "not_json", "not_utf8", "status", "huge", "sse", "sse"]
        )
    )
    if kind == "sse":
        return 200, draw(sse_bodies())
    if kind == "content":
        body = completion(draw(any_text | json_like.map(json.dumps) | st.none()))
    elif kind == "tool_calls":
        args = draw(
            any_text
            | json_like.map(lambda v: json.dumps(v))
            | st.sampled_from(["[" * 5000, "{}", "null", '"s"', "[1]"])
        )
        name = draw(st.sampled_from(["generated", "missing", "", "x" * 300]) | any_text)
        body = completion(None, [call(name, args, draw(any_text))] * draw(st.integers(1, 3)))
    elif kind == "wrong_types":
        body = completion(
            draw(st.sampled_from([5, ["a"], {"a": 1}, True])),
            draw(st.sampled_from([None, "x", [1], [{"id": 1}], [call(5, 6, 7)], [{"function": None}]])),
        )
        if draw(st.booleans()):
            body["usage"] = draw(st.sampled_from([None, "many", {"total_tokens": "x"}, {"total_tokens": -5}]))
    elif kind == "shape":
        body = draw(
            st.sampled_from(
                [{}, {"choices": []}, {"choices": None}, {"choices": [{}]}, {"choices": [{"message": None}]}, []]
            )
            | json_like
        )
    elif kind == "huge":
        body = completion("y" * draw(st.sampled_from([70_000, 300_000, 3_000_000])))
    elif kind == "status":
        return draw(st.sampled_from([400, 401, 403, 404, 409, 422, 429, 500, 502, 503])), json.dumps(
            {"error": {"message": draw(any_text), "type": "x"}}, ensure_ascii=True
        ).encode()
    if kind == "not_json":
        return 200, draw(st.sampled_from([b"<html>oops</html>", b"", b"{", b"null", b"[]"]))
    if kind == "not_utf8":
        return 200, b'{"choices": [{"message": {"content": "\xff\xfe"}}]}'
    return 200, json.dumps(body, ensure_ascii=True, default=str).encode()


piece = any_text | st.sampled_from([None, 5, ["x"], {"a": 1}])
chunk_deltas = st.fixed_dictionaries(
    {},
    optional={
        "content": piece,
        "tool_calls": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "index": st.sampled_from([0, 1, None, "x", -1]),
                    "id": piece,
                    "function": st.fixed_dictionaries({}, optional={"name": piece, "arguments": piece}) | st.none(),
                },
            ),
            max_size=2,
        ),
    },
)
chunks = st.fixed_dictionaries(
    {
        "choices": st.lists(
            st.fixed_dictionaries({"index": st.sampled_from([0, 0, 1]), "delta": chunk_deltas}), max_size=2
        )
    },
    optional={
        "usage": st.none()
        | st.sampled_from([{"total_tokens": "x"}, {"total_tokens": -3}, {"prompt_tokens": 2.5}, "u"]),
        "model": piece,
        "id": st.just("c1"),
        "object": st.just("chat.completion.chunk"),
        "created": st.just(1),
    },
)


@st.composite
def sse_bodies(draw: st.DrawFn) -> bytes:
    """A streamed answer (Server-Sent Events): odd chunks, lines that are not JSON, or no end."""
    lines = []
    for item in draw(
        st.lists(chunks.map(lambda c: json.dumps(c)) | st.sampled_from(["{", "[]", "null", "5"]), max_size=5)
    ):
        lines.append(f"data: {item}\n\n")
    if draw(st.booleans()):
        lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()
