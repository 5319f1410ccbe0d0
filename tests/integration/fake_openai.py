"""A local OpenAI-compatible Chat Completions server with scripted replies (stdlib only).

The real ``openai`` client talks to it over HTTP. A script maps a model name to a list of replies;
the reply to a request is chosen by how many assistant messages the request already holds, so a
retried request gets the same reply (replies are a function of the conversation, like a seeded
model). A reply is a dict ``{"content": str}`` and/or ``{"tool_calls": [(name, {args}) ...]}``, or a
callable ``(request) -> reply``.
"""

from __future__ import annotations

import json
import threading
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


class FakeOpenAI:
    """``with FakeOpenAI() as server: server.base_url`` (``http://127.0.0.1:PORT/v1``)."""

    def __init__(self, scripts: dict[str, list[Reply]] | None = None) -> None:
        self.scripts: dict[str, list[Reply]] = dict(scripts or {})
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                status, payload = server.answer(self.path, body, self.headers.get("Authorization", ""))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answer(self, path: str, body: dict[str, Any], auth: str) -> tuple[int, dict[str, Any]]:
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
        reply = script[index]
        if callable(reply):
            reply = reply(body)
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
