"""Argo CD health checks and the cancel action for AgentTree / AgentRun, run by Argo CD's own engine.

The judge is ``argocd-lua`` (hack/tools/argocd-lua, built by hack/build-argocd-lua.sh): the
``util/lua`` package of github.com/argoproj/argo-cd/v3 v3.6.1, i.e. gopher-lua with the sandbox the
application controller and API server use for argocd-cm customizations (``UseOpenLibs=false``: only
the base, table and package libraries and a safe ``os`` with ``time`` / ``date``; no ``string``,
``math``, ``io``, ``debug`` or ``coroutine``). ``argocd-lua test`` reads deploy/argocd's
health_test.yaml / action_test.yaml files the way Argo CD's TestLuaHealthScript and
TestLuaResourceActionsScript do.

A lupa (C Lua 5.1) emulation is kept for fast per-case feedback; it opens exactly the globals Argo
CD's sandbox opens, which ``test_lupa_sandbox_has_exactly_argo_cds_globals`` checks against the real
engine.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51
import pytest
import yaml
from platformlib import built_tool

from agent_tree.spec import AgentRunSpec
from agent_tree.spec_runs import RunPhase

ROOT = Path(__file__).resolve().parents[2]
CUSTOMIZATIONS = ROOT / "deploy" / "argocd" / "resource_customizations"
CUSTOM = CUSTOMIZATIONS / "agenttree.io"
RUN = CUSTOM / "AgentRun"
TREE = CUSTOM / "AgentTree"
ARGOCD_CM = ROOT / "deploy" / "argocd" / "argocd-cm.yaml"
CANCEL_ANNOTATION = "agenttree.io/cancel"
HEALTH_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

# What Argo CD's VM.runLuaWithResourceActionParameters opens when UseOpenLibs is false:
# lua.OpenPackage, lua.OpenBase, lua.OpenTable, and its safe os (time, date) only as a preloaded
# module: `local os = require("os")` works, the global `os` is nil (its OpenSafeOs registers the
# functions under the table library's name, where they do not show up either). The lupa runtime
# below removes everything else C Lua 5.1 opens, Lua 5.1's extra table functions, and the string
# metatable (so ("x"):upper() fails as in gopher-lua without its string library).
SANDBOX = """
local time, date = os.time, os.date
debug.setmetatable("", nil)
string, math, io, debug, coroutine, gcinfo, os, python = nil, nil, nil, nil, nil, nil, nil, nil
table.setn, table.foreach, table.foreachi = nil, nil, nil
for _, name in ipairs({"string", "math", "io", "debug", "coroutine", "os", "python"}) do
  package.loaded[name] = nil
end
package.preload.os = function() return {time = time, date = date} end
"""

# Lists every global and every member of a table-valued global (one level), sorted: the same
# probe runs in both engines.
PROBE = """
local names = {}
for k, v in pairs(_G) do
  if type(v) == "table" and k ~= "_G" and k ~= "obj" and k ~= "actionParams" then
    for m, _ in pairs(v) do
      table.insert(names, k .. "." .. tostring(m))
    end
  end
  table.insert(names, k)
end
table.insert(names, "stringMetatable=" .. tostring(getmetatable("") ~= nil))
table.sort(names)
return {status = "Healthy", message = table.concat(names, " ")}
"""

# Globals only gopher-lua has (internals, not libraries): the comparison allows these.
GOPHER_ONLY = {"_GOPHER_LUA_VERSION", "_printregs"}


# --- the real engine -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def argocd_lua() -> str:
    return built_tool("build-argocd-lua.sh")


def helper(binary: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *args], input=input, capture_output=True, text=True, timeout=120)


def expected_cases() -> int:
    n = 0
    for f in CUSTOMIZATIONS.rglob("health_test.yaml"):
        n += len(load(f)["tests"])
    for f in CUSTOMIZATIONS.rglob("action_test.yaml"):
        spec = load(f)
        n += len(spec.get("discoveryTests") or []) + len(spec.get("actionTests") or [])
    return n


@pytest.mark.parametrize("source", ["scripts", "argocd-cm"])
def test_every_case_passes_argo_cds_own_engine(argocd_lua: str, source: str) -> None:
    """Every health_test.yaml / action_test.yaml case, judged as Argo CD's own tests judge them.

    ``scripts``: the .lua files beside each test file; ``argocd-cm``: the same cases with the scripts
    taken from the rendered deploy/argocd/argocd-cm.yaml, as a cluster's Argo CD reads them.
    """
    extra = ["--argocd-cm", str(ARGOCD_CM)] if source == "argocd-cm" else []
    proc = helper(argocd_lua, "test", *extra, str(CUSTOMIZATIONS))
    failures = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert proc.returncode == 0 and not failures, proc.stdout + proc.stderr
    summary = re.search(r"^(\d+) passed, (\d+) failed$", proc.stdout, re.M)
    assert summary, proc.stdout
    assert (int(summary[1]), int(summary[2])) == (expected_cases(), 0), proc.stdout


def test_the_harness_fails_a_wrong_expectation(argocd_lua: str, tmp_path: Path) -> None:
    """A case whose expected health differs fails, and so does a discovery entry missing a field."""
    kind = tmp_path / "agenttree.io" / "AgentRun"
    (kind / "actions").mkdir(parents=True)
    for f in ("health.lua",):
        (kind / f).write_text((RUN / f).read_text())
    (kind / "actions" / "discovery.lua").write_text((RUN / "actions" / "discovery.lua").read_text())
    (kind / "testdata").mkdir()
    (kind / "testdata" / "running.yaml").write_text((RUN / "testdata" / "running.yaml").read_text())
    (kind / "health_test.yaml").write_text(
        yaml.safe_dump({"tests": [{"inputPath": "testdata/running.yaml",
                                   "healthStatus": {"status": "Healthy", "message": "Running"}}]})
    )  # fmt: skip
    (kind / "actions" / "action_test.yaml").write_text(
        yaml.safe_dump({"discoveryTests": [{"inputPath": "../testdata/running.yaml",
                                            "result": [{"name": "cancel", "disabled": False}]}]})
    )  # fmt: skip
    proc = helper(argocd_lua, "test", str(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.count("FAIL") == 2 and "0 passed, 2 failed" in proc.stdout, proc.stdout


def health_of(binary: str, obj: dict[str, Any], *args: str) -> subprocess.CompletedProcess:
    return helper(binary, "health", *args, input=json.dumps(obj))


def test_string_library_is_closed_in_argo_cd(argocd_lua: str, tmp_path: Path) -> None:
    """A script using string.format (or a string method) fails in Argo CD's sandbox and in lupa's."""
    obj = load(RUN / "testdata" / "running.yaml")
    for body in ('string.format("%s", "x")', '("x"):upper()', "math.floor(1.5)"):
        script = tmp_path / "health.lua"
        script.write_text(f'return {{status = "Healthy", message = tostring({body})}}\n')
        proc = health_of(argocd_lua, obj, "--script", str(script))
        assert proc.returncode != 0, f"{body}: {proc.stdout}"
        assert "argocd-lua health" in proc.stderr, proc.stderr
        with pytest.raises(lua51.LuaError):
            run_lua(script.read_text(), obj)
        # The same script passes once Argo CD opens the standard libraries (useOpenLibs: "true").
        opened = health_of(argocd_lua, obj, "--script", str(script), "--open-libs")
        assert opened.returncode == 0 and json.loads(opened.stdout)[0]["status"] == "Healthy", opened.stderr


def test_os_time_and_date_only_through_require(argocd_lua: str, tmp_path: Path) -> None:
    """Argo CD's safe os: `require("os")` gives time and date, nothing else; the global os is nil."""
    script = tmp_path / "health.lua"
    script.write_text(
        'local os2 = require("os")\n'
        'return {status = "Healthy", message = tostring(os) .. " " .. tostring(os2.time() > 0) .. " "'
        ' .. type(os2.date) .. " " .. tostring(os2.exit) .. " " .. tostring(os2.getenv)}\n'
    )
    obj = load(RUN / "testdata" / "running.yaml")
    proc = health_of(argocd_lua, obj, "--script", str(script))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["message"] == "nil true function nil nil"
    assert run_lua(script.read_text(), obj)["message"] == "nil true function nil nil"


def test_lupa_sandbox_has_exactly_argo_cds_globals(argocd_lua: str, tmp_path: Path) -> None:
    script = tmp_path / "probe.lua"
    script.write_text(PROBE)
    proc = health_of(argocd_lua, load(RUN / "testdata" / "running.yaml"), "--script", str(script))
    assert proc.returncode == 0, proc.stderr
    argo = set(json.loads(proc.stdout)[0]["message"].split())
    emulated = set(run_lua(PROBE, load(RUN / "testdata" / "running.yaml"))["message"].split())
    argo_only = {n for n in argo - emulated if n.split(".")[0] not in GOPHER_ONLY}
    assert not argo_only and not emulated - argo, f"only in Argo CD: {argo_only}; only in lupa: {emulated - argo}"
    assert "stringMetatable=false" in argo and "string.format" not in argo and "os" not in argo


def test_argocd_cm_keys_are_the_ones_argo_cd_reads(argocd_lua: str) -> None:
    """The rendered ConfigMap drives the real engine: health and the cancel action by GVK."""
    cm = ["--argocd-cm", str(ARGOCD_CM)]
    hs = health_of(argocd_lua, load(TREE / "testdata" / "refused.yaml"), *cm)
    assert hs.returncode == 0, hs.stderr
    assert json.loads(hs.stdout)[0]["status"] == "Degraded"
    running = json.dumps(load(RUN / "testdata" / "running.yaml"))
    act = helper(argocd_lua, "action", *cm, "--action", "cancel", input=running)
    assert act.returncode == 0, act.stderr
    (impacted,) = json.loads(act.stdout)
    assert impacted["operation"] == "patch"
    assert impacted["resource"]["metadata"]["annotations"] == {CANCEL_ANNOTATION: "true"}
    missing = helper(argocd_lua, "action", *cm, "--action", "pause", input=running)
    assert missing.returncode != 0 and "pause" in missing.stderr


# --- the lupa emulation (fast, per case) ----------------------------------------------------------


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
    """Evaluate an Argo CD Lua script against ``obj`` in a fresh Lua 5.1 opened as Argo CD's sandbox."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=False, register_eval=False, register_builtins=False)
    lua.execute(SANDBOX)
    lua.globals().obj = _to_lua(lua, obj)
    lua.globals().actionParams = lua.table()
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
    """Every phase of agent_tree.spec.RunPhase (the CRD's enum) maps as docs/gitops.md says.

    AwaitingApproval and Paused are Argo CD's Suspended: the run waits on a person (a decision, a
    raised budget).
    """
    expected = {"Pending": "Progressing", "Running": "Progressing", "Succeeded": "Healthy",
                "Failed": "Degraded", "Cancelled": "Suspended", "AwaitingApproval": "Suspended",
                "Paused": "Suspended"}  # fmt: skip
    assert set(typing.get_args(RunPhase)) <= set(expected), "a phase was added: map it in health.lua"
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
        assert {"name": want["name"], **actions[want["name"]]} == want


def action_cases(action: str) -> list[dict[str, Any]]:
    return [c for c in load(RUN / "actions" / "action_test.yaml")["actionTests"] if c["action"] == action]


@pytest.mark.parametrize("case", action_cases("cancel"), ids=lambda c: Path(c["inputPath"]).stem)
def test_cancel_action(case: dict[str, Any]) -> None:
    obj = load(RUN / "actions" / case["inputPath"])
    out = run_lua((RUN / "actions" / case["action"] / "action.lua").read_text(), obj)
    assert out == load(RUN / "actions" / case["expectedOutputPath"])
    assert out["metadata"]["annotations"][CANCEL_ANNOTATION] == "true"
    # Only the annotation changes: the spec is immutable and status belongs to the operator.
    assert out["spec"] == obj["spec"] and out.get("status") == obj.get("status")


@pytest.mark.parametrize("case", action_cases("retry"), ids=lambda c: Path(c["inputPath"]).stem)
def test_retry_action_creates_a_fork_and_leaves_the_run_alone(case: dict[str, Any]) -> None:
    """retry creates ONE new AgentRun with spec.forkFrom naming the run, valid for the CRD's schema."""
    obj = load(RUN / "actions" / case["inputPath"])
    (created,) = run_lua((RUN / "actions" / "retry" / "action.lua").read_text(), obj)
    assert created["operation"] == "create"
    (want,) = load(RUN / "actions" / case["expectedOutputPath"])
    assert created["resource"] == want["unstructuredObj"]
    spec = AgentRunSpec.model_validate(created["resource"]["spec"])  # what the API server will accept
    assert spec.forkFrom.run == obj["metadata"]["name"] and spec.forkFrom.step is None  # a retry
    assert created["resource"]["metadata"]["namespace"] == obj["metadata"]["namespace"]


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


def test_argocd_cm_snippet_is_in_sync() -> None:
    check = subprocess.run([sys.executable, str(ROOT / "hack" / "sync-argocd-cm.py"), "--check"],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stderr
    cm = load(ARGOCD_CM)
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    assert not any(k.startswith("resource.customizations.useOpenLibs") for k in cm["data"])  # the sandbox


def test_no_script_uses_a_library_argo_cd_keeps_closed() -> None:
    for script in CUSTOM.rglob("*.lua"):
        code = "\n".join(line.split("--", 1)[0] for line in script.read_text().splitlines())
        assert not re.search(
            r"\b(string|math|io|debug|coroutine)\s*\.|:\s*(format|upper|lower|sub|find|gsub|match)\s*\(", code
        ), script


def test_example_application_points_at_the_chart() -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "argocd" / "application.yaml").read_text()) if d]
    apps = [d for d in docs if d["kind"] == "Application"]
    assert apps and all(d["apiVersion"] == "argoproj.io/v1alpha1" for d in apps)
    chart_app = next(a for a in apps if a["spec"]["source"].get("path") == "charts/agent-tree")
    assert chart_app["spec"]["syncPolicy"]["syncOptions"].count("ServerSideApply=true") == 1
    helm_values = chart_app["spec"]["source"]["helm"]["valuesObject"]
    assert helm_values["crds"]["install"] is True
