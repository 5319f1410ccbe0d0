"""An AgentRun's maxSteps, timeoutSeconds and budgets bound an embedded run (issue 11 item 3).

``agent-tree run -f tree.yaml -f run.yaml`` ends each run with the status and answer a durable run
gives (the words are :mod:`agent_tree.policy`'s, the only place they are written).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
import yaml

from agent_tree import AgentNode, AgentTree, SupervisorOrchestrator, policy, usage
from agent_tree.cli import main

ROOT = Path(__file__).resolve().parents[2]
LIMITS = Path(__file__).resolve().parent / "limits"
TREE = LIMITS / "agenttree.yaml"
SLOW_TREE = LIMITS / "slowtree.yaml"


def run_manifest(tmp_path: Path, tree: str = "limits", **spec) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "agenttree.io/v1alpha1",
                "kind": "AgentRun",
                "metadata": {"name": "r1"},
                "spec": {"treeRef": {"name": tree}, "input": "stamp invoice 7", **spec},
            }
        )
    )
    return str(path)


def run_cli(capsys, *args: str) -> tuple[int, dict]:
    code = main(["run", *args, "--json"])
    out = json.loads(capsys.readouterr().out)
    return code, out


def started(events: list[dict]) -> list[str]:
    return [e["agent"] for e in events if e["type"] == "agent_start"]


def test_without_limits_the_tree_answers(tmp_path, capsys):
    code, out = run_cli(capsys, "-f", str(TREE), "-f", run_manifest(tmp_path))
    assert code == 0
    result = out["result"]
    assert (result["status"], result["answer"], result["final_agent"]) == ("completed", "fallback answered", "fallback")
    assert result["token_usage"] == 500 and result["steps"] == 3


def test_token_budget(tmp_path, capsys):
    code, out = run_cli(capsys, "-f", str(TREE), "-f", run_manifest(tmp_path, budgets={"maxTokens": 100}))
    result = out["result"]
    assert code == 1
    assert result["status"] == "failed"
    assert result["answer"] == (
        "budget exhausted: spec.budgets.maxTokens is 100; the run used 500 tokens, stopped before the next agent turn"
    )
    assert (result["final_agent"], result["reason"], result["steps"]) == ("spender", "BudgetExceeded", 1)
    assert result["usage"] == {"turns": 1, "toolCalls": 2, "tokens": 500, "costUSD": 0.0}
    assert started(out["events"]) == ["office", "spender"]


def test_tool_call_budget(tmp_path, capsys):
    run = run_manifest(tmp_path, budgets={"maxToolCalls": 1, "maxTokens": 1000})
    code, out = run_cli(capsys, "-f", str(TREE), "-f", run)
    result = out["result"]
    assert code == 1
    assert (result["status"], result["answer"]) == (
        "failed",
        "budget exhausted: spec.budgets.maxToolCalls is 1; the run used 1 tool calls and the next tool call "
        "needs 1 more",
    )
    assert started(out["events"]) == ["office", "spender"]
    # The refused call never started: one tool_start.
    assert [e["type"] for e in out["events"]].count("tool_start") == 1


def test_within_the_budgets_the_run_goes_on(tmp_path, capsys):
    run = run_manifest(tmp_path, budgets={"maxToolCalls": 2, "maxTokens": 500})
    code, out = run_cli(capsys, "-f", str(TREE), "-f", run)
    assert code == 0 and out["result"]["answer"] == "fallback answered"


def test_max_steps_of_the_run_overrides_the_tree(tmp_path, capsys):
    code, out = run_cli(capsys, "-f", str(TREE), "-f", run_manifest(tmp_path, maxSteps=2))
    result = out["result"]
    assert code == 1
    assert (result["status"], result["answer"]) == (
        "max_steps_reached",
        "stopped after max_steps=2 child turns without an ok handoff",
    )
    assert (result["final_agent"], result["steps"]) == ("asker", 2)


def test_timeout_stops_a_running_turn_and_nested_supervisors(tmp_path, capsys):
    """timeoutSeconds: the slow turn is stopped at the deadline; no turn starts after it, in the
    nested supervisor (team) or in the root."""
    code, out = run_cli(capsys, "-f", str(SLOW_TREE), "-f", run_manifest(tmp_path, "slow", timeoutSeconds=1))
    result = out["result"]
    assert code == 1
    assert (result["status"], result["answer"], result["final_agent"]) == (
        "failed",
        "the run timed out before an agent answered",
        "team",
    )
    assert started(out["events"]) == ["desk", "team", "slow"]
    team = [e for e in out["events"] if e["type"] == "handoff" and e["agent"] == "team"]
    assert team[0]["status"] == "failed" and team[0]["summary"] == "the run timed out before an agent answered"


def test_printed_result_and_exit_code_of_a_stopped_run(tmp_path, capsys):
    assert main(["run", "-f", str(TREE), "-f", run_manifest(tmp_path, budgets={"maxTokens": 100})]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert (
        "answer: budget exhausted: spec.budgets.maxTokens is 100; the run used 500 tokens, stopped before the "
        "next agent turn" in lines
    )
    assert "status: failed" in lines
    assert "steps:  1  final agent: spender" in lines


def test_the_run_gives_input_and_context_and_must_name_the_tree(tmp_path, capsys):
    run = run_manifest(tmp_path, context={"user": "u1"})
    code, out = run_cli(capsys, "-f", str(TREE), "-f", run, "--input", "other question")
    assert code == 0
    assert next(e["input"] for e in out["events"] if e["type"] == "agent_start") == "other question"
    assert out["result"]["context"]["user"] == "u1"

    assert main(["run", "-f", str(TREE), "-f", run_manifest(tmp_path, "invoice")]) == 1
    err = capsys.readouterr().err
    assert "spec.treeRef.name is 'invoice' but the AgentTree" in err and "set spec.treeRef.name: limits" in err

    second = tmp_path / "second.yaml"
    second.write_text(Path(run).read_text().replace("r1", "r2"))
    assert main(["run", "-f", str(TREE), "-f", run, "-f", str(second)]) == 1
    assert "expected at most one AgentRun, found 2" in capsys.readouterr().err

    assert main(["run", "-f", run, "--input", "x"]) == 1
    assert "expected exactly one AgentTree, found 0" in capsys.readouterr().err


# --- the orchestrator API (what the CLI drives) ------------------------------------------------


async def test_an_answer_that_goes_over_budget_still_answers():
    root = AgentNode("sup")

    async def rich(ctx):
        ctx.add_tokens(1000)
        await usage.report_model_usage("rich", {"total_tokens": 1000})
        return ctx.ok("costly answer")

    root.add_child(AgentNode("rich", rich))
    result = await SupervisorOrchestrator(AgentTree(root), budgets={"maxTokens": 10}).run("q")
    assert (result.status, result.answer, result.token_usage) == ("completed", "costly answer", 1000)


async def test_planner_tokens_count_against_the_token_budget():
    """The durable run counts a planner's (or routing model call's) tokens in the budget: so does this."""
    root = AgentNode("sup")
    root.add_child(AgentNode("a", lambda ctx: ctx.failed("no")))
    root.add_child(AgentNode("b", lambda ctx: ctx.ok("yes")))

    async def planner(question):
        await usage.report_model_usage("sup", {"total_tokens": 300})
        return {"route": ["a", "b"]}

    tree = AgentTree(root)
    result = await SupervisorOrchestrator(tree, planner=planner, budgets={"maxTokens": 200}).run("q")
    assert (result.status, result.answer) == (
        "failed",
        "budget exhausted: spec.budgets.maxTokens is 200; the run used 300 tokens, stopped before the next agent turn",
    )
    assert result.token_usage == 300 and result.steps == 0


async def test_timeout_seconds_sub_second_and_validated():
    root = AgentNode("sup")

    async def dawdle(ctx):
        await asyncio.sleep(0.3)
        return ctx.failed("late")

    for name in ("a", "b", "c"):
        root.add_child(AgentNode(name, dawdle))
    result = await SupervisorOrchestrator(AgentTree(root), timeout_seconds=0.4).run("q")
    # a ran 0.3 s; b started before the deadline (0.4 s) and may finish (a turn gets at least 1 s); c never starts.
    assert (result.status, result.answer, result.final_agent, result.steps) == ("failed", policy.TIMED_OUT, "b", 2)
    with pytest.raises(ValueError, match="timeout_seconds must be above 0"):
        SupervisorOrchestrator(AgentTree(root), timeout_seconds=0)


async def test_a_planner_running_at_the_deadline_is_stopped():
    root = AgentNode("sup")
    root.add_child(AgentNode("a", lambda ctx: ctx.ok("yes")))

    async def planner(question):
        await asyncio.sleep(30)
        return {"route": ["a"]}

    result = await asyncio.wait_for(
        SupervisorOrchestrator(AgentTree(root), planner=planner, timeout_seconds=0.2).run("q"), 10
    )
    assert (result.status, result.answer, result.steps) == ("failed", policy.TIMED_OUT, 0)
    assert result.plan == {"error": "planner raised TimeoutError"}


# --- one source for the words ------------------------------------------------------------------

MESSAGES = (
    "token budget exceeded",
    "tool call budget exceeded",
    "budget exhausted: spec.budgets",
    "the run timed out before an agent answered",
)
SOURCES = ("agent_tree", "worker", "operator", "api", "bench", "hack")
# Files that still spell a stop message themselves (none: the durable workflow calls the policy too).
# A stale entry fails the test below.
PENDING: set[str] = set()


def test_the_stop_messages_are_written_only_in_the_policy():
    holders = set()
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")) if (ROOT / top).is_dir() else ():
            text = path.read_text()
            if any(re.search(re.escape(m), text) for m in MESSAGES):
                holders.add(str(path.relative_to(ROOT)))
    assert "agent_tree/policy.py" in holders
    assert holders - {"agent_tree/policy.py"} - PENDING == set(), "call agent_tree.policy instead of copying its words"
    assert PENDING <= holders, f"{sorted(PENDING - holders)} now call the policy: remove them from PENDING"


# --- budgets from the tree, cost pricing, pause embedded (issue 12 item 5) ----------------------


def priced(tmp_path: Path, budgets: dict, pricing: bool) -> str:
    tree = yaml.safe_load(TREE.read_text())
    tree["spec"]["budgets"] = budgets
    tree["spec"]["agents"].append(
        {
            "name": "llm",
            "model": {
                "name": "m",
                **({"pricing": {"inputPerMillionTokens": 1, "outputPerMillionTokens": 2}} if pricing else {}),
            },
        }
    )
    tree["spec"]["agents"][0]["children"].append("llm")
    path = tmp_path / "tree.yaml"
    path.write_text(yaml.safe_dump(tree))
    return str(path)


def test_tree_budgets_are_the_runs_defaults_field_by_field(tmp_path, capsys):
    tree = tmp_path / "tree.yaml"
    doc = yaml.safe_load(TREE.read_text())
    doc["spec"]["budgets"] = {"maxTokens": 100, "maxToolCalls": 1}
    tree.write_text(yaml.safe_dump(doc))
    # The run raises maxToolCalls; maxTokens comes from the tree and stops the run.
    code, out = run_cli(capsys, "-f", str(tree), "-f", run_manifest(tmp_path, budgets={"maxToolCalls": 5}))
    assert code == 1 and "spec.budgets.maxTokens is 100" in out["result"]["answer"]


def test_a_cost_budget_needs_every_model_agents_pricing(tmp_path, capsys):
    assert main(["validate", "-f", priced(tmp_path, {"maxCostUSD": 1.0}, pricing=False)]) == 1
    err = capsys.readouterr().err
    assert "budgets.maxCostUSD: agent 'llm' has no model.pricing (agents[4].model.pricing)" in err
    assert main(["validate", "-f", priced(tmp_path, {"maxCostUSD": 1.0}, pricing=True)]) == 0
    capsys.readouterr()
    # The run's own maxCostUSD on a tree without pricing: refused, naming the run's field.
    tree = priced(tmp_path, {}, pricing=False)
    assert main(["run", "-f", tree, "-f", run_manifest(tmp_path, budgets={"maxCostUSD": 0.5})]) == 1
    assert "spec.budgets.maxCostUSD: agent 'llm' has no model.pricing" in capsys.readouterr().err


def test_an_embedded_run_treats_pause_as_fail_and_says_so(tmp_path, capsys):
    run = run_manifest(tmp_path, budgets={"maxTokens": 100, "onExhausted": "pause"})
    code, out = run_cli(capsys, "-f", str(TREE), "-f", run)
    assert code == 1 and out["result"]["reason"] == "BudgetExceeded"
    assert out["result"]["answer"].endswith("(onExhausted: pause applies to durable runs only; an embedded run fails)")


def test_a_tree_without_budgets_or_pricing_dumps_as_before_they_existed():
    """Its revision hash (and the spec older workers validate, extra fields forbidden) stays the same."""
    from agent_tree.spec import AgentTreeSpec

    plain = AgentTreeSpec.model_validate({"root": "a", "agents": [{"name": "a", "model": {"name": "m"}}]})
    data = plain.model_dump(mode="json")
    assert "budgets" not in data and "pricing" not in data["agents"][0]["model"]
