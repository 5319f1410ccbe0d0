"""Compile an AgentTree manifest into AgentNodes, so any manifest runs in-process."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent_tree import registry
from agent_tree.node import AgentNode, Tool
from agent_tree.orchestrator import Planner, SupervisorOrchestrator
from agent_tree.providers.embedded import make_behaviour, make_router
from agent_tree.spec import AgentSpec, AgentTreeSpec
from agent_tree.tree import AgentTree

Resolver = Callable[[str], Callable[..., Any]]


class CompileError(ValueError):
    """A manifest that validates but cannot be turned into running agents (e.g. an import fails)."""


@dataclass
class CompiledTree:
    """An AgentTree built from a manifest, plus the run settings the manifest carries."""

    tree: AgentTree
    spec: AgentTreeSpec
    planner: Planner | None
    max_steps: int

    def orchestrator(self, **kwargs: Any) -> SupervisorOrchestrator:
        kwargs.setdefault("max_steps", self.max_steps)
        kwargs.setdefault("planner", self.planner)
        return SupervisorOrchestrator(self.tree, **kwargs)


def agent_behaviour(agent: AgentSpec, resolve: Resolver = registry.resolve) -> Callable[..., Any] | None:
    """The behaviour of one agent: its Python entrypoint, its model provider, or None (supervisor)."""
    if agent.entrypoint is not None:
        return resolve(agent.entrypoint)
    if agent.model is not None:
        return make_behaviour(agent)
    return None


def compile_tree(spec: AgentTreeSpec, name: str = "agent-tree", resolve: Resolver = registry.resolve) -> CompiledTree:
    """Build AgentNodes for every agent of ``spec``, resolving entrypoints with ``resolve``.

    Raises:
        CompileError: naming the field whose entrypoint cannot be resolved.
    """
    nodes: dict[str, AgentNode] = {}
    for i, agent in enumerate(spec.agents):
        try:
            behaviour = agent_behaviour(agent, resolve)
        except registry.EntrypointError as exc:
            raise CompileError(f"spec.agents[{i}].entrypoint: {exc}") from exc
        node = AgentNode(
            agent.name,
            behaviour,
            description=agent.description,
            instructions=agent.instructions,
            output_schema=agent.outputSchema,
        )
        node.spec = agent  # type: ignore[attr-defined]
        nodes[agent.name] = node
    for i, agent in enumerate(spec.agents):
        node = nodes[agent.name]
        for child in agent.children:
            node.add_child(nodes[child])
        for t, tool in enumerate(agent.tools):
            approval = tool.approval.model_dump(mode="json") if tool.approval is not None else None
            if tool.agent is not None:
                node.add_tool(nodes[tool.agent].as_tool(tool.name, tool.description)).approval = approval
                continue
            try:
                func = resolve(tool.entrypoint)  # type: ignore[arg-type]
            except registry.EntrypointError as exc:
                raise CompileError(f"spec.agents[{i}].tools[{t}].entrypoint: {exc}") from exc
            node.add_tool(
                Tool(name=tool.name, func=func, description=tool.description or _doc(func), approval=approval)
            )
    planner = None
    if spec.planner:
        try:
            planner = resolve(spec.planner)
        except registry.EntrypointError as exc:
            raise CompileError(f"spec.planner: {exc}") from exc
    root = spec.agent(spec.root)
    if planner is None and root.model is not None and root.children:
        # A model-backed supervisor routes by asking its model (transfer_to_<child> tools); the answer is
        # the plan, so agent_tree.policy keeps taking every routing decision.
        planner = make_router(root, [(c, spec.agent(c).description) for c in root.children])
    return CompiledTree(AgentTree(nodes[spec.root], name=name), spec, planner, spec.maxSteps)


def _doc(func: Callable[..., Any]) -> str:
    return (inspect.getdoc(func) or "").split("\n")[0]
