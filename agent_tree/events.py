"""Run events: one flat, JSON-ready record per hook call.

The CLI prints them, the durable runtime stores them in PostgreSQL and publishes them to Redis,
and tests compare embedded and durable runs by their event sequences. The vocabulary is the
contract's (:mod:`agent_tree.contract`, ``HOOK_STEP_TYPES``): ``agent_start``, ``agent_end``, ``handoff``,
``tool_start``, ``tool_end``, ``reasoning``, ``approval_requested``, ``approval_decided`` (the durable
executors add ``model_usage``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from agent_tree.approvals import decided_step_data
from agent_tree.contract import (
    AGENT_END,
    AGENT_START,
    APPROVAL_DECIDED,
    APPROVAL_REQUESTED,
    HANDOFF,
    HOOK_STEP_TYPES,
    REASONING,
    TOOL_END,
    TOOL_START,
)
from agent_tree.hooks import OrchestratorHooks
from agent_tree.models import HandoffResult, SupervisorResult, ToolResult

EVENT_TYPES = HOOK_STEP_TYPES

Sink = Callable[[dict[str, Any]], Awaitable[None]]


def preview(value: Any, limit: int = 200) -> str:
    """A one-line JSON preview of ``value``, cut at ``limit`` characters."""
    try:
        text = json.dumps(value, default=str, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def event_hooks(sink: Sink) -> OrchestratorHooks:
    """OrchestratorHooks that turn every hook call into an event dict passed to ``sink``."""

    async def node_start(node: Any, input: str) -> None:
        await sink({"type": AGENT_START, "agent": node.name, "input": input})

    async def node_end(node: Any, result: HandoffResult | SupervisorResult) -> None:
        await sink({"type": AGENT_END, "agent": node.name, "status": result.status, "summary": _summary(result)})

    async def handoff(result: HandoffResult) -> None:
        await sink(
            {
                "type": HANDOFF,
                "agent": result.from_agent,
                "to_agent": result.to_agent,
                "status": result.status,
                "summary": result.summary,
                "payload": result.payload,
            }
        )

    async def tool_start(tool_name: str, args: dict[str, Any]) -> None:
        await sink({"type": TOOL_START, "tool": tool_name, "args": args})

    async def tool_end(tool_name: str, result: ToolResult) -> None:
        await sink(
            {
                "type": TOOL_END,
                "tool": tool_name,
                "status": result.status,
                "output": result.output,
                "error": result.error,
            }
        )

    async def reasoning(agent_name: str, thought: str) -> None:
        await sink({"type": REASONING, "agent": agent_name, "thought": thought})

    async def approval_requested(request: Any) -> None:
        await sink({"type": APPROVAL_REQUESTED, **request.model_dump(mode="json")})

    async def approval_decided(request: Any, decision: Any) -> None:
        await sink({"type": APPROVAL_DECIDED, "agent": request.agent, **decided_step_data(decision, request.tool)})

    return OrchestratorHooks(
        node_start, node_end, handoff, tool_start, tool_end, reasoning, approval_requested, approval_decided
    )


def _summary(result: HandoffResult | SupervisorResult) -> str:
    return result.summary if isinstance(result, HandoffResult) else result.answer


def approval_request_text(data: dict[str, Any]) -> str:
    """``issue_refund({...}), expires 12:40:00, approvers: users alice; groups finance``."""
    text = f"{data.get('tool')}({preview(data.get('arguments'), 120)})"
    if data.get("expires_at"):
        text += f", expires {str(data['expires_at'])[11:19]} then {data.get('on_timeout', 'reject')}"
    who = data.get("approvers") or {}
    names = [f"users {', '.join(who['users'])}"] if who.get("users") else []
    names += [f"groups {', '.join(who['groups'])}"] if who.get("groups") else []
    return text + (f", approvers: {'; '.join(names)}" if names else "")


def approval_decision_text(data: dict[str, Any]) -> str:
    """``approved by alice (finance): ok by me`` / ``rejected by system:timeout: no decision ...``."""
    by = data.get("decided_by") or {}
    groups = f" ({', '.join(by['groups'])})" if by.get("groups") else ""
    verb = {"approve": "approved", "reject": "rejected"}.get(str(data.get("decision")), str(data.get("decision")))
    reason = f": {data['reason']}" if data.get("reason") else ""
    return f"{verb} by {by.get('username', '?')}{groups}{reason}"


def format_event(event: dict[str, Any]) -> str:
    """A readable one-line rendering of an event, for terminals and logs."""
    kind = event.get("type")
    agent = event.get("agent", "")
    if kind == AGENT_START:
        return f"> {agent} started: {preview(event.get('input', ''), 120)}"
    if kind == AGENT_END:
        return f"< {agent} ended [{event.get('status')}]: {event.get('summary', '')}"
    if kind == HANDOFF:
        return f"~ handoff {agent} -> {event.get('to_agent')} [{event.get('status')}]: {event.get('summary', '')}"
    if kind == TOOL_START:
        return f"  * tool {event.get('tool')}({preview(event.get('args', {}), 160)})"
    if kind == TOOL_END:
        if event.get("status") == "error":
            return f"  ! tool {event.get('tool')} failed: {event.get('error')}"
        if event.get("status") == "rejected":
            return f"  x tool {event.get('tool')} not run: {event.get('error')}"
        return f"  = tool {event.get('tool')} -> {preview(event.get('output'), 160)}"
    if kind == REASONING:
        return f"  . {agent} thinks: {event.get('thought', '')}"
    if kind == APPROVAL_REQUESTED:
        return f"  ? approval {event.get('id')}: {agent} asks to call {approval_request_text(event)}"
    if kind == APPROVAL_DECIDED:
        return f"  ! approval {event.get('id')}: {approval_decision_text(event)}"
    return preview(event)
