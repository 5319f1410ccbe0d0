"""The model agent's loop as a pure, deterministic state machine.

model -> tool calls -> model ... -> final answer, with structured output checked against
``outputSchema`` and a bounded repair retry (:func:`start`, :func:`next_action`, :func:`observe_model`,
:func:`observe_tool`). The embedded behaviour (:mod:`.embedded`) and the durable workflow both drive
it, so they take the same steps; only who performs a model or tool call differs (a direct call through
:mod:`.openai_client`, or an activity). No I/O here: the workflow sandbox passes this module through.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from agent_tree import usage
from agent_tree.providers.replies import interpret_final, tool_message_content

__all__ = [
    "CallModel",
    "CallTools",
    "ChatState",
    "Done",
    "ToolCall",
    "error_result",
    "interpret_final",
    "next_action",
    "observe_model",
    "observe_tool",
    "start",
    "tool_message_content",
]


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
    except RecursionError:  # "[[[[..." thousands deep (this runs in the workflow: it must not raise)
        return {}, f"the arguments are nested too deeply to be read: {str(raw)[:200]}"
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


def error_result(call: ToolCall) -> dict[str, Any]:
    return {"tool_name": call.name, "output": None, "status": "error", "error": call.error, "duration_ms": 0.0}
