"""agent_tree: supervised trees of agents with typed handoffs, run in-process or durably."""

from agent_tree.context import RunContext
from agent_tree.hooks import OrchestratorHooks
from agent_tree.idempotency import call_key
from agent_tree.models import HandoffResult, HandoffTraces, SupervisorResult, ToolResult
from agent_tree.node import AgentNode, Tool
from agent_tree.orchestrator import SupervisorOrchestrator
from agent_tree.tree import AgentTree
from agent_tree.turns import run_turn

__all__ = [
    "AgentNode",
    "AgentTree",
    "HandoffResult",
    "HandoffTraces",
    "OrchestratorHooks",
    "RunContext",
    "SupervisorOrchestrator",
    "SupervisorResult",
    "Tool",
    "ToolResult",
    "call_key",
    "run_turn",
]

__version__ = "0.1.0"
