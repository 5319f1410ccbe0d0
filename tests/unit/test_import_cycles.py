"""No import cycle inside ``agent_tree`` (issue 11 item 4).

Every ``import`` / ``from`` statement counts: at module level, inside functions (an import moved
into a function to dodge a cycle is still a cycle) and under ``if TYPE_CHECKING``. Importing a
submodule does not count as importing its parent package's ``__init__`` (Python runs it first
anyway, whoever imports what).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "agent_tree"


def modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``package``."""
    out = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (anywhere in its file)."""
    mods = modules(package)
    top = package.name

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(known(a.name) for a in node.names if a.name.split(".")[0] == top)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                if base.split(".")[0] != top:
                    continue
                for alias in node.names:
                    # `from pkg import submodule` imports the submodule; `from pkg import name` the package.
                    edges.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in mods else known(base))
        edges.discard(None)
        edges.discard(name)
        graph[name] = edges  # type: ignore[assignment]
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path a -> ... -> a) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(path_within(graph, set(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def path_within(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A readable cycle through ``component``: start at its first module, walk until a repeat."""
    start = min(component)
    path = [start]
    while True:
        nxt = min(w for w in graph[path[-1]] if w in component)
        if nxt in path:
            return [*path[path.index(nxt) :], nxt]
        path.append(nxt)


def test_agent_tree_has_no_import_cycle():
    found = cycles(import_graph(PACKAGE))
    assert not found, "import cycles in agent_tree (break each by moving code down a layer):\n" + "\n".join(
        " -> ".join(c) for c in found
    )


def test_the_graph_sees_imports_hidden_in_functions_and_type_checking(tmp_path: Path):
    pkg = tmp_path / "demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from demo.a import A\n")
    (pkg / "a.py").write_text("from demo import b\nclass A: ...\n")
    (pkg / "b.py").write_text("def f():\n    from demo.a import A\n    return A\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import d\n")
    (pkg / "d.py").write_text("import demo.c\n")
    graph = import_graph(pkg)
    assert graph["demo.a"] == {"demo.b"}
    assert graph["demo"] == {"demo.a"}
    assert sorted(cycles(graph)) == [["demo.a", "demo.b", "demo.a"], ["demo.c", "demo.d", "demo.c"]]


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph.get(name, ()))
    return seen


def test_the_pure_chat_loop_reaches_no_client_and_no_io():
    """The workflow sandbox passes agent_tree through: the loop must not pull in the HTTP client,
    the embedded behaviour, or modules that do I/O (issue 11 item 4)."""
    loop = reachable(import_graph(PACKAGE), "agent_tree.providers.openai_chat")
    assert loop <= {
        "agent_tree.providers.openai_chat",
        "agent_tree.providers.replies",
        "agent_tree.usage",
        "agent_tree.output_schema",
        # usage counts reported model calls in the run's budget ledger; both are pure (no I/O)
        "agent_tree.ledger",
        "agent_tree.policy",
        "agent_tree.models",
    }, sorted(loop)
    for name in loop:
        tree = ast.parse(modules(PACKAGE)[name].read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & {"os", "pathlib", "socket", "openai", "httpx", "asyncio", "subprocess"}, name


def test_each_provider_module_is_one_concern_under_250_lines():
    for path in sorted((PACKAGE / "providers").glob("*.py")):
        assert len(path.read_text().splitlines()) < 250, path.name
