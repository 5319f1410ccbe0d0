"""The OpenAI-compatible Chat Completions client of a model agent, with its credentials.

The API key comes from the agent's own variable, its mounted Secret (``model.apiKeySecretRef``), or
the shared variables (:func:`api_key`); the endpoint from ``model.baseUrl`` or the environment.
Used by the embedded behaviour (:mod:`.embedded`, without streaming) and by the worker's model-call
activity (streaming, to publish the text live: :mod:`.openai_stream` assembles the chunks).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent_tree import ledger, registry
from agent_tree.providers.openai_stream import ReplyAssembler
from agent_tree.spec import AgentSpec

log = logging.getLogger(__name__)

SECRETS_DIR_ENV = "AGENT_TREE_SECRETS_DIR"
DEFAULT_SECRETS_DIR = "/var/run/secrets/agent-tree"


class ModelConfigError(ValueError):
    """A model agent that cannot be called as configured (no API key, ...); the message says what to set."""


def env_key_name(agent_name: str) -> str:
    """``AGENT_TREE_MODEL_API_KEY_<AGENT>``: the per-agent API key variable (dashes become underscores)."""
    return "AGENT_TREE_MODEL_API_KEY_" + re.sub(r"[^A-Za-z0-9]", "_", agent_name).upper()


def api_key(agent: AgentSpec, env: typing.Mapping[str, str] | None = None) -> str:
    """The agent's API key: its own variable, its mounted Secret key, then the shared variables.

    Raises:
        ModelConfigError: naming what to set.
    """
    env = os.environ if env is None else env
    own = env_key_name(agent.name)
    if env.get(own):
        return env[own]
    ref = agent.model.apiKeySecretRef if agent.model else None
    if ref is not None:
        path = Path(env.get(SECRETS_DIR_ENV) or DEFAULT_SECRETS_DIR) / ref.name / ref.key
        if path.is_file():
            return path.read_text().strip()
    for name in ("AGENT_TREE_MODEL_API_KEY", "OPENAI_API_KEY"):
        if env.get(name):
            return env[name]
    secret = f", or mount Secret {ref.name!r} key {ref.key!r} under ${SECRETS_DIR_ENV}" if ref else ""
    raise ModelConfigError(
        f"no API key for model agent {agent.name!r}: set {own} (or AGENT_TREE_MODEL_API_KEY){secret}"
    )


REDACTED = "[redacted API key]"


def redact(agent: AgentSpec, text: str, env: typing.Mapping[str, str] | None = None) -> str:
    """``text`` without the agent's API key (an endpoint's error may quote the key it was given)."""
    try:
        key = api_key(agent, env)
    except ModelConfigError:
        return text
    return text.replace(key, REDACTED) if len(key) >= 4 else text


def base_url(agent: AgentSpec, env: typing.Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    return (
        (agent.model.baseUrl if agent.model else None)
        or env.get("AGENT_TREE_MODEL_BASE_URL")
        or env.get("OPENAI_BASE_URL")
        or None
    )


_clients: dict[tuple[Any, ...], Any] = {}


def client_for(agent: AgentSpec, *, max_retries: int = 2) -> Any:
    """An ``openai.AsyncOpenAI`` for the agent's endpoint (cached per endpoint, key and event loop)."""
    # Imported on first use: the operator reads env_key_name from here without loading the SDK.
    from openai import AsyncOpenAI

    key = (base_url(agent), api_key(agent), max_retries, id(asyncio.get_running_loop()))
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = AsyncOpenAI(base_url=key[0], api_key=key[1], max_retries=max_retries, timeout=120)
    return client


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


def parameters_from_signature(func: Callable[..., Any]) -> dict[str, Any]:
    """A JSON Schema for a tool's keyword arguments, from its signature and type hints."""
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        hints = {}
    props: dict[str, Any] = {}
    required = []
    extra = False
    for name, param in inspect.signature(func).parameters.items():
        if param.kind is param.VAR_KEYWORD:
            extra = True
            continue
        if param.kind is param.VAR_POSITIONAL:
            continue
        hint = typing.get_origin(hints.get(name)) or hints.get(name)
        props[name] = {"type": _JSON_TYPES[hint]} if hint in _JSON_TYPES else {}
        if param.default is param.empty:
            required.append(name)
    return {"type": "object", "properties": props, "required": required, "additionalProperties": extra}


def tool_definitions(agent: AgentSpec, resolve: Callable[[str], Callable[..., Any]] = registry.resolve) -> list[dict]:
    """The ``tools`` parameter of a Chat Completions request for the agent's tools."""
    out = []
    for tool in agent.tools:
        if tool.agent is not None:
            params = tool.parameters or {
                "type": "object",
                "properties": {"input": {"type": "string", "description": "The request for the agent."}},
                "required": ["input"],
            }
            description = tool.description or f"Ask the {tool.agent} agent."
        else:
            func = resolve(tool.entrypoint)  # type: ignore[arg-type]
            params = tool.parameters or parameters_from_signature(func)
            description = tool.description or (inspect.getdoc(func) or "").split("\n")[0]
        out.append(
            {"type": "function", "function": {"name": tool.name, "description": description, "parameters": params}}
        )
    return out


OnDelta = Callable[[str], Awaitable[None] | None]
"""Called with each piece of content text as the model generates it (sync or async)."""

_no_streaming: set[tuple[str | None, str]] = set()
"""(endpoint, model) pairs that refused or ignored ``stream=True``: called without streaming since."""


async def call_model(
    agent: AgentSpec,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    *,
    max_retries: int = 2,
    on_delta: OnDelta | None = None,
) -> dict[str, Any]:
    """One Chat Completions call; returns ``{"content", "tool_calls", "usage", "finish_reason", "model"}``.

    With ``on_delta`` (and ``model.stream`` not false) the call streams (``stream=True``, usage
    included) and ``on_delta`` gets each content delta; the reply is assembled into the same dict.
    An endpoint that answers 400 naming ``stream``, or streams no chunk at all, is called again once
    without streaming, and without streaming from then on (per endpoint and model, per process).
    """
    assert agent.model is not None, f"agent {agent.name!r} has no model"
    model = agent.model.model_dump(mode="json")
    # The run's maxTokens / maxCostUSD, this call's max_tokens reserved; the caller reports what it
    # used (usage.report_model_usage), which counts it in the run's ledger.
    ledger.check_model_call(model)
    kwargs: dict[str, Any] = {"model": agent.model.name, "messages": messages}
    if tools:
        kwargs["tools"] = tools
    if agent.model.temperature is not None:
        kwargs["temperature"] = agent.model.temperature
    if agent.model.maxTokens is not None:
        kwargs["max_tokens"] = agent.model.maxTokens
    client = client_for(agent, max_retries=max_retries)
    endpoint = (base_url(agent), agent.model.name)
    if on_delta is not None and agent.model.stream is not False and endpoint not in _no_streaming:
        try:
            return await _streamed(client, kwargs, on_delta)
        except _NoStreaming as exc:
            log.warning(
                "model %r at %s: %s; calling it without streaming from now on (set model.stream: false to "
                "skip the attempt)",
                endpoint[1],
                endpoint[0] or "the default endpoint",
                exc,
            )
            _no_streaming.add(endpoint)
    response = await client.chat.completions.create(**kwargs)
    if not response.choices:
        raise ValueError(f"the endpoint returned no choices for agent {agent.name!r}")
    choice = response.choices[0]
    message = choice.message
    usage = response.usage
    return {
        "content": message.content,
        "tool_calls": [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in (message.tool_calls or [])
            if getattr(c, "function", None) is not None
        ],
        "usage": {
            "prompt_tokens": _count(getattr(usage, "prompt_tokens", 0)),
            "completion_tokens": _count(getattr(usage, "completion_tokens", 0)),
            "total_tokens": _count(getattr(usage, "total_tokens", 0)),
        },
        "finish_reason": choice.finish_reason,
        "model": response.model,
    }


class _NoStreaming(Exception):
    """The endpoint cannot stream (refused it, or sent no chunk): call it without streaming."""


async def _streamed(client: Any, kwargs: dict[str, Any], on_delta: OnDelta) -> dict[str, Any]:
    try:
        stream = await client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    except Exception as exc:  # openai.BadRequestError; the SDK is imported only where a client is made
        if getattr(exc, "status_code", None) == 400 and "stream" in str(exc).lower():
            raise _NoStreaming(f"streaming refused ({exc})") from exc
        raise
    reply = ReplyAssembler()
    async with stream:
        async for chunk in stream:
            text = reply.add(chunk)
            if text:
                pending = on_delta(text)
                if inspect.isawaitable(pending):
                    await pending
    if reply.chunks == 0:
        raise _NoStreaming("the streamed reply had no chunk")
    return reply.reply()


def _count(value: Any) -> int:
    """A token count as the endpoint reported it, or 0 when it is not a count (``"many"``, -5, 1.5):
    the workflow adds these up, and a string there would fail it."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
