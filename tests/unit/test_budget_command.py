"""``agent-tree budget NS/RUN ...``: what it refuses, each with the field and the fix, before any write."""

from __future__ import annotations

import argparse

import pytest
from agent_tree_operator.commands.budget import BudgetError, check_change, parse_change

from agent_tree.cli import build_parser


def args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["budget", *argv])


def test_the_command_is_registered_and_parses_every_budget():
    ns, name, change = parse_change(
        args("team/r1", "--max-tokens", "5000", "--max-tool-calls", "3", "--max-turns", "4", "--max-cost-usd", "0.5")
    )
    assert (ns, name) == ("team", "r1")
    assert change == {"maxTokens": 5000, "maxToolCalls": 3, "maxTurns": 4, "maxCostUSD": 0.5}


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["team/r1", "--max-tokens", "-5"], "--max-tokens (spec.budgets.maxTokens): must be at least 1, got -5"),
        (["team/r1", "--max-tokens", "0"], "must be at least 1, got 0"),
        (["team/r1", "--max-tool-calls", "two"], "--max-tool-calls (spec.budgets.maxToolCalls): expected a number"),
        (["team/r1", "--max-cost-usd", "0"], "--max-cost-usd (spec.budgets.maxCostUSD): must be above 0"),
        (["team/r1"], "give at least one of --max-tokens"),
        (["r1", "--max-tokens", "5"], "NS/RUN: expected namespace/name of an AgentRun, got 'r1'"),
    ],
)
def test_bad_flags_are_refused_naming_the_field(argv, words):
    with pytest.raises(BudgetError) as err:
        parse_change(args(*argv))
    assert words in str(err.value)


def run(phase="Paused", budgets=None, usage=None):
    return {
        "spec": {"treeRef": {"name": "t"}, "input": "q", **({"budgets": budgets} if budgets else {})},
        "status": {"phase": phase, **({"usage": usage} if usage else {})},
    }


def test_runs_that_cannot_take_new_budgets_are_refused():
    with pytest.raises(BudgetError, match="AgentRun team/nope not found"):
        check_change(None, None, "team/nope", {"maxTokens": 5})
    with pytest.raises(BudgetError, match="team/r1 is Succeeded: the budgets of a finished run cannot change"):
        check_change(run("Succeeded", {"maxTokens": 5}), None, "team/r1", {"maxTokens": 50})
    with pytest.raises(BudgetError, match="was started without budgets"):
        check_change(run("Running"), {"spec": {}}, "team/r1", {"maxTokens": 50})
    used = {"turns": 2, "toolCalls": 1, "tokens": 120, "costUSD": 0.0}
    with pytest.raises(BudgetError) as err:
        check_change(run("Paused", {"maxTokens": 100}, used), None, "team/r1", {"maxTokens": 50})
    assert "spec.budgets.maxTokens: 50 is below what the run used already (120 tokens); give at least 120" in str(
        err.value
    )
    # Allowed: a raise; budgets that come from the tree only.
    check_change(run("Paused", {"maxTokens": 100}, used), None, "team/r1", {"maxTokens": 500})
    check_change(run("Running"), {"spec": {"budgets": {"maxTurns": 3}}}, "team/r1", {"maxTurns": 5})
