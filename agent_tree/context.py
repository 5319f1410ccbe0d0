"""RunContext: what an agent's behaviour receives during its turn.

This module sits below :mod:`agent_tree.node`: it knows an agent only as the :class:`Agent` protocol
(what a turn reads of an :class:`~agent_tree.node.AgentNode`), so the core's imports point one way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from agent_tree import approval_gate, ledger, usage
from agent_tree.hooks import OrchestratorHooks
from agent_tree.models import HandoffResult, HandoffStatus, HandoffTraces, ToolResult


class Agent(Protocol):
    """What running a turn needs of an agent (an :class:`~agent_tree.node.AgentNode`)."""

    name: str
    behaviour: Callable[..., Any] | None
    output_schema: dict[str, Any] | None

    @property
    def children(self) -> Sequence[Agent]: ...

    @property
    def tools(self) -> Mapping[str, Any]: ...

    async def run_tool(self, name: str, **kwargs: Any) -> ToolResult: ...


ToolRunner = Callable[[Agent, str, dict[str, Any]], Awaitable[ToolResult]]


async def _direct_tool_runner(node: Agent, name: str, args: dict[str, Any]) -> ToolResult:
    return await node.run_tool(name, **args)


class RunContext:
    """The view of a run an agent gets during its turn.

    Agents call tools through :meth:`call_tool` (so hooks fire, traces are recorded and, in durable
    mode, each call is journaled), record thoughts with :meth:`reason`, and end their turn by
    returning :meth:`ok`, :meth:`needs_more_info` or :meth:`failed` (or any HandoffResult).
    """

    def __init__(
        self,
        node: Agent,
        input: str,
        context: dict[str, Any] | None = None,
        *,
        plan: dict[str, Any] | None = None,
        step: int = 0,
        hooks: OrchestratorHooks | None = None,
        tool_runner: ToolRunner | None = None,
        to_agent: str = "supervisor",
        max_steps: int = 10,
        deadline: float | None = None,
    ) -> None:
        self.node = node
        self.input = input
        self.context: dict[str, Any] = dict(context or {})
        self.plan = plan
        self.step = step
        self.hooks = hooks or OrchestratorHooks()
        self.tool_runner = tool_runner or _direct_tool_runner
        self.to_agent = to_agent
        # A nested supervisor below this turn routes under the run's limits (see agent_tree.policy).
        self.max_steps = max_steps
        self.deadline = deadline
        self.traces = HandoffTraces()

    @property
    def agent_name(self) -> str:
        return self.node.name

    async def call_tool(self, name: str, **args: Any) -> ToolResult:
        """Call one of this agent's tools; never raises (errors come back in the ToolResult), except
        :class:`~agent_tree.ledger.BudgetStop` when the run's ``maxToolCalls`` allows no more calls.

        A tool that requires approval runs only once the run's approver approved the call; a rejected
        call returns ``ToolResult(status="rejected")`` naming who rejected it and why.
        """
        ledger.check_tool_call()  # before asking anyone: a call the budget refuses is not put to a person
        refused = await approval_gate.check(self.node, name, args)
        await self.hooks.fire("on_tool_start", name, args)
        result = refused or await self.tool_runner(self.node, name, args)
        self.record_tool(name, result)
        await self.hooks.fire("on_tool_end", name, result)
        return result

    def record_tool(self, name: str, result: ToolResult) -> None:
        """Add a tool call to the turn's traces; an agent called as a tool adds its own tool calls
        and tokens too, so they count in this turn and in the run."""
        self.traces.tool_calls.append(name)
        self.traces.tool_results.append(result)
        tool = self.node.tools.get(name)
        inner = usage.agent_tool_traces(result.status, result.output) if tool and tool.agent else None
        if inner is not None:
            self.traces.tool_calls.extend(inner.get("tool_calls") or [])
            self.traces.tool_results.extend(
                ToolResult.model_validate(r, strict=False) for r in inner.get("tool_results") or []
            )
            self.add_tokens(int(inner.get("token_usage") or 0))

    async def reason(self, thought: str) -> None:
        """Record a reasoning step (fires ``on_reasoning_step``)."""
        self.traces.reasoning_steps.append(thought)
        await self.hooks.fire("on_reasoning_step", self.node.name, thought)

    def add_tokens(self, count: int) -> None:
        self.traces.token_usage += max(0, int(count))

    def handoff(
        self,
        status: HandoffStatus,
        summary: str,
        payload: dict[str, Any] | None = None,
        artifacts: list[str] | None = None,
    ) -> HandoffResult:
        return HandoffResult(
            from_agent=self.node.name,
            to_agent=self.to_agent,
            status=status,
            summary=summary,
            payload=dict(payload or {}),
            artifacts=list(artifacts or []),
            traces=self.traces.model_copy(deep=True),
        )

    def ok(self, summary: str, payload: dict[str, Any] | None = None, **kw: Any) -> HandoffResult:
        return self.handoff("ok", summary, payload, **kw)

    def needs_more_info(self, summary: str, payload: dict[str, Any] | None = None, **kw: Any) -> HandoffResult:
        return self.handoff("needs_more_info", summary, payload, **kw)

    def failed(self, summary: str, payload: dict[str, Any] | None = None, **kw: Any) -> HandoffResult:
        return self.handoff("failed", summary, payload, **kw)
