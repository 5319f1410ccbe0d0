"""A local OpenAI-compatible Chat Completions server with scripted replies (stdlib only).

The real ``openai`` client talks to it over HTTP. A script maps a model name to a list of replies;
the reply to a request is chosen by how many assistant messages the request already holds, so a
retried request gets the same reply (replies are a function of the conversation, like a seeded
model). A reply is a dict ``{"content": str}`` and/or ``{"tool_calls": [(name, {args}) ...]}``, or a
callable ``(request) -> reply``.

A request with ``stream: true`` is answered as OpenAI streams: Server-Sent Events, one
``chat.completion.chunk`` per ``chunk_chars`` of content (tool call arguments in fragments too),
``chunk_delay`` seconds apart, the usage in a last chunk when ``stream_options.include_usage``, then
``data: [DONE]``. ``refuse_stream`` answers such requests 400 like a server that cannot stream;
``stream_usage=False`` never sends the usage chunk.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]


def completion(model: str, reply: dict[str, Any], index: int) -> dict[str, Any]:
    calls = [
        {
            "id": f"call_{index}_{i}",
            "type": "function",
            "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
        }
        for i, (name, args) in enumerate(reply.get("tool_calls") or [])
    ]
    message: dict[str, Any] = {"role": "assistant", "content": reply.get("content")}
    if calls:
        message["tool_calls"] = calls
    prompt, out = reply.get("usage", (11, 7))
    return {
        "id": f"chatcmpl-{index}",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out},
    }


def stream_chunks(
    model: str, reply: dict[str, Any], index: int, *, chunk_chars: int = 4, include_usage: bool = True
) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects OpenAI streams for :func:`completion`'s reply."""
    whole = completion(model, reply, index)
    message = whole["choices"][0]["message"]
    base = {"id": whole["id"], "object": "chat.completion.chunk", "created": whole["created"], "model": model}
    if include_usage:
        base["usage"] = None

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    out = [chunk({"role": "assistant", "content": ""})]
    text = message.get("content") or ""
    out += [chunk({"content": text[i : i + chunk_chars]}) for i in range(0, len(text), chunk_chars)]
    for i, call in enumerate(message.get("tool_calls") or []):
        head = {"index": i, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"]}}
        out.append(chunk({"tool_calls": [{**head, "function": {**head["function"], "arguments": ""}}]}))
        args = call["function"]["arguments"]
        for j in range(0, len(args), chunk_chars):
            out.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": args[j : j + chunk_chars]}}]}))
    out.append(chunk({}, whole["choices"][0]["finish_reason"]))
    if include_usage:
        out.append({**base, "choices": [], "usage": whole["usage"]})
    return out


class FakeOpenAI:
    """``with FakeOpenAI() as server: server.base_url`` (``http://127.0.0.1:PORT/v1``)."""

    def __init__(
        self,
        scripts: dict[str, list[Reply]] | None = None,
        *,
        chunk_delay: float = 0.0,
        chunk_chars: int = 4,
        refuse_stream: bool = False,
        stream_usage: bool = True,
    ) -> None:
        self.scripts: dict[str, list[Reply]] = dict(scripts or {})
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.chunk_delay = chunk_delay
        self.chunk_chars = chunk_chars
        self.refuse_stream = refuse_stream
        self.stream_usage = stream_usage  # False: never sends the usage chunk, as some servers do
        self.streamed: list[dict[str, Any]] = []  # per streamed reply: its request body, sent at, done at
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                status, payload = server.answer(self.path, body, self.headers.get("Authorization", ""))
                if status == 200 and body.get("stream"):
                    self.stream(body, payload)
                    return
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def stream(self, body: dict[str, Any], chunks: list[dict[str, Any]]) -> None:
                record = {"body": body, "started": time.time(), "done": None}
                with server.lock:
                    server.streamed.append(record)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                for n, piece in enumerate(chunks):
                    if n and server.chunk_delay:
                        time.sleep(server.chunk_delay)  # a slow model: the client sees text before the end
                    self.wfile.write(f"data: {json.dumps(piece)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                record["done"] = time.time()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answer(self, path: str, body: dict[str, Any], auth: str) -> tuple[int, Any]:
        with self.lock:
            self.requests.append({"path": path, "body": body, "auth": auth})
        if not path.endswith("/chat/completions"):
            return 404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}}
        if not auth.startswith("Bearer ") or auth == "Bearer ":
            return 401, {"error": {"message": "missing API key", "type": "invalid_request_error"}}
        model = body.get("model", "")
        script = self.scripts.get(model)
        if script is None:
            return 404, {"error": {"message": f"model {model!r} does not exist", "type": "invalid_request_error"}}
        index = sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
        if index >= len(script):
            return 500, {"error": {"message": f"script of {model!r} has no reply #{index}", "type": "server_error"}}
        if body.get("stream") and self.refuse_stream:
            return 400, {
                "error": {"message": "stream is not supported by this server", "type": "invalid_request_error"}
            }
        reply = script[index]
        if callable(reply):
            reply = reply(body)
        if body.get("stream"):
            usage = self.stream_usage and bool((body.get("stream_options") or {}).get("include_usage"))
            return 200, stream_chunks(model, reply, index, chunk_chars=self.chunk_chars, include_usage=usage)
        return 200, completion(model, reply, index)

    def requests_for(self, model: str) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["body"].get("model") == model]

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- a tree whose every kind of model call is counted (tests/unit/test_nested_usage.py and
# tests/integration/test_durable_usage.py run it embedded and durable) ----------------------------
def usage_tree(base_url: str) -> dict[str, Any]:
    """desk (model router) -> ops (nested model router) -> billing (model; asks expert, a model, as a tool)."""
    model = {"baseUrl": base_url}
    return {
        "root": "desk",
        "agents": [
            {"name": "desk", "children": ["ops"], "model": {**model, "name": "u-desk"}},
            {"name": "ops", "children": ["billing"], "model": {**model, "name": "u-ops"}},
            {
                "name": "billing",
                "model": {**model, "name": "u-billing"},
                "tools": [{"name": "ask_expert", "agent": "expert"}],
            },
            {"name": "expert", "model": {**model, "name": "u-expert"}},
        ],
    }


def script_usage_tree(server: FakeOpenAI) -> None:
    """The replies of :func:`usage_tree`'s five model calls, with their token usage."""
    server.scripts["u-desk"] = [{"tool_calls": [("transfer_to_ops", {})], "usage": (100, 20)}]
    server.scripts["u-ops"] = [{"tool_calls": [("transfer_to_billing", {})], "usage": (100, 30)}]
    server.scripts["u-billing"] = [
        {"tool_calls": [("ask_expert", {"input": "is 7 ok?"})], "usage": (100, 40)},
        {"content": "Invoice 7 is fine.", "usage": (100, 50)},
    ]
    server.scripts["u-expert"] = [{"content": "yes", "usage": (100, 60)}]


USAGE_TREE_TOTAL = 120 + 130 + 140 + 150 + 160
"""Tokens of every model call of a :func:`usage_tree` run, routing calls included."""
