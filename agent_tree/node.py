"""AgentNode: one agent of a tree, with its children, its tools and its behaviour."""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agent_tree import ledger
from agent_tree.calls import error_message, maybe_await
from agent_tree.context import RunContext
from agent_tree.idempotency import calling
from agent_tree.models import HandoffResult, ToolResult
from agent_tree.turns import run_turn

__all__ = ["AgentNode", "Behaviour", "Tool", "error_message", "maybe_await"]

Behaviour = Callable[[RunContext], "HandoffResult | dict[str, Any] | Awaitable[HandoffResult | dict[str, Any]]"]


@dataclass
class Tool:
    """A named tool. ``func`` is None for a tool registered by name only (declared, not runnable)."""

    name: str
    func: Callable[..., Any] | None = None
    description: str = ""
    agent: AgentNode | None = None
    approval: dict[str, Any] | None = None
    """The tool spec's ``approval`` block (``{"required": True, "timeoutSeconds": ..., "onTimeout": ...}``):
    each call waits for the run's approver (see agent_tree.approval_gate)."""

    async def __call__(self, **kwargs: Any) -> Any:
        if self.func is None:
            raise LookupError(f"tool {self.name!r} is registered by name only; give it a callable")
        return await maybe_await(self.func(**kwargs))


class AgentNode:
    """One agent: a name, children it can hand off to, tools it can call, and a behaviour.

    Args:
        name: unique name within the tree.
        behaviour: ``callable(ctx: RunContext) -> HandoffResult`` (sync or async). A node without a
            behaviour but with children acts as a supervisor of those children.
        description: what the agent is for (shown to routing models and in ``visualize``-like UIs).
        instructions: the agent's system prompt, for model-backed agents.
    """

    def __init__(
        self,
        name: str,
        behaviour: Behaviour | None = None,
        *,
        description: str = "",
        instructions: str = "",
        output_schema: dict[str, Any] | None = None,
    ) -> None:
        if not name or not isinstance(name, str):
            raise ValueError("AgentNode name must be a non-empty string")
        self.name = name
        self.behaviour = behaviour
        self.description = description
        self.instructions = instructions
        self.output_schema = output_schema
        self.children: list[AgentNode] = []
        self.tools: dict[str, Tool] = {}
        self.parent: AgentNode | None = None

    def __repr__(self) -> str:
        return f"AgentNode({self.name!r}, children={[c.name for c in self.children]}, tools={list(self.tools)})"

    def add_child(self, child: AgentNode) -> AgentNode:
        """Make ``child`` a handoff target of this node. Returns the child, for chaining."""
        if child is self:
            raise ValueError(f"agent {self.name!r} cannot be its own child")
        if any(c.name == child.name for c in self.children):
            raise ValueError(f"agent {self.name!r} already has a child named {child.name!r}")
        child.parent = self
        self.children.append(child)
        return child

    def add_tool(self, tool: Callable[..., Any] | str | Tool, name: str | None = None, description: str = "") -> Tool:
        """Register a tool: a callable (named after the function), a bare name, or a :class:`Tool`."""
        if isinstance(tool, Tool):
            entry = tool
        elif isinstance(tool, str):
            entry = Tool(name=name or tool, description=description)
        elif callable(tool):
            entry = Tool(
                name=name or getattr(tool, "__name__", type(tool).__name__),
                func=tool,
                description=description or (inspect.getdoc(tool) or "").split("\n")[0],
            )
        else:
            raise TypeError(f"add_tool expects a callable, a name or a Tool, got {type(tool).__name__}")
        if name and entry.name != name:
            entry = Tool(
                name=name, func=entry.func, description=entry.description, agent=entry.agent, approval=entry.approval
            )
        self.tools[entry.name] = entry
        return entry

    def set_behaviour(self, behaviour: Behaviour) -> Behaviour:
        """Give the node its behaviour; usable as a decorator."""
        self.behaviour = behaviour
        return behaviour

    def as_tool(self, name: str | None = None, description: str = "") -> Tool:
        """Expose this agent as a tool another agent can call (the OpenAI Agents SDK's ``as_tool``).

        Calling the tool runs one turn of this agent on ``input`` (plus any keyword arguments as
        context) and returns its HandoffResult as a dict.
        """
        node = self

        async def _agent_tool(input: str = "", **context: Any) -> dict[str, Any]:
            ledger.check_turn()  # an agent called as a tool takes a turn of the run's budget
            result = await run_turn(node, input, context)
            return result.model_dump(mode="json")

        return Tool(
            name=name or self.name,
            func=_agent_tool,
            description=description or self.description or f"Ask the {self.name} agent",
            agent=self,
        )

    async def run_tool(self, name: str, **kwargs: Any) -> ToolResult:
        """Call tool ``name``. Never raises: failures come back as ``ToolResult(status="error")``."""
        started = time.perf_counter()
        tool = self.tools.get(name)
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "none"
            return ToolResult(
                tool_name=name,
                status="error",
                error=f"agent {self.name!r} has no tool {name!r} (its tools: {known})",
                duration_ms=0.0,
            )
        try:
            with calling():  # the call's idempotency key (agent_tree.call_key)
                output = await tool(**kwargs)
        except Exception as exc:
            return ToolResult(
                tool_name=name,
                status="error",
                error=error_message(exc),
                duration_ms=(time.perf_counter() - started) * 1000,
            )
        return ToolResult(tool_name=name, output=output, duration_ms=(time.perf_counter() - started) * 1000)

    def walk(self):
        """This node and all its descendants, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()
