"""kstatus, the real library, on live objects of every phase (issue 10 item 3).

kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status) is what Helm 4 `--wait`, Flux and kpt use to
decide that a resource is reconciled. The judge here is the helper that hack/build-kstatus.sh builds
from the Go module proxy (hack/tools/kstatus: `status.Compute` on the objects kubectl returns), run
against AgentRuns and AgentTrees that a real operator process drives on the local platform:

- Pending (no tree yet; a tree whose workers the API server refuses) and Running runs: InProgress,
  with the reason they wait; Succeeded: Current; Failed and Cancelled: Failed;
- a Ready tree: Current; a tree whose worker pods are refused (a ResourceQuota of 0 pods): not Current;
- a run no operator has written yet (the CRD's default status): InProgress.

It also checks what `kubectl get` shows in the DURATION column (empty until the run finishes) and
what `kubectl describe` says of a run waiting on a refused tree.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_process import OperatorProcess, apply_crds, held_supervisor, invoice_tree, namespace, ok, running
from platformlib import REPO, Platform, built_tool, wait_for

pytestmark = pytest.mark.e2e

INVOICE = REPO / "examples" / "invoice"
RUN_DEADLINE = 180.0


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kstatus_bin() -> str:
    """The kstatus helper, built by hack/build-kstatus.sh on first use and reused from its cache."""
    return built_tool("build-kstatus.sh")


@pytest.fixture(scope="module")
def operator(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(platform)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with running(OperatorProcess(platform, log, "kst-*")) as op:
        yield op


@pytest.fixture
def ns(platform: Platform, operator: OperatorProcess) -> Iterator[str]:
    with namespace(platform, operator, "kst") as name:
        yield name


# --- helpers ---------------------------------------------------------------------------------------


def get(platform: Platform, ns: str, kind: str, name: str) -> dict:
    return json.loads(ok(platform.kubectl("get", kind, name, "-n", ns, "-o", "json")))


def apply(platform: Platform, ns: str, *docs: dict) -> None:
    ok(platform.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(list(docs))))


def kstatus(kstatus_bin: str, obj: dict) -> dict:
    """What kstatus computes for this object (exactly as kubectl returned it)."""
    proc = subprocess.run([kstatus_bin], input=json.dumps(obj), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kstatus failed ({proc.returncode}): {proc.stderr}"
    (result,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert (result["kind"], result["name"]) == (obj["kind"], obj["metadata"]["name"])
    return result


def run_manifest(name: str, tree: str = "invoice", **spec: Any) -> dict:
    return {
        "apiVersion": "agenttree.io/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": name},
        "spec": {"treeRef": {"name": tree}, "input": "Why was invoice #4821 rejected?", **spec},
    }


def condition(obj: dict, type_: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def run_in(platform: Platform, ns: str, name: str, phases: set[str], timeout: float = RUN_DEADLINE) -> dict:
    """The run, as soon as its status says one of ``phases`` (the object kstatus is then run on)."""

    def check() -> dict | None:
        run = get(platform, ns, "agentrun", name)
        status = run.get("status") or {}
        # observedGeneration: written by the operator, absent from the CRD's default status (Pending).
        return run if status.get("phase") in phases and status.get("observedGeneration") else None

    return wait_for(check, timeout, f"AgentRun {ns}/{name} in {sorted(phases)}, observed by the operator")


def tree_ready(platform: Platform, ns: str, name: str = "invoice") -> dict:
    def check() -> dict | None:
        tree = get(platform, ns, "agenttree", name)
        observed = (tree.get("status") or {}).get("observedGeneration") == tree["metadata"]["generation"]
        return tree if observed and condition(tree, "Ready").get("status") == "True" else None

    return wait_for(check, 90, f"AgentTree {ns}/{name} Ready")


def printed_row(platform: Platform, ns: str, name: str) -> dict[str, str]:
    """`kubectl get agentrun NAME`: the printer columns by header (an empty cell stays empty)."""
    header, row = ok(platform.kubectl("get", "agentrun", name, "-n", ns)).splitlines()[:2]
    starts = [header.index(column) for column in header.split()]
    ends = [*starts[1:], None]
    return {header[s:e].strip(): row[s:e].strip() for s, e in zip(starts, ends, strict=True)}


# --- tests -----------------------------------------------------------------------------------------


def test_runs_of_every_phase_through_the_real_kstatus(platform: Platform, ns: str, kstatus_bin: str) -> None:
    seen: dict[str, str] = {}

    # Pending: the tree does not exist yet. InProgress, and kstatus says why.
    apply(platform, ns, run_manifest("early"))
    early = run_in(platform, ns, "early", {"Pending"}, 60)
    result = kstatus(kstatus_bin, early)
    assert result["status"] == "InProgress", result
    assert "AgentTree 'invoice' not found" in result["message"] and "spec.treeRef.name" in result["message"]
    assert printed_row(platform, ns, "early")["DURATION"] == ""
    seen["Pending (no tree)"] = result["status"]

    # Running: the tree's supervisor has no worker, so the started workflows wait on its queue.
    apply(platform, ns, invoice_tree(held_supervisor))
    tree = tree_ready(platform, ns)
    result = kstatus(kstatus_bin, tree)
    assert result["status"] == "Current", result
    seen["AgentTree Ready"] = result["status"]
    apply(platform, ns, run_manifest("slow"), run_manifest("stop-me"), run_manifest("short", maxSteps=1))
    for name in ("early", "slow", "stop-me", "short"):
        run = run_in(platform, ns, name, {"Running"}, 60)
        result = kstatus(kstatus_bin, run)
        assert result["status"] == "InProgress", (name, result)
        assert run["status"].get("duration") is None
        row = printed_row(platform, ns, name)
        assert (row["PHASE"], row["DURATION"]) == ("Running", ""), row
    seen["Running"] = result["status"]
    print(f"\n`kubectl get agentruns` while running:\n{ok(platform.kubectl('get', 'agentruns', '-n', ns))}")

    # Cancelled (the annotation), Succeeded, and Failed (maxSteps 1 ends after one step): give the
    # supervisor its worker and let them finish.
    ok(platform.kubectl("annotate", "agentrun", "stop-me", "-n", ns, "agenttree.io/cancel=true"))
    apply(platform, ns, invoice_tree())
    for name, phase, expected in [
        ("slow", "Succeeded", "Current"),
        ("early", "Succeeded", "Current"),
        ("short", "Failed", "Failed"),
        ("stop-me", "Cancelled", "Failed"),
    ]:
        run = run_in(platform, ns, name, {"Succeeded", "Failed", "Cancelled"})
        assert run["status"]["phase"] == phase, run["status"]
        result = kstatus(kstatus_bin, run)
        assert result["status"] == expected, (name, result)
        row = printed_row(platform, ns, name)
        assert row["DURATION"] and row["DURATION"] == run["status"]["duration"], row
        seen[phase] = result["status"]
    assert condition(run, "Stalled")["reason"] == "Cancelled"
    assert condition(get(platform, ns, "agentrun", "short"), "Stalled")["reason"] == "MaxStepsReached"
    print(f"\n`kubectl get agentruns` when finished:\n{ok(platform.kubectl('get', 'agentruns', '-n', ns))}")

    # All at once, as `kubectl get -o json` lists them: the helper reads the List.
    listing = ok(platform.kubectl("get", "agentruns,agenttrees", "-n", ns, "-o", "json"))
    proc = subprocess.run([kstatus_bin], input=listing, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    print("\nkstatus on the namespace:\n" + proc.stdout)
    assert {(r["kind"], r["name"]): r["status"] for r in map(json.loads, proc.stdout.splitlines())} == {
        ("AgentRun", "early"): "Current",
        ("AgentRun", "slow"): "Current",
        ("AgentRun", "short"): "Failed",
        ("AgentRun", "stop-me"): "Failed",
        ("AgentTree", "invoice"): "Current",
    }
    print(f"kstatus by phase: {seen}")


def test_refused_tree_is_not_current_and_its_run_waits_saying_why(
    platform: Platform, ns: str, kstatus_bin: str
) -> None:
    # No pods may be created in this namespace: every worker pod is refused by the API server.
    ok(platform.kubectl("create", "quota", "no-pods", "--hard=pods=0", "-n", ns))
    apply(platform, ns, invoice_tree())

    def refused() -> dict | None:
        tree = get(platform, ns, "agenttree", "invoice")
        return tree if condition(tree, "Degraded").get("status") == "True" else None

    tree = wait_for(refused, 60, "the AgentTree Degraded by the refused worker pods")
    degraded = condition(tree, "Degraded")
    result = kstatus(kstatus_bin, tree)
    print(f"\nrefused tree: Degraded {degraded['reason']}: {degraded['message']}\nkstatus: {result}")
    assert result["status"] != "Current", result

    applied = time.monotonic()
    apply(platform, ns, run_manifest("waits"))

    def waiting() -> dict | None:
        run = get(platform, ns, "agentrun", "waits")
        return run if condition(run, "Reconciling").get("reason") == "TreeDegraded" else None

    run = wait_for(waiting, 60, "the run Pending on the Degraded tree")
    print(f"\nrun Pending with TreeDegraded {time.monotonic() - applied:.1f}s after it was applied")
    assert run["status"]["phase"] == "Pending"
    message = condition(run, "Reconciling")["message"]
    assert message.startswith(f"AgentTree 'invoice' is Degraded ({degraded['reason']}): "), message
    assert "spec.agents[" in message and "quota" in message, message
    result = kstatus(kstatus_bin, run)
    assert result == {**result, "status": "InProgress", "message": message}, result
    described = ok(platform.kubectl("describe", "agentrun", "waits", "-n", ns))
    assert "TreeDegraded" in described and degraded["reason"] in described, described
    print(f"\n`kubectl describe agentrun waits` (conditions):\n{described[described.find('Conditions:') :]}")

    # The quota goes: the controller-manager retries the pods, the tree recovers, the run starts.
    ok(platform.kubectl("delete", "quota", "no-pods", "-n", ns))
    freed = time.monotonic()
    started = run_in(platform, ns, "waits", {"Running", "Succeeded", "Failed", "Cancelled"})
    print(f"run left Pending {time.monotonic() - freed:.1f}s after the quota was deleted")
    assert started["status"]["phase"] != "Cancelled"
    done = run_in(platform, ns, "waits", {"Succeeded", "Failed", "Cancelled"})
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert kstatus(kstatus_bin, done)["status"] == "Current"
    assert kstatus(kstatus_bin, tree_ready(platform, ns))["status"] == "Current"


def test_a_run_no_operator_has_seen_yet_reads_in_progress(
    platform: Platform, operator: OperatorProcess, kstatus_bin: str
) -> None:
    """The CRD's default status: before any operator writes, the API server shows the run Pending /
    Reconciling, so Helm `--wait` or Flux cannot take a brand-new run for a finished one."""
    apply_crds(platform)  # this checkout's CRDs (the operator fixture applied them too)
    unwatched = f"nokst-{uuid.uuid4().hex[:8]}"  # matches no operator's namespace glob
    ok(platform.kubectl("create", "namespace", unwatched))
    try:
        apply(platform, unwatched, run_manifest("fresh"))
        run = get(platform, unwatched, "agentrun", "fresh")
        assert run["status"]["phase"] == "Pending" and condition(run, "Reconciling")["reason"] == "Created"
        result = kstatus(kstatus_bin, run)
        assert result["status"] == "InProgress", result
        assert result["message"] == "waiting for the agent-tree operator to pick the run up"
        assert printed_row(platform, unwatched, "fresh")["PHASE"] == "Pending"
    finally:
        platform.kubectl("delete", "namespace", unwatched, "--wait=false")


def test_helper_reads_files_and_names_bad_input(kstatus_bin: str, tmp_path: Path) -> None:
    manifest = tmp_path / "objects.yaml"
    manifest.write_text((INVOICE / "agenttree.yaml").read_text() + "---\n" + yaml.safe_dump(run_manifest("r")))
    proc = subprocess.run([kstatus_bin, str(manifest)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # Objects without status (here: not applied, so without the CRD's default) read Current: that is
    # kstatus' rule for anything that publishes no conditions.
    assert [(r["kind"], r["status"]) for r in map(json.loads, proc.stdout.splitlines())] == [
        ("AgentTree", "Current"),
        ("AgentRun", "Current"),
    ]
    manifest.write_text("apiVersion: agenttree.io/v1alpha1\nkind: AgentRun\nmetadata: {namespace: x}\n")
    proc = subprocess.run([kstatus_bin, str(manifest)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "document 1: AgentRun: metadata.name is missing" in proc.stderr, proc.stderr
