"""Model-backed agents through any OpenAI-compatible Chat Completions endpoint.

Two halves, like :mod:`agent_tree.policy`:

- The agent loop as a pure, deterministic state machine (:func:`start`, :func:`next_action`,
  :func:`observe_model`, :func:`observe_tool`): model -> tool calls -> model ... -> final answer,
  with structured output checked against ``outputSchema`` and a bounded repair retry. The embedded
  behaviour (:func:`make_behaviour`) and the durable ``AgentWorkflow`` both drive it, so they take
  the same steps; only who performs a model or tool call differs (a direct call, or an activity).
- I/O helpers: endpoint and API key resolution, tool definitions, :func:`call_model` with the
  official ``openai`` client.

A model-backed agent with children is a supervisor: its model is asked once which child to hand
off to (``transfer_to_<child>`` tools, see :func:`make_router`); the answer becomes the run's plan,
and :mod:`agent_tree.policy` routes from there (a plan can reorder children, never hide one).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_tree import output_schema, registry, usage
from agent_tree.spec import AgentSpec

if TYPE_CHECKING:
    from agent_tree.context import RunContext
    from agent_tree.models import HandoffResult

HANDOFF_STATUSES = ("ok", "needs_more_info", "failed")
TRANSFER_PREFIX = "transfer_to_"
SUMMARY_LIMIT = 4000
MAX_OUTPUT_BYTES = 256 * 1024
SECRETS_DIR_ENV = "AGENT_TREE_SECRETS_DIR"
DEFAULT_SECRETS_DIR = "/var/run/secrets/agent-tree"


class ModelConfigError(ValueError):
    """A model agent that cannot be called as configured (no API key, ...); the message says what to set."""


# --- the pure loop ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """One tool call the model asked for; ``error`` is set when it cannot run (unknown tool, bad args)."""

    id: str
    name: str
    args: dict[str, Any]
    error: str | None = None


@dataclass(frozen=True)
class CallModel:
    """Next: call the model with the state's messages."""


@dataclass(frozen=True)
class CallTools:
    """Next: run these tool calls (in order) and feed each result to :func:`observe_tool`."""

    calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class Done:
    """The turn is over; hand this back to the supervisor."""

    status: str
    summary: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class ChatState:
    agent: str
    tools: tuple[str, ...]
    schema: dict[str, Any] | None
    max_turns: int
    max_repairs: int
    messages: tuple[dict[str, Any], ...]
    turns: int = 0
    repairs: int = 0
    pending: tuple[ToolCall, ...] = ()
    done: Done | None = None
    tokens: int = 0
    tool_calls: tuple[str, ...] = ()
    tool_results: tuple[dict[str, Any], ...] = ()
    reasoning: tuple[str, ...] = field(default=())
    # Tools that are agents: their tool calls and tokens count in this turn's traces (observe_tool).
    agent_tools: tuple[str, ...] = ()

    def traces(self) -> dict[str, Any]:
        """The turn's HandoffTraces as a dict."""
        return {
            "tool_calls": list(self.tool_calls),
            "tool_results": list(self.tool_results),
            "reasoning_steps": list(self.reasoning),
            "token_usage": self.tokens,
        }


def system_prompt(agent: dict[str, Any]) -> str:
    text = agent.get("instructions") or f"You are the {agent['name']} agent. {agent.get('description') or ''}".strip()
    if agent.get("outputSchema"):
        text += (
            "\n\nWhen you are done, reply with only a JSON object (no prose, no code fence) that satisfies "
            f"this JSON Schema:\n{json.dumps(agent['outputSchema'], sort_keys=True)}"
        )
    return text


def user_message(user_input: str, context: dict[str, Any] | None) -> str:
    if not context:
        return user_input
    return f"{user_input}\n\nContext (JSON):\n{json.dumps(context, sort_keys=True, default=str)}"


def start(agent: dict[str, Any], user_input: str, context: dict[str, Any] | None = None) -> ChatState:
    """Initial state of one turn of the model agent ``agent`` (an AgentSpec as a JSON dict)."""
    model = agent.get("model") or {}
    return ChatState(
        agent=agent["name"],
        tools=tuple(t["name"] for t in agent.get("tools") or ()),
        agent_tools=tuple(t["name"] for t in agent.get("tools") or () if t.get("agent")),
        schema=agent.get("outputSchema"),
        max_turns=int(model.get("maxTurns") or 8),
        max_repairs=int(model.get("maxRepairs", 1)),
        messages=(
            {"role": "system", "content": system_prompt(agent)},
            {"role": "user", "content": user_message(user_input, context)},
        ),
    )


def next_action(state: ChatState) -> CallModel | CallTools | Done:
    """What to do next. Pure: the same state always gives the same action."""
    if state.done is not None:
        return state.done
    if state.pending:
        return CallTools(state.pending)
    return CallModel()


def _parse_args(raw: Any) -> tuple[dict[str, Any], str | None]:
    if isinstance(raw, dict):
        return raw, None
    try:
        value = json.loads(raw or "{}")
    except (TypeError, ValueError) as exc:
        return {}, f"the arguments are not valid JSON ({exc}): {str(raw)[:200]}"
    if not isinstance(value, dict):
        return {}, f"the arguments must be a JSON object, got {type(value).__name__}"
    return value, None


def observe_model(state: ChatState, response: dict[str, Any]) -> ChatState:
    """Fold one model response (``{"content", "tool_calls": [{"id", "name", "arguments"}], "usage"}``) in."""
    content = response.get("content")
    calls = response.get("tool_calls") or []
    usage = response.get("usage") or {}
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c.get("arguments") or ""}}
            for c in calls
        ]
    state = replace(
        state,
        messages=(*state.messages, message),
        turns=state.turns + 1,
        tokens=state.tokens + max(0, int(usage.get("total_tokens") or 0)),
    )
    if calls:
        pending = []
        for c in calls:
            args, error = _parse_args(c.get("arguments"))
            if c["name"] not in state.tools:
                known = ", ".join(state.tools) or "none"
                error = f"agent {state.agent!r} has no tool {c['name']!r} (its tools: {known})"
            pending.append(ToolCall(c["id"], c["name"], args, error))
        thoughts = (content,) if isinstance(content, str) and content.strip() else ()
        return replace(state, pending=tuple(pending), reasoning=(*state.reasoning, *thoughts))
    final = response.get("final") or interpret_final(state.schema, content)
    if not final["errors"]:
        return replace(state, done=Done(final["status"], final["summary"], final["payload"]))
    if state.repairs < state.max_repairs and state.turns < state.max_turns:
        lines = "\n".join(f"- {e}" for e in final["errors"])
        repair = {
            "role": "user",
            "content": f"Your reply does not satisfy the output schema:\n{lines}\n"
            "Reply again with only the corrected JSON object.",
        }
        return replace(state, messages=(*state.messages, repair), repairs=state.repairs + 1)
    errors = final["errors"]
    summary = (
        f"agent {state.agent!r} output does not match its outputSchema after {state.repairs} "
        f"repair attempt(s): {errors[0]}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
    )
    return replace(state, done=Done("failed", summary, {"validation_errors": errors}))


def tool_message_content(result: dict[str, Any]) -> Any:
    """What the model sees of a tool result: its output as text/JSON, or ``{"error": ...}``."""
    if result.get("status") == "error":
        return json.dumps({"error": result.get("error")})
    output = result.get("output")
    if isinstance(output, dict) and "$blob" in output:
        return output  # a stored large result, resolved by the caller just before the model call
    if isinstance(output, str):
        return output
    try:
        return json.dumps(output, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return json.dumps({"error": f"the tool returned a value that is not JSON ({type(output).__name__}): {exc}"})


def observe_tool(state: ChatState, call: ToolCall, result: dict[str, Any]) -> ChatState:
    """Fold one tool result (a ToolResult as a dict) in; an agent called as a tool adds its own
    tool calls and tokens to the turn's traces."""
    message = {"role": "tool", "tool_call_id": call.id, "content": tool_message_content(result)}
    pending = tuple(p for p in state.pending if p.id != call.id)
    inner = usage.agent_tool_traces(result.get("status", "ok"), result.get("output"))
    if call.name not in state.agent_tools or inner is None:
        inner = {}
    state = replace(
        state,
        messages=(*state.messages, message),
        pending=pending,
        tool_calls=(*state.tool_calls, call.name, *(inner.get("tool_calls") or ())),
        tool_results=(*state.tool_results, result, *(inner.get("tool_results") or ())),
        tokens=state.tokens + max(0, int(inner.get("token_usage") or 0)),
    )
    if not pending and state.turns >= state.max_turns:
        summary = f"agent {state.agent!r} stopped after maxTurns={state.max_turns} model calls without a final answer"
        return replace(state, done=Done("failed", summary, {}))
    return state


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def _parse_json(text: str) -> tuple[Any, str | None]:
    match = _FENCE.match(text.strip())
    body = match.group(1) if match else text
    try:
        return json.loads(body), None
    except ValueError as exc:
        return None, str(exc)


def _truncate(text: str, limit: int = SUMMARY_LIMIT) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… [{len(text) - limit} more characters]"


def interpret_final(schema: dict[str, Any] | None, content: Any) -> dict[str, Any]:
    """A final reply as ``{"status", "summary", "payload", "errors"}``; ``errors`` lists schema violations.

    Without an outputSchema a reply ``{"status": "needs_more_info"|"failed"|"ok", "summary": ..., "payload": {...}}``
    sets the handoff status; any other reply is an ``ok`` with the text as summary.
    """
    text = content if isinstance(content, str) else ""
    parsed, parse_error = _parse_json(text) if text.strip() else (None, "the reply is empty")
    errors: list[str] = []
    status, summary, payload = "ok", _truncate(text), parsed if isinstance(parsed, dict) else {}
    if schema is not None:
        if not isinstance(parsed, dict):
            why = parse_error or f"it is a JSON {type(parsed).__name__}"
            errors.append(f"the reply must be a JSON object: {why}")
        else:
            errors.extend(output_schema.validation_errors(schema, parsed))
            if isinstance(parsed.get("summary"), str):
                summary = _truncate(parsed["summary"])
    elif (
        isinstance(parsed, dict) and parsed.get("status") in HANDOFF_STATUSES and isinstance(parsed.get("summary"), str)
    ):
        status, summary = parsed["status"], _truncate(parsed["summary"])
        payload = (
            parsed["payload"]
            if isinstance(parsed.get("payload"), dict)
            else {k: v for k, v in parsed.items() if k not in ("status", "summary")}
        )
    size = len(json.dumps(payload, default=str))
    if size > MAX_OUTPUT_BYTES:
        errors.append(f"the output is {size} bytes of JSON; the limit is {MAX_OUTPUT_BYTES}")
        payload = {}
    return {"status": status, "summary": summary, "payload": payload, "errors": errors}


# --- routing for model-backed supervisors -------------------------------------------------------


def transfer_tool_name(child: str) -> str:
    return f"{TRANSFER_PREFIX}{child}"


def router_tools(children: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """One ``transfer_to_<child>`` function per child (name, description)."""
    return [
        {
            "type": "function",
            "function": {
                "name": transfer_tool_name(name),
                "description": f"Hand the request off to the {name} agent. {description}".strip(),
                "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}},
            },
        }
        for name, description in children
    ]


def router_messages(agent: dict[str, Any], user_input: str) -> list[dict[str, Any]]:
    system = (agent.get("instructions") or f"You are the {agent['name']} supervisor.") + (
        "\n\nDecide which agent should handle the request: call the transfer_to_<agent> function of the best "
        "agent (you may call several, best first)."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user_input}]


def plan_from_response(children: list[str], response: dict[str, Any]) -> dict[str, Any]:
    """The plan a routing reply gives: ``{"route": [children...], "reason": ...}``."""
    route = []
    for call in response.get("tool_calls") or []:
        name = call.get("name", "")
        child = name[len(TRANSFER_PREFIX) :] if name.startswith(TRANSFER_PREFIX) else None
        if child in children and child not in route:
            route.append(child)
    plan: dict[str, Any] = {"route": route}
    reason = response.get("content")
    if isinstance(reason, str) and reason.strip():
        plan["reason"] = _truncate(reason.strip(), 1000)
    if not route:
        plan["note"] = "the model chose no child; children are tried in tree order"
    return plan


def make_router(agent: AgentSpec, children: list[tuple[str, str]]) -> Callable[[str], Any]:
    """A planner (``async (user_input) -> plan``) that asks the supervisor's model which child to use."""
    agent_dict = agent.model_dump(mode="json")
    names = [name for name, _ in children]

    async def route(user_input: str) -> dict[str, Any]:
        response = await call_model(agent, router_messages(agent_dict, user_input), router_tools(children))
        await usage.report_model_usage(agent.name, response.get("usage"), response.get("model"))
        return plan_from_response(names, response)

    return route


# --- I/O: endpoint, tools, model calls ---------------------------------------------------------


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


async def call_model(
    agent: AgentSpec, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, *, max_retries: int = 2
) -> dict[str, Any]:
    """One Chat Completions call; returns ``{"content", "tool_calls", "usage", "finish_reason", "model"}``."""
    assert agent.model is not None, f"agent {agent.name!r} has no model"
    kwargs: dict[str, Any] = {"model": agent.model.name, "messages": messages}
    if tools:
        kwargs["tools"] = tools
    if agent.model.temperature is not None:
        kwargs["temperature"] = agent.model.temperature
    if agent.model.maxTokens is not None:
        kwargs["max_tokens"] = agent.model.maxTokens
    response = await client_for(agent, max_retries=max_retries).chat.completions.create(**kwargs)
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
            "prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
            "completion_tokens": getattr(usage, "completion_tokens", 0) or 0,
            "total_tokens": getattr(usage, "total_tokens", 0) or 0,
        },
        "finish_reason": choice.finish_reason,
        "model": response.model,
    }


# --- embedded behaviour ----------------------------------------------------------------------


def error_result(call: ToolCall) -> dict[str, Any]:
    return {"tool_name": call.name, "output": None, "status": "error", "error": call.error, "duration_ms": 0.0}


async def _call_tool(ctx: RunContext, call: ToolCall) -> dict[str, Any]:
    from agent_tree.models import ToolResult

    await ctx.hooks.fire("on_tool_start", call.name, call.args)
    if call.error is not None:
        result = ToolResult.model_validate(error_result(call))
    else:
        result = await ctx.tool_runner(ctx.node, call.name, dict(call.args))
    ctx.record_tool(call.name, result)
    await ctx.hooks.fire("on_tool_end", call.name, result)
    return {
        "tool_name": result.tool_name,
        "output": result.output,
        "status": result.status,
        "error": result.error,
        "duration_ms": result.duration_ms,
    }


async def run_chat(agent: AgentSpec, ctx: RunContext) -> HandoffResult:
    """One turn of a model agent in-process, driving the pure loop with direct calls."""
    from agent_tree.node import error_message

    try:
        tools = tool_definitions(agent)
    except registry.EntrypointError as exc:
        return ctx.failed(f"agent {agent.name!r}: {exc}")
    state = start(agent.model_dump(mode="json"), ctx.input, ctx.context)
    while True:
        action = next_action(state)
        if isinstance(action, Done):
            return ctx.handoff(action.status, action.summary, action.payload)  # type: ignore[arg-type]
        if isinstance(action, CallModel):
            try:
                response = await call_model(agent, list(state.messages), tools)
            except ModelConfigError as exc:
                return ctx.failed(str(exc))
            except Exception as exc:
                return ctx.failed(f"model call of agent {agent.name!r} failed: {error_message(exc)}")
            seen = len(state.reasoning)
            state = observe_model(state, response)
            ctx.add_tokens(int((response.get("usage") or {}).get("total_tokens") or 0))
            await usage.report_model_usage(agent.name, response.get("usage"), response.get("model"))
            for thought in state.reasoning[seen:]:
                await ctx.reason(thought)
            continue
        for call in action.calls:
            state = observe_tool(state, call, await _call_tool(ctx, call))


def make_behaviour(agent: AgentSpec) -> Callable[[RunContext], Any]:
    """The embedded behaviour of a model agent: the chat loop, or routing + supervision when it has children."""

    async def behaviour(ctx: RunContext) -> HandoffResult:
        if ctx.node.children:
            from agent_tree.context import supervisor_handoff
            from agent_tree.orchestrator import plan_thought, plan_with_usage, supervise

            children = [(c.name, c.description) for c in ctx.node.children]
            plan, calls = await plan_with_usage(make_router(agent, children), ctx.input)
            if plan is not None:
                await ctx.hooks.fire("on_reasoning_step", ctx.node.name, plan_thought(plan))
            sub = await supervise(
                ctx.node, ctx.input, ctx.context, hooks=ctx.hooks, plan=plan, tool_runner=ctx.tool_runner
            )
            return supervisor_handoff(ctx, sub, usage.total_tokens(calls))
        return await run_chat(agent, ctx)

    behaviour.__name__ = f"model_agent_{agent.name.replace('-', '_')}"
    behaviour.checks_own_output = True  # type: ignore[attr-defined]  # see agent_tree.context.run_turn
    return behaviour
