"""Argo CD's own Lua engine judges live agent-tree objects (issue 10 item 4).

The operator runs as a real process watching ``argo-*`` namespaces; runs execute on real workers
and Temporal. Each live object is read with ``kubectl get -o yaml`` and handed to ``argocd-lua``
(hack/build-argocd-lua.sh: argo-cd v3.6.1's util/lua, the engine of Argo CD's application controller
and API server) with the scripts from deploy/argocd/argocd-cm.yaml, found by group/kind as Argo CD
finds them. The cancel action's result is applied the way Argo CD's API server applies it: the JSON
merge patch between the live object and the action's output, sent with ``kubectl patch --type merge``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_process import OperatorProcess, apply_crds, namespace, ok, running
from platformlib import REPO, Platform, built_tool, wait_for

pytestmark = pytest.mark.e2e

INVOICE = REPO / "examples" / "invoice"
ARGOCD_CM = REPO / "deploy" / "argocd" / "argocd-cm.yaml"
RUN_DEADLINE = 180.0


@pytest.fixture(scope="module")
def argocd_lua() -> str:
    return built_tool("build-argocd-lua.sh")


@pytest.fixture(scope="module")
def operator(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(platform)
    op = OperatorProcess(platform, tmp_path_factory.mktemp("operator") / "operator.log", "argo-*")
    with running(op):
        yield op


@pytest.fixture
def ns(platform: Platform, operator: OperatorProcess) -> Iterator[str]:
    with namespace(platform, operator, "argo") as name:
        yield name


# --- helpers ---------------------------------------------------------------------------------------


def apply(platform: Platform, ns: str, doc: dict) -> None:
    ok(platform.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(doc)))


def live_yaml(platform: Platform, ns: str, kind: str, name: str) -> str:
    return ok(platform.kubectl("get", kind, name, "-n", ns, "-o", "yaml"))


def health_of(binary: str, obj_yaml: str) -> dict[str, Any]:
    """Argo CD's health of one object (YAML): {"status": ..., "message": ...}."""
    proc = subprocess.run([binary, "health", "--argocd-cm", str(ARGOCD_CM), "-"],
                          input=obj_yaml, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, f"argocd-lua health: {proc.stderr}"
    (row,) = json.loads(proc.stdout)
    return {"status": row.get("status"), "message": row.get("message")}


def argo_health(binary: str, platform: Platform, ns: str, kind: str, name: str) -> dict[str, Any]:
    """Argo CD's health of the live object."""
    return health_of(binary, live_yaml(platform, ns, kind, name))


def wait_health(binary: str, platform: Platform, ns: str, kind: str, name: str, status: str, timeout: float) -> dict:
    return wait_for(
        lambda: (hs := argo_health(binary, platform, ns, kind, name))["status"] == status and hs,
        timeout,
        f"Argo CD health {status} for {kind} {ns}/{name}",
        interval=0.5,
    )


def wait_health_message(binary: str, platform: Platform, ns: str, run: str, prefix: str, timeout: float = 30) -> dict:
    """Argo CD's health of AgentRun ``run`` once its message starts with ``prefix`` (a failure shows the last)."""

    def check() -> dict:
        hs = argo_health(binary, platform, ns, "agentrun", run)
        assert hs["message"].startswith(prefix), hs
        return hs

    return wait_for(check, timeout, f"the health of run {run} to say {prefix!r}...")


def invoice_tree(supervisor_replicas: int | None = None) -> dict:
    tree = yaml.safe_load((INVOICE / "agenttree.yaml").read_text())
    if supervisor_replicas is not None:
        tree["spec"]["agents"][0]["worker"] = {"replicas": supervisor_replicas}
    return tree


def run_manifest(name: str, tree: str = "invoice", **spec: Any) -> dict:
    return {
        "apiVersion": "agenttree.io/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": name},
        "spec": {"treeRef": {"name": tree}, "input": "Why was invoice #4821 rejected?", **spec},
    }


def phase(platform: Platform, ns: str, name: str) -> str | None:
    run = json.loads(ok(platform.kubectl("get", "agentrun", name, "-n", ns, "-o", "json")))
    return (run.get("status") or {}).get("phase")


def wait_phase(platform: Platform, ns: str, name: str, want: str, timeout: float = RUN_DEADLINE) -> None:
    wait_for(lambda: phase(platform, ns, name) == want, timeout, f"AgentRun {ns}/{name} {want}", interval=0.5)


def condition(obj: dict, type_: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


# --- tests -----------------------------------------------------------------------------------------


def test_runs_of_every_phase_and_a_ready_tree(argocd_lua: str, platform: Platform, ns: str) -> None:
    # Pending: its tree does not exist; Argo CD says why it waits.
    apply(platform, ns, run_manifest("waits", tree="absent"))
    wait_phase(platform, ns, "waits", "Pending", 60)
    # Until the operator has seen it, the run shows the CRD's default status ("waiting for the agent-tree
    # operator to pick the run up"); then the operator's reason.
    hs = wait_health_message(argocd_lua, platform, ns, "waits", "Pending: AgentTree 'absent' not found in namespace")
    assert hs["status"] == "Progressing"
    assert "step 0" not in hs["message"]

    # Running: no supervisor worker yet, so a started run stays Running.
    apply(platform, ns, invoice_tree(supervisor_replicas=0))
    apply(platform, ns, run_manifest("held"))
    wait_phase(platform, ns, "held", "Running")
    hs = argo_health(argocd_lua, platform, ns, "agentrun", "held")
    assert hs == {"status": "Progressing", "message": "Running (agent supervisor)"}

    # The cancel action through Argo CD's engine, its merge patch applied as Argo CD's API server does.
    proc = subprocess.run([argocd_lua, "action", "--argocd-cm", str(ARGOCD_CM), "--action", "cancel", "-"],
                          input=live_yaml(platform, ns, "agentrun", "held"), capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (impacted,) = json.loads(proc.stdout)
    assert impacted["operation"] == "patch"
    assert impacted["mergePatch"] == {"metadata": {"annotations": {"agenttree.io/cancel": "true"}}}
    ok(platform.kubectl("patch", "agentrun", "held", "-n", ns, "--type", "merge",
                        "-p", json.dumps(impacted["mergePatch"])))  # fmt: skip
    hs = argo_health(argocd_lua, platform, ns, "agentrun", "held")
    assert hs["status"] == "Progressing" and hs["message"].startswith("Cancellation requested; "), hs
    # A supervisor worker lets the workflow see the cancellation; the operator sets Cancelled.
    apply(platform, ns, invoice_tree())
    wait_phase(platform, ns, "held", "Cancelled")
    hs = argo_health(argocd_lua, platform, ns, "agentrun", "held")
    assert hs["status"] == "Suspended", hs
    discovery = subprocess.run([argocd_lua, "discovery", "--argocd-cm", str(ARGOCD_CM), "-"],
                               input=live_yaml(platform, ns, "agentrun", "held"), capture_output=True, text=True,
                               timeout=60)  # fmt: skip
    assert discovery.returncode == 0, discovery.stderr
    assert json.loads(discovery.stdout)[0]["actions"][0]["disabled"] is True

    # A Ready tree: Healthy, its Ready message once.
    tree_hs = wait_health(argocd_lua, platform, ns, "agenttree", "invoice", "Healthy", 90)
    tree = json.loads(ok(platform.kubectl("get", "agenttree", "invoice", "-n", ns, "-o", "json")))
    assert tree_hs["message"] == condition(tree, "Ready")["message"] == "4/4 agents ready", tree_hs

    # Succeeded -> Healthy with the answer; Failed (max steps) -> Degraded with why.
    apply(platform, ns, run_manifest("ok"))
    apply(platform, ns, run_manifest("short", maxSteps=1))
    wait_phase(platform, ns, "ok", "Succeeded")
    hs = argo_health(argocd_lua, platform, ns, "agentrun", "ok")
    assert hs["status"] == "Healthy" and hs["message"].startswith("Invoice #4821 rejected"), hs
    wait_phase(platform, ns, "short", "Failed")
    hs = argo_health(argocd_lua, platform, ns, "agentrun", "short")
    assert hs["status"] == "Degraded" and "max_steps_reached" in hs["message"], hs

    # The Pending run is still Pending (and Progressing) at the end.
    assert argo_health(argocd_lua, platform, ns, "agentrun", "waits")["status"] == "Progressing"
    print("\nArgo CD health of the live objects:")
    for kind, name in [("agentrun", n) for n in ("waits", "held", "ok", "short")] + [("agenttree", "invoice")]:
        print(f"  {kind}/{name}: {argo_health(argocd_lua, platform, ns, kind, name)}")


def test_tree_whose_workers_are_refused_is_degraded(argocd_lua: str, platform: Platform, ns: str) -> None:
    """A ResourceQuota allowing 0 pods: the API server refuses every worker pod; Argo CD says Degraded."""
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-pods"},
        "spec": {"hard": {"pods": "0"}},
    }
    apply(platform, ns, quota)
    apply(platform, ns, invoice_tree())
    hs = wait_health(argocd_lua, platform, ns, "agenttree", "invoice", "Degraded", 60)
    assert hs["message"].startswith("spec.agents["), hs
    assert "forbidden" in hs["message"] and "exceeded quota" in hs["message"], hs
    # The message grows while more agents' pods get refused: compare health and condition of ONE read.
    snapshot = live_yaml(platform, ns, "agenttree", "invoice")
    same_hs = health_of(argocd_lua, snapshot)
    degraded = condition(yaml.safe_load(snapshot), "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "WorkersRefused", degraded
    assert same_hs["status"] == "Degraded" and same_hs["message"] == degraded["message"]
    # A run on that tree waits, and Argo CD says why.
    apply(platform, ns, run_manifest("blocked"))
    wait_phase(platform, ns, "blocked", "Pending", 60)
    run_hs = wait_health_message(
        argocd_lua, platform, ns, "blocked", "Pending: AgentTree 'invoice' is Degraded (WorkersRefused): spec.agents["
    )
    assert run_hs["status"] == "Progressing", run_hs
    print(f"\nArgo CD health of the refused tree: {hs}\nand of a run on it: {run_hs}")


def test_helper_reads_live_lists(argocd_lua: str, platform: Platform, ns: str, tmp_path: Path) -> None:
    """`kubectl get -o yaml` of several objects (a List) gives one health row each."""
    apply(platform, ns, run_manifest("a", tree="absent"))
    apply(platform, ns, run_manifest("b", tree="absent"))
    wait_phase(platform, ns, "a", "Pending", 60)
    wait_phase(platform, ns, "b", "Pending", 60)
    listing = tmp_path / "runs.yaml"
    listing.write_text(ok(platform.kubectl("get", "agentruns", "-n", ns, "-o", "yaml")))
    proc = subprocess.run([argocd_lua, "health", "--argocd-cm", str(ARGOCD_CM), str(listing)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert sorted(r["name"] for r in rows) == ["a", "b"]
    assert {r["status"] for r in rows} == {"Progressing"}
