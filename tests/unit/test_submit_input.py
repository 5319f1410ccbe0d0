"""``agent-tree submit`` builds the run the operator would: the AgentRun's input, context, maxSteps,
timeoutSeconds and budgets from the file, through the contract's one ``run_input``; options override."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from agent_tree_worker.cli import SubmitError, submit_input

from agent_tree.cli import build_parser, load_tree
from agent_tree.contract import RunInputError, spec_revision

ROOT = Path(__file__).resolve().parents[2]
TREE = ROOT / "examples" / "invoice" / "agenttree.yaml"
RUN = {
    "apiVersion": "agenttree.io/v1alpha1",
    "kind": "AgentRun",
    "metadata": {"name": "why-4821", "namespace": "team-a"},
    "spec": {
        "treeRef": {"name": "invoice"},
        "input": "Why was invoice #4821 rejected?",
        "context": {"vendor": "Acme"},
        "maxSteps": 4,
        "timeoutSeconds": 120,
        "budgets": {"maxToolCalls": 2},
    },
}


def submit(tmp_path: Path, *options: str, run: dict | None = RUN):
    path = tmp_path / "tree-and-run.yaml"
    docs = [yaml.safe_load(TREE.read_text())] + ([run] if run else [])
    path.write_text(yaml.safe_dump_all(docs))
    args = build_parser().parse_args(["submit", "-f", str(path), *options])
    tree, runs = load_tree(args.file)
    return tree, submit_input(args, tree, runs, "u1")


def test_the_agentruns_limits_and_budgets_apply(tmp_path: Path) -> None:
    tree, inp = submit(tmp_path)
    assert (inp.name, inp.uid, inp.input, inp.context) == ("why-4821", "u1", RUN["spec"]["input"], {"vendor": "Acme"})
    assert (inp.max_steps, inp.timeout_seconds, inp.budgets) == (4, 120, {"maxToolCalls": 2})
    assert inp.tree == "invoice" and inp.revision == spec_revision(tree.spec)


def test_options_override_the_agentrun(tmp_path: Path) -> None:
    _, inp = submit(tmp_path, "-i", "other question", "--max-steps", "2", "--timeout", "30", "--namespace", "ns")
    assert (inp.input, inp.context, inp.max_steps, inp.timeout_seconds) == ("other question", {}, 2, 30)
    assert inp.namespace == "ns" and inp.budgets == {"maxToolCalls": 2}


def test_a_tree_alone_takes_the_defaults(tmp_path: Path) -> None:
    _, inp = submit(tmp_path, "-i", "q", run=None)
    assert (inp.name, inp.max_steps, inp.timeout_seconds, inp.budgets) == ("invoice-run", None, 3600, None)
    with pytest.raises(SubmitError, match="--input is required"):
        submit(tmp_path, run=None)
    with pytest.raises(RunInputError, match=r"spec\.input"):
        submit(tmp_path, "-i", "x" * 70_000, run=None)
