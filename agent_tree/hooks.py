"""OrchestratorHooks: the lifecycle callbacks of a run (agents, tools, reasoning, approvals)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Hook = Callable[..., Awaitable[None]]


@dataclass
class OrchestratorHooks:
    """Async callbacks fired during a run. Every hook is optional.

    - ``on_node_start(node, input)`` / ``on_node_end(node, result)``: an agent's turn begins / ends
      (``result`` is the child's HandoffResult, or the SupervisorResult for the root).
    - ``on_handoff(result)``: a child handed control back with a HandoffResult.
    - ``on_tool_start(tool_name, args)`` / ``on_tool_end(tool_name, result)``: around each tool call.
    - ``on_reasoning_step(agent_name, thought)``: an agent (or the planner) recorded a thought.
    - ``on_approval_requested(request)`` / ``on_approval_decided(request, decision)``: a tool call that
      requires approval waits for the run's approval callback / was decided (or timed out).

    A hook that raises is logged and ignored: observability must never change a run's outcome.
    """

    on_node_start: Hook | None = None
    on_node_end: Hook | None = None
    on_handoff: Hook | None = None
    on_tool_start: Hook | None = None
    on_tool_end: Hook | None = None
    on_reasoning_step: Hook | None = None
    on_approval_requested: Hook | None = None
    on_approval_decided: Hook | None = None

    async def fire(self, name: str, *args: Any) -> None:
        hook = getattr(self, name)
        if hook is None:
            return
        try:
            await hook(*args)
        except BrokenPipeError:
            raise
        except Exception:
            log.exception("hook %s raised; the run continues", name)

    @classmethod
    def combine(cls, *many: OrchestratorHooks | None) -> OrchestratorHooks:
        """One hooks object that fires each of ``many`` in order."""
        present = [h for h in many if h is not None]
        combined = cls()
        for field in (
            "on_node_start",
            "on_node_end",
            "on_handoff",
            "on_tool_start",
            "on_tool_end",
            "on_reasoning_step",
            "on_approval_requested",
            "on_approval_decided",
        ):
            if any(getattr(h, field) for h in present):
                setattr(combined, field, _chain(field, present))
        return combined


def _chain(field: str, hooks: list[OrchestratorHooks]) -> Hook:
    async def chained(*args: Any) -> None:
        for h in hooks:
            await h.fire(field, *args)

    return chained
