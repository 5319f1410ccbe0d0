"""Retry and fork, the pure parts: which calls a fork reuses, where a retry starts, the fork field of
the run input and of the AgentRun spec (docs/run-control.md, "Retry and fork")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent_tree.cli import main
from agent_tree.contract import run_input
from agent_tree.contract.control import ForkPointError, ForkSource, fork_point, reused
from agent_tree.spec import AgentRunSpec

SPEC = {"root": "a", "agents": [{"name": "a", "description": "A", "entrypoint": "m:f"}]}


def step(ord_: list[int], kind: str, **data: object) -> dict[str, object]:
    return {"ord": ord_, "type": kind, "data": {"type": kind, **data}}


HISTORY = [
    step([1], "agent_start"),
    step([2], "reasoning"),
    step([3], "agent_start"),
    step([4, 1], "tool_start", tool="prepare"),
    step([4, 2], "tool_end", tool="prepare", status="ok"),
    step([4, 3], "tool_start", tool="flaky"),
    step([4, 4], "tool_end", tool="flaky", status="error"),
    step([5], "agent_end", status="failed"),
]


def test_a_call_is_reused_up_to_and_under_the_forked_step() -> None:
    until = [4, 2]
    assert reused([2], until) and reused([4, 1], until) and reused([4, 2], until)
    assert reused([4, 2, 1], until)  # a second call keyed under the step belongs to it
    assert reused([4, 1, 7], until)
    assert not reused([4, 3], until) and not reused([5], until) and not reused([4, 4, 1], until)
    assert reused([3, 9, 9], [4])
    assert not reused([4, 0, 1], [3, 9])


def test_a_retry_reuses_everything_before_the_first_failed_step() -> None:
    assert fork_point(HISTORY, None, "job") == (6, [4, 3])  # the flaky tool_end is step 7
    only_agent = [s for s in HISTORY if s["type"] != "tool_end" or s["data"]["status"] == "ok"]
    assert fork_point(only_agent, None, "job") == (6, [4, 3])  # no failing tool: the failed agent_end


def test_fork_points_name_the_field_and_the_fix() -> None:
    assert fork_point(HISTORY, 5, "job") == (5, [4, 2])
    with pytest.raises(
        ForkPointError, match=r"spec.forkFrom.step: run 'job' has 8 steps, there is no step 9; choose 1..8"
    ):
        fork_point(HISTORY, 9, "job")
    ok = HISTORY[:5]
    with pytest.raises(
        ForkPointError, match=r"spec.forkFrom.step: run 'job' has no failed step .* set spec.forkFrom.step"
    ):
        fork_point(ok, None, "job")
    with pytest.raises(ForkPointError, match=r"spec.forkFrom.run: run .job. has no recorded steps"):
        fork_point([], 1, "job")


def test_run_input_carries_fork_only_when_set() -> None:
    plain = run_input("ns", "t", SPEC, name="r", uid="u", input="hi")
    assert "fork" not in json.loads(plain.model_dump_json())
    fork = ForkSource(workflow_id="agentrun.ns.r.u", name="r", step=3, until_ord=[3])
    forked = run_input("ns", "t", SPEC, name="r2", uid="u", input="hi", fork=fork)
    assert json.loads(forked.model_dump_json())["fork"] == {
        "workflow_id": "agentrun.ns.r.u",
        "name": "r",
        "step": 3,
        "until_ord": [3],
    }


def test_agentrun_spec_fork_from() -> None:
    spec = AgentRunSpec.model_validate({"forkFrom": {"run": "why-4821", "step": 4}})
    assert spec.input is None and spec.treeRef is None and spec.forkFrom.treeRevision == "source"
    with pytest.raises(
        ValidationError, match=r"spec.forkFrom.run must be the name of an AgentRun in this run's namespace"
    ):
        AgentRunSpec.model_validate({"forkFrom": {"run": "other/why-4821"}})
    with pytest.raises(ValidationError, match=r"spec.input is required \(unless spec.forkFrom"):
        AgentRunSpec.model_validate({"treeRef": {"name": "t"}})
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        AgentRunSpec.model_validate({"forkFrom": {"run": "r", "step": 0}})


def test_an_embedded_run_refuses_a_fork_naming_the_field(tmp_path, capsys) -> None:
    run = tmp_path / "run.yaml"
    run.write_text(
        "apiVersion: agenttree.io/v1alpha1\nkind: AgentRun\nmetadata: {name: f1}\nspec: {forkFrom: {run: r}}\n"
    )
    tree = str(Path(__file__).resolve().parents[2] / "examples" / "invoice" / "agenttree.yaml")
    assert main(["run", "-f", tree, "-f", str(run)]) == 1
    assert "spec.forkFrom: a retry or fork reuses a durable run's history" in capsys.readouterr().err
