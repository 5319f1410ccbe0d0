"""The design seed's README code blocks are a contract: they must run exactly as written.

The blocks are read from docs/design/seed.md (a verbatim copy of the seed), not retyped here.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import re
import subprocess
import sys
from pathlib import Path

SEED = Path(__file__).resolve().parents[2] / "docs" / "design" / "seed.md"
SEED_MARKER = "<!-- 8<--- the seed, verbatim, from here to the end ---8< -->\n"
# sha256 of the design seed as it was handed over (shared/seed/000_06e9e562f906d374.txt).
SEED_SHA256 = "726c8891fd490a3061751f12b44b3d5a24ac6c8f7e646c177fb760d32949c1d0"


def seed_text() -> str:
    return SEED.read_text().split(SEED_MARKER, 1)[1]


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", seed_text(), flags=re.S)


def test_seed_copy_is_verbatim():
    """A formatter (ruff formats Markdown code blocks) or an edit must not touch the seed's text."""
    assert hashlib.sha256(seed_text().encode()).hexdigest() == SEED_SHA256


def test_seed_has_the_three_blocks():
    blocks = python_blocks()
    assert len(blocks) == 3
    assert "AgentTree(supervisor)" in blocks[0]
    assert "HandoffResult(" in blocks[1]
    assert "SupervisorOrchestrator(" in blocks[2]


def run_block(code: str, namespace: dict) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<seed>", "exec"), namespace)
    return out.getvalue()


def test_build_and_visualize_block_prints_the_seed_drawing():
    block = python_blocks()[0]
    printed = run_block(block, {})
    drawing = [line for line in block.splitlines() if line.startswith(("# supervisor", "# ├", "# └"))]
    expected = [line[2:] for line in drawing]
    assert printed.splitlines() == expected
    assert printed.splitlines()[0] == "supervisor (root) [tools: run_specialist]"


def test_handoff_block_builds_a_valid_result():
    ns: dict = {}
    run_block(python_blocks()[1], ns)
    result = ns["result"]
    assert result.status == "ok"
    assert result.traces.token_usage == 2500
    assert result.traces.tool_results[0].tool_name == "erp_lookup"


async def test_orchestrator_block_runs_with_hooks_and_planner():
    ns: dict = {}
    run_block(python_blocks()[0], ns)
    calls: list[tuple] = []

    def recorder(name):
        async def hook(*args):
            calls.append((name, *args))

        return hook

    for hook in (
        "my_start_hook",
        "my_end_hook",
        "my_handoff_hook",
        "my_tool_start_hook",
        "my_tool_end_hook",
        "my_reason_hook",
    ):
        ns[hook] = recorder(hook)

    # The seed's nodes get their behaviour (the seed's demo.py did this); the block itself is unchanged.
    async def triage(ctx):
        await ctx.reason("Invoice question; the specialist should look it up.")
        return ctx.needs_more_info("Routing to the invoice specialist.", {"invoice_id": "4821"})

    async def specialist(ctx):
        found = await ctx.call_tool("erp_lookup", invoice_id=ctx.context["invoice_id"])
        reason = found.output["reason"]
        assert reason == "missing_po"
        return ctx.ok("Invoice #4821 rejected due to missing PO number.", {"reason": reason})

    ns["triage"].set_behaviour(triage)
    ns["specialist"].set_behaviour(specialist)

    block = python_blocks()[2]
    out = io.StringIO()
    code = compile(block, "<seed>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    with contextlib.redirect_stdout(out):
        await eval(code, ns)
    assert out.getvalue().splitlines() == [
        "Invoice #4821 rejected due to missing PO number.",
        "completed",
        "{'strategy': 'triage → specialist → verifier'}",
    ]
    names = [c[0] for c in calls]
    assert names[0] == "my_start_hook" and names[-1] == "my_end_hook"
    assert "my_tool_start_hook" in names and "my_handoff_hook" in names and "my_reason_hook" in names


def test_seed_block_needs_a_tree_without_behaviour_to_fail_clearly():
    ns: dict = {}
    run_block(python_blocks()[0], ns)
    import asyncio

    from agent_tree import SupervisorOrchestrator

    result = asyncio.run(SupervisorOrchestrator(ns["tree"]).run("Why was invoice #4821 rejected?"))
    assert result.status == "failed"
    assert "has no behaviour" in result.answer


README = SEED.parents[2] / "README.md"


def readme_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def same_code(a: str, b: str) -> bool:
    """Equal as Python (ruff formats the README's blocks; the seed keeps its own spacing)."""
    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    return ast.dump(compile(a, "<a>", "exec", flags)) == ast.dump(compile(b, "<b>", "exec", flags))


def test_readme_shows_the_seed_build_and_handoff_blocks():
    blocks = readme_blocks()
    for block in python_blocks()[:2]:
        assert any(same_code(block, b) for b in blocks)


def test_readme_blocks_run_in_order_as_one_script(tmp_path):
    """Pasted in order into one file, the README's Python blocks run and print the seed's answer."""
    script = tmp_path / "readme.py"
    script.write_text("\n\n".join(readme_blocks()))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-3:] == [
        "Invoice #4821 rejected due to missing PO number.",
        "completed",
        "{'strategy': 'triage → specialist → verifier'}",
    ]
    assert "> supervisor started: Why was invoice #4821 rejected?" in lines
    assert "  * tool erp_lookup {'invoice_id': '4821'}" in lines


def test_readme_manifest_is_the_example_file():
    """The README calls its manifest the example's tree: it must be that file, byte for byte."""
    example = (SEED.parents[2] / "examples" / "invoice" / "agenttree.yaml").read_text()
    yaml_blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    assert example in yaml_blocks


async def test_readme_behaviour_block_runs_on_the_seed_tree():
    ns: dict = {}
    run_block(python_blocks()[0], ns)
    behaviour = next(b for b in readme_blocks() if "set_behaviour" in b)
    run_block(behaviour, ns)
    from agent_tree import RunContext

    ctx = RunContext(ns["specialist"], "Why?", {"invoice_id": "4821"})
    result = await ns["specialist"].behaviour(ctx)
    assert result.status == "ok" and result.payload == {"reason": "missing_po"}
    assert result.traces.tool_calls == ["erp_lookup"]
    assert result.traces.reasoning_steps == ["Need to look up invoice in ERP"]
