"""AgentTree: the root wrapper of a hierarchy of AgentNodes."""

from __future__ import annotations

from agent_tree.node import AgentNode


class AgentTree:
    """A tree of agents rooted at a supervisor."""

    def __init__(self, root: AgentNode, name: str = "agent-tree") -> None:
        self.root = root
        self.name = name
        seen: set[str] = set()
        for node in root.walk():
            if node.name in seen:
                raise ValueError(f"agent name {node.name!r} appears twice in the tree; names must be unique")
            seen.add(node.name)

    def find(self, name: str) -> AgentNode | None:
        """The node called ``name``, or None."""
        for node in self.root.walk():
            if node.name == name:
                return node
        return None

    def agents(self) -> list[AgentNode]:
        return list(self.root.walk())

    def visualize(self) -> str:
        """A text drawing of the tree, e.g.::

        supervisor (root) [tools: run_specialist]
        ├── triage
        └── invoice-specialist [tools: erp_lookup, policy_search]
        """
        lines = [self.root.name + " (root)" + _tools_suffix(self.root)]
        _draw(self.root, "", lines)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.visualize()


def _tools_suffix(node: AgentNode) -> str:
    return f" [tools: {', '.join(node.tools)}]" if node.tools else ""


def _draw(node: AgentNode, prefix: str, lines: list[str]) -> None:
    for index, child in enumerate(node.children):
        last = index == len(node.children) - 1
        lines.append(f"{prefix}{'└── ' if last else '├── '}{child.name}{_tools_suffix(child)}")
        _draw(child, prefix + ("    " if last else "│   "), lines)
