"""Argo CD health checks and the cancel action for AgentTree / AgentRun, run as Argo CD runs them.

Argo CD evaluates resource_customizations with gopher-lua (Lua 5.1): the resource is the global
``obj``, the chunk's return value is the result (health: a table with ``status`` and ``message``;
discovery: a table of actions; an action: the modified ``obj``). Only the base, table, string and
math libraries are open there, so the runtime here removes io/os/require/load* before running.
The cases are Argo CD's own test files (health_test.yaml, actions/action_test.yaml), so the same
scripts and samples can go upstream unchanged.
"""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51
import pytest
import yaml

from agent_tree.spec import RunPhase

ROOT = Path(__file__).resolve().parents[2]
CUSTOM = ROOT / "deploy" / "argocd" / "resource_customizations" / "agenttree.io"
RUN = CUSTOM / "AgentRun"
TREE = CUSTOM / "AgentTree"
CANCEL_ANNOTATION = "agenttree.io/cancel"
HEALTH_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def _to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items() if v is not None})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def _from_lua(value: Any) -> Any:
    if lua51.lua_type(value) == "table":
        items = dict(value.items())
        if items and all(isinstance(k, int) for k in items) and sorted(items) == list(range(1, len(items) + 1)):
            return [_from_lua(items[i]) for i in range(1, len(items) + 1)]
        return {k: _from_lua(v) for k, v in items.items()}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def run_lua(script: str, obj: dict[str, Any]) -> Any:
    """Evaluate an Argo CD Lua script against ``obj`` in a fresh Lua 5.1 with Argo's libraries."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=False)
    lua.execute("io, os, require, dofile, loadfile, load, loadstring, debug, package = nil")
    lua.globals().obj = _to_lua(lua, obj)
    return _from_lua(lua.execute(script))


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def health_cases(kind_dir: Path) -> list[Any]:
    spec = load(kind_dir / "health_test.yaml")
    return [pytest.param(kind_dir, t, id=f"{kind_dir.name}-{Path(t['inputPath']).stem}") for t in spec["tests"]]


@pytest.mark.parametrize(("kind_dir", "case"), health_cases(RUN) + health_cases(TREE))
def test_health(kind_dir: Path, case: dict[str, Any]) -> None:
    obj = load(kind_dir / case["inputPath"])
    hs = run_lua((kind_dir / "health.lua").read_text(), obj)
    assert hs["status"] in HEALTH_STATUSES
    assert hs == case["healthStatus"]


def test_every_run_phase_has_a_sample_and_the_documented_health() -> None:
    """Every phase of agent_tree.spec.RunPhase (the CRD's enum) maps as docs/gitops.md says."""
    expected = {"Pending": "Progressing", "Running": "Progressing", "Succeeded": "Healthy",
                "Failed": "Degraded", "Cancelled": "Suspended"}  # fmt: skip
    assert set(typing.get_args(RunPhase)) == set(expected), "a phase was added: map it in health.lua"
    seen: dict[str, set[str]] = {}
    for case in load(RUN / "health_test.yaml")["tests"]:
        phase = (load(RUN / case["inputPath"]).get("status") or {}).get("phase")
        seen.setdefault(phase, set()).add(case["healthStatus"]["status"])
    for phase, status in expected.items():
        assert seen.get(phase) == {status}, f"phase {phase}: samples give {seen.get(phase)}, want {status}"
    assert seen[None] == {"Progressing"}  # no status yet


def test_every_tree_condition_outcome_has_a_sample() -> None:
    statuses = {c["healthStatus"]["status"] for c in load(TREE / "health_test.yaml")["tests"]}
    assert statuses == {"Healthy", "Progressing", "Degraded"}


@pytest.mark.parametrize("case", load(RUN / "actions" / "action_test.yaml")["discoveryTests"],
                         ids=lambda c: Path(c["inputPath"]).stem)  # fmt: skip
def test_discovery(case: dict[str, Any]) -> None:
    obj = load(RUN / "actions" / case["inputPath"])
    actions = run_lua((RUN / "actions" / "discovery.lua").read_text(), obj)
    assert sorted(actions) == sorted(a["name"] for a in case["result"])
    for want in case["result"]:
        got = actions[want["name"]]
        assert got["disabled"] is want["disabled"]
        assert got["displayName"]


@pytest.mark.parametrize("case", load(RUN / "actions" / "action_test.yaml")["actionTests"],
                         ids=lambda c: Path(c["inputPath"]).stem)  # fmt: skip
def test_cancel_action(case: dict[str, Any]) -> None:
    obj = load(RUN / "actions" / case["inputPath"])
    out = run_lua((RUN / "actions" / case["action"] / "action.lua").read_text(), obj)
    assert out == load(RUN / "actions" / case["expectedOutputPath"])
    assert out["metadata"]["annotations"][CANCEL_ANNOTATION] == "true"
    # Only the annotation changes: the spec is immutable and status belongs to the operator.
    assert out["spec"] == obj["spec"] and out.get("status") == obj.get("status")


def test_cancel_keeps_other_annotations() -> None:
    obj = load(RUN / "testdata" / "running.yaml")
    obj["metadata"]["annotations"] = {"team": "ap"}
    out = run_lua((RUN / "actions" / "cancel" / "action.lua").read_text(), obj)
    assert out["metadata"]["annotations"] == {"team": "ap", CANCEL_ANNOTATION: "true"}


def test_cancelled_run_after_the_action_is_suspended_and_cancel_disabled() -> None:
    """The whole loop: action -> (operator) phase Cancelled -> health Suspended, action disabled."""
    obj = load(RUN / "testdata" / "running.yaml")
    obj = run_lua((RUN / "actions" / "cancel" / "action.lua").read_text(), obj)
    assert run_lua((RUN / "actions" / "discovery.lua").read_text(), obj)["cancel"]["disabled"] is True
    assert run_lua((RUN / "health.lua").read_text(), obj)["message"].startswith("Cancellation requested")
    obj["status"]["phase"] = "Cancelled"
    assert run_lua((RUN / "health.lua").read_text(), obj)["status"] == "Suspended"


def test_annotation_is_the_documented_contract() -> None:
    contracts = (ROOT / "docs" / "contracts.md").read_text()
    section = contracts.split("## Annotations", 1)
    assert len(section) == 2, "docs/contracts.md has no '## Annotations' section"
    assert f'`{CANCEL_ANNOTATION}: "true"`' in section[1].split("\n## ", 1)[0]
    assert CANCEL_ANNOTATION in (RUN / "actions" / "cancel" / "action.lua").read_text()


def test_argocd_cm_snippet_is_in_sync_and_runs() -> None:
    check = subprocess.run([sys.executable, str(ROOT / "hack" / "sync-argocd-cm.py"), "--check"],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stderr
    cm = load(ROOT / "deploy" / "argocd" / "argocd-cm.yaml")
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    data = cm["data"]
    running = load(RUN / "testdata" / "running.yaml")
    assert run_lua(data["resource.customizations.health.agenttree.io_AgentRun"], running)["status"] == "Progressing"
    ready = load(TREE / "testdata" / "ready.yaml")
    assert run_lua(data["resource.customizations.health.agenttree.io_AgentTree"], ready)["status"] == "Healthy"
    actions = yaml.safe_load(data["resource.customizations.actions.agenttree.io_AgentRun"])
    assert run_lua(actions["discovery.lua"], running)["cancel"]["disabled"] is False
    (cancel,) = [d for d in actions["definitions"] if d["name"] == "cancel"]
    assert run_lua(cancel["action.lua"], running)["metadata"]["annotations"][CANCEL_ANNOTATION] == "true"


def test_example_application_points_at_the_chart() -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "argocd" / "application.yaml").read_text()) if d]
    apps = [d for d in docs if d["kind"] == "Application"]
    assert apps and all(d["apiVersion"] == "argoproj.io/v1alpha1" for d in apps)
    chart_app = next(a for a in apps if a["spec"]["source"].get("path") == "charts/agent-tree")
    assert chart_app["spec"]["syncPolicy"]["syncOptions"].count("ServerSideApply=true") == 1
    helm_values = chart_app["spec"]["source"]["helm"]["valuesObject"]
    assert helm_values["crds"]["install"] is True
