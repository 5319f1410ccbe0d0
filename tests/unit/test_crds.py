"""The CRDs in crds/ are generated from agent_tree/spec.py, structural, and carry the admission rules.

The real API server's verdict on them (it rejects non-structural schemas and over-budget CEL) is in
tests/e2e/test_operator.py, which installs these files and applies bad manifests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from agent_tree_operator import crdgen

from agent_tree.cli import main
from agent_tree.spec import RESOURCE_NAME_RE, AgentRunSpec

ROOT = Path(__file__).resolve().parents[2]


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "crds" / name).read_text())


def version(crd: dict[str, Any]) -> dict[str, Any]:
    (v,) = crd["spec"]["versions"]
    return v


def schema(crd: dict[str, Any]) -> dict[str, Any]:
    return version(crd)["schema"]["openAPIV3Schema"]


def walk(node: dict[str, Any], path: str = ""):
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_crd_files_match_the_generator():
    drifted = crdgen.drift()
    assert not drifted, f"crds/{drifted} differ from agent_tree/spec.py; run: agent-tree crds --write"


def test_drift_is_detected(tmp_path):
    crdgen.write(tmp_path)
    assert crdgen.drift(tmp_path) == []
    path = tmp_path / "agentruns.yaml"
    path.write_text(path.read_text().replace("maxLength: 65536", "maxLength: 65537"))
    assert crdgen.drift(tmp_path) == ["agentruns.yaml"]
    assert main(["crds", "--check", str(tmp_path)]) == 1
    assert main(["crds", "--check"]) == 0


def test_crds_command_prints_both(capsys):
    assert main(["crds"]) == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert [d["metadata"]["name"] for d in docs] == [
        "agenttrees.agenttree.io",
        "agentruns.agenttree.io",
        "agentapprovals.agenttree.io",
    ]


@pytest.mark.parametrize("name", ["agenttrees.yaml", "agentruns.yaml"])
def test_schema_is_structural(name):
    crd = load(name)
    text = (ROOT / "crds" / name).read_text()
    assert "$ref" not in text and "anyOf" not in text and "title:" not in text and "&id" not in text
    for path, node in walk(schema(crd)):
        typed = (
            "type" in node or node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
        )
        assert typed, f"{name}: {path or '<root>'} has no type"
        assert not isinstance(node.get("additionalProperties"), bool), f"{path}: boolean additionalProperties"
        assert not ("properties" in node and "additionalProperties" in node), f"{path}: both kinds of properties"


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("agentruns.yaml", ".spec.context"),
        ("agentruns.yaml", ".status.result"),
        ("agentruns.yaml", ".status.plan"),
        ("agenttrees.yaml", ".spec.agents[].outputSchema"),
        ("agenttrees.yaml", ".spec.agents[].tools[].parameters"),
        ("agenttrees.yaml", ".spec.worker.env[].valueFrom"),
    ],
)
def test_free_form_objects_keep_unknown_fields(name, path):
    nodes = dict(walk(schema(load(name))))
    assert nodes[path].get("x-kubernetes-preserve-unknown-fields") is True
    assert nodes[path]["type"] == "object"


def test_optional_fields_are_nullable_and_required_ones_required():
    nodes = dict(walk(schema(load("agenttrees.yaml"))))
    assert nodes[".spec"]["required"] == ["root", "agents"]
    assert nodes[".spec.planner"]["nullable"] is True
    assert nodes[".spec.agents[].model"]["nullable"] is True
    run = dict(walk(schema(load("agentruns.yaml"))))
    # treeRef and input are required unless forkFrom is set (CEL, see test_cel_rules).
    assert "required" not in run[".spec"]
    assert run[".spec.forkFrom"]["required"] == ["run"]
    assert run[".spec.input"]["maxLength"] == 65536
    assert run[".status.phase"]["enum"] == [
        "Pending", "Running", "AwaitingApproval", "Paused", "Succeeded", "Failed", "Cancelled"
    ]  # fmt: skip


def test_defaults_are_materialised_except_where_inheritance_needs_unset():
    trees = dict(walk(schema(load("agenttrees.yaml"))))
    assert trees[".spec.maxSteps"]["default"] == 10
    assert trees[".spec.agents[].tools[].timeoutSeconds"]["default"] == 60
    assert trees[".spec.agents[].model.maxTurns"]["default"] == 8
    # An agent's worker overrides the tree's field by field: "unset" must stay unset.
    for path, node in trees.items():
        if ".worker" in path:
            assert "default" not in node, f"{path} must not default (it would shadow the tree's spec.worker)"
    runs = dict(walk(schema(load("agentruns.yaml"))))
    assert runs[".spec.timeoutSeconds"]["default"] == 3600


def rules(node: dict[str, Any]) -> list[str]:
    return [r["rule"] for r in node.get("x-kubernetes-validations", [])]


def test_cel_rules():
    trees = dict(walk(schema(load("agenttrees.yaml"))))
    spec_rules = " | ".join(rules(trees[".spec"]))
    for fragment in (
        "exists_one(b, b.name == a.name)",
        "a.name == self.root",
        "a.children.all(",
        "self.root in",
        ".size() <= 1",
        "t.agent",
    ):
        assert fragment in spec_rules
    agent_rules = " | ".join(rules(trees[".spec.agents[]"]))
    assert "has(self.entrypoint) && has(self.model)" in agent_rules
    assert "self.name in self.children" in agent_rules
    assert trees[".spec.agents[].children"]["x-kubernetes-list-type"] == "set"
    assert rules(trees[".spec.agents[].tools[]"]) == ["has(self.entrypoint) != has(self.agent)"]
    assert "self.metadata.name.size() <= 63" in rules(schema(load("agenttrees.yaml")))
    runs = dict(walk(schema(load("agentruns.yaml"))))
    immutable, *fork_rules = rules(runs[".spec"])
    assert fork_rules == ["has(self.treeRef) || has(self.forkFrom)", "has(self.input) || has(self.forkFrom)"]
    assert rules(runs[".spec.forkFrom"]) == [f"self.run.matches(r'{RESOURCE_NAME_RE}')"]  # raw: '\.' is no CEL escape
    # Immutable except spec.budgets (agent-tree budget raises them): every other field, set or unset.
    for name in AgentRunSpec.model_fields:
        guarded = f"has(self.{name}) == has(oldSelf.{name})" in immutable
        assert guarded == (name != "budgets"), name
    for rule in trees[".spec"]["x-kubernetes-validations"]:
        assert rule["message"].startswith("spec."), rule


def test_names_subresource_and_printer_columns():
    trees, runs = load("agenttrees.yaml"), load("agentruns.yaml")
    assert trees["spec"]["names"]["shortNames"] == ["atree"]
    assert runs["spec"]["names"]["shortNames"] == ["arun"]
    assert trees["spec"]["names"]["categories"] == runs["spec"]["names"]["categories"] == ["agents"]
    for crd in (trees, runs):
        assert version(crd)["subresources"] == {"status": {}}
        assert crd["spec"]["scope"] == "Namespaced"

    def columns(crd):
        return [c["name"] for c in version(crd)["additionalPrinterColumns"] if not c.get("priority")]

    assert columns(trees) == ["Root", "Agents", "Ready", "Age"]
    assert columns(runs) == ["Tree", "Phase", "Agent", "Steps", "Age", "Duration", "Waiting"]
