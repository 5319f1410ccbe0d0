"""Assembling a streamed Chat Completions reply (``stream=True``) into the reply a plain call returns.

The chunks carry the content in pieces, each tool call's ``id`` and ``name`` once and its
``arguments`` in fragments (keyed by the call's ``index``), the ``finish_reason`` near the end and,
with ``stream_options={"include_usage": True}``, the usage in a last chunk without choices.
:class:`ReplyAssembler` folds them into ``{"content", "tool_calls", "usage", "finish_reason",
"model"}``: the same dict :func:`agent_tree.providers.openai_client.call_model` returns for a call
without streaming, so nothing after the call can tell them apart. No I/O here.
"""

from __future__ import annotations

from typing import Any

USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


def _get(obj: Any, name: str) -> Any:
    """A field of an SDK object or of a plain dict (tests and other SDK versions)."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


class ReplyAssembler:
    """Feed each chunk to :meth:`add` (it returns the chunk's content text), then read :meth:`reply`."""

    def __init__(self) -> None:
        self.chunks = 0
        self.choices = 0  # chunks that carried a choice: none means the endpoint sent no reply
        self.content: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.model: str | None = None
        self.usage: dict[str, int] | None = None

    def add(self, chunk: Any) -> str:
        """Fold one chunk in; returns its content delta ("" when it has none)."""
        self.chunks += 1
        self.model = _get(chunk, "model") or self.model
        usage = _get(chunk, "usage")
        if usage is not None:
            self.usage = {k: int(_get(usage, k) or 0) for k in USAGE_FIELDS}
        text = ""
        for choice in _get(chunk, "choices") or ():
            if (_get(choice, "index") or 0) != 0:
                continue  # one reply is asked for (no ``n``)
            self.choices += 1
            self.finish_reason = _get(choice, "finish_reason") or self.finish_reason
            delta = _get(choice, "delta")
            if delta is None:
                continue
            piece = _get(delta, "content")
            if piece:
                self.content.append(piece)
                text += piece
            for fragment in _get(delta, "tool_calls") or ():
                self._tool_call(fragment)
        return text

    def _tool_call(self, fragment: Any) -> None:
        index = _get(fragment, "index")
        index = len(self.calls) if index is None else int(index)
        call = self.calls.setdefault(index, {"id": None, "name": None, "arguments": ""})
        call["id"] = _get(fragment, "id") or call["id"]
        function = _get(fragment, "function")
        if function is not None:
            call["name"] = _get(function, "name") or call["name"]
            call["arguments"] += _get(function, "arguments") or ""

    def reply(self) -> dict[str, Any]:
        """The assembled reply (``usage`` all zero when the endpoint sent none, as a plain call reads it).

        Raises:
            ValueError: no chunk carried a choice.
        """
        if not self.choices:
            raise ValueError("the endpoint streamed no choices")
        return {
            "content": "".join(self.content) if self.content else None,
            "tool_calls": [
                {"id": c["id"], "name": c["name"], "arguments": c["arguments"]}
                for _, c in sorted(self.calls.items())
                if c["name"] is not None
            ],
            "usage": dict(self.usage) if self.usage is not None else dict.fromkeys(USAGE_FIELDS, 0),
            "finish_reason": self.finish_reason,
            "model": self.model,
        }
