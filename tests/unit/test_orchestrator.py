"""The embedded executor: hooks in order, tool errors, planner, nested supervisors, agents as tools."""

from __future__ import annotations

import pytest

from agent_tree import AgentNode, AgentTree, HandoffResult, OrchestratorHooks, SupervisorOrchestrator, ToolResult


class Recorder:
    def __init__(self):
        self.calls: list[tuple] = []

    def hooks(self) -> OrchestratorHooks:
        def make(name):
            async def hook(*args):
                self.calls.append((name, *args))

            return hook

        return OrchestratorHooks(
            *(
                make(n)
                for n in (
                    "on_node_start",
                    "on_node_end",
                    "on_handoff",
                    "on_tool_start",
                    "on_tool_end",
                    "on_reasoning_step",
                )
            )
        )


def make_tree(**behaviours) -> AgentTree:
    root = AgentNode("sup")
    for name, fn in behaviours.items():
        root.add_child(AgentNode(name, fn))
    return AgentTree(root)


async def test_hooks_fire_in_order_with_the_right_arguments():
    def lookup(invoice_id: str) -> dict:
        return {"id": invoice_id}

    async def worker(ctx):
        await ctx.reason("look it up")
        r = await ctx.call_tool("lookup", invoice_id="7")
        return ctx.ok(f"found {r.output['id']}")

    tree = make_tree(w=worker)
    tree.find("w").add_tool(lookup)
    rec = Recorder()
    result = await SupervisorOrchestrator(tree, hooks=rec.hooks(), planner=lambda q: {"q": q}).run("hello")
    names = [c[0] for c in rec.calls]
    assert names == [
        "on_node_start",
        "on_reasoning_step",
        "on_node_start",
        "on_reasoning_step",
        "on_tool_start",
        "on_tool_end",
        "on_node_end",
        "on_handoff",
        "on_node_end",
    ]
    root_start, plan_step, child_start, thought, tool_start, tool_end, child_end, handoff, root_end = rec.calls
    assert root_start[1].name == "sup" and root_start[2] == "hello"
    assert plan_step[1:] == ("sup", 'plan: {"q": "hello"}')
    assert child_start[1].name == "w" and child_start[2] == "hello"
    assert thought[1:] == ("w", "look it up")
    assert tool_start[1:] == ("lookup", {"invoice_id": "7"})
    assert tool_end[1] == "lookup" and isinstance(tool_end[2], ToolResult) and tool_end[2].output == {"id": "7"}
    assert isinstance(child_end[2], HandoffResult) and child_end[2].summary == "found 7"
    assert handoff[1].from_agent == "w" and handoff[1].to_agent == "sup"
    assert root_end[2] is result
    assert result.plan == {"q": "hello"}
    assert result.handoffs[0].traces.tool_calls == ["lookup"]


async def test_tool_errors_are_captured_and_the_agent_continues():
    def broken(**_):
        raise RuntimeError("ERP is down")

    async def worker(ctx):
        r = await ctx.call_tool("broken")
        missing = await ctx.call_tool("nope")
        return ctx.failed(f"{r.status}: {r.error} / {missing.error}")

    tree = make_tree(w=worker)
    tree.find("w").add_tool(broken)
    result = await SupervisorOrchestrator(tree).run("x")
    assert result.status == "failed"
    summary = result.handoffs[0].summary
    assert "error: RuntimeError: ERP is down" in summary
    assert "has no tool 'nope'" in summary


async def test_sync_and_async_tools_and_behaviours():
    def sync_tool(a: int) -> int:
        return a + 1

    async def async_tool(a: int) -> int:
        return a * 2

    def behaviour(ctx):  # a sync behaviour cannot await tools, but may return a dict
        return {"status": "ok", "summary": "sync ok"}

    node = AgentNode("n")
    node.add_tool(sync_tool)
    node.add_tool(async_tool)
    assert (await node.run_tool("sync_tool", a=1)).output == 2
    assert (await node.run_tool("async_tool", a=3)).output == 6
    result = await SupervisorOrchestrator(make_tree(s=behaviour)).run("x")
    assert result.status == "completed" and result.answer == "sync ok"


async def test_raising_or_invalid_behaviours_become_failed_handoffs():
    async def raises(ctx):
        raise ValueError("bad data")

    async def wrong(ctx):
        return 42

    async def invalid(ctx):
        return {"status": "maybe", "summary": "?"}

    result = await SupervisorOrchestrator(make_tree(a=raises, b=wrong, c=invalid)).run("x")
    assert result.status == "failed"
    a, b, c = result.handoffs
    assert a.summary == "agent 'a' raised ValueError: bad data"
    assert "returned int" in b.summary
    assert "invalid HandoffResult" in c.summary and "status" in c.summary


async def test_planner_failure_is_recorded_not_fatal():
    def planner(_):
        raise RuntimeError("no plan")

    async def ok(ctx):
        return ctx.ok("fine")

    result = await SupervisorOrchestrator(make_tree(a=ok), planner=planner).run("x")
    assert result.status == "completed"
    assert result.plan == {"error": "planner raised RuntimeError: no plan"}


async def test_max_steps_and_all_failed_statuses():
    async def more(ctx):
        return ctx.needs_more_info("more", {ctx.agent_name: True})

    tree = make_tree(a=more, b=more, c=more)
    capped = await SupervisorOrchestrator(tree, max_steps=2).run("x")
    assert capped.status == "max_steps_reached" and capped.steps == 2
    exhausted = await SupervisorOrchestrator(tree, max_steps=10).run("x")
    assert exhausted.status == "failed" and exhausted.steps == 3
    assert exhausted.context == {"a": True, "b": True, "c": True}


async def test_nested_supervisor_and_agent_as_tool():
    async def leaf(ctx):
        return ctx.ok(f"leaf saw {ctx.context.get('k')}")

    inner = AgentNode("inner")
    inner.add_child(AgentNode("leaf", leaf))
    root = AgentNode("root")
    root.add_child(inner)
    tree = AgentTree(root)
    result = await SupervisorOrchestrator(tree).run("x", {"k": "v"})
    assert result.status == "completed" and result.answer == "leaf saw v"
    assert result.final_agent == "inner"

    tool = tree.find("leaf").as_tool("ask_leaf")
    root.add_tool(tool)
    out = await root.run_tool("ask_leaf", input="q", k="w")
    assert out.status == "ok" and out.output["summary"] == "leaf saw w"


def test_duplicate_names_and_self_child_are_rejected():
    a = AgentNode("a")
    with pytest.raises(ValueError, match="own child"):
        a.add_child(a)
    a.add_child(AgentNode("b"))
    with pytest.raises(ValueError, match="already has a child"):
        a.add_child(AgentNode("b"))
    c = AgentNode("c")
    c.add_child(AgentNode("a"))
    a2 = AgentNode("root")
    a2.add_child(a)
    a.children[0].add_child(c)
    with pytest.raises(ValueError, match="appears twice"):
        AgentTree(a2)


def test_find_and_visualize_nested():
    root = AgentNode("r")
    x = root.add_child(AgentNode("x"))
    x.add_child(AgentNode("y")).add_tool("t")
    root.add_child(AgentNode("z"))
    tree = AgentTree(root)
    assert tree.find("y").name == "y" and tree.find("nope") is None
    assert tree.visualize() == "r (root)\n├── x\n│   └── y [tools: t]\n└── z"


async def test_a_raising_hook_does_not_change_the_outcome():
    async def bad_hook(*_):
        raise RuntimeError("observer broke")

    async def ok(ctx):
        return ctx.ok("fine")

    result = await SupervisorOrchestrator(make_tree(a=ok), hooks=OrchestratorHooks(on_handoff=bad_hook)).run("x")
    assert result.status == "completed"
