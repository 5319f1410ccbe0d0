"""Worker pods under Pod Security `restricted`, and refused workers surfaced on the tree (issue 10
items 1 and 2), end to end on the local platform: the real API server's PodSecurity and
ResourceQuota admission, the real controller-manager's ReplicaSet and Deployment controllers,
`agent-tree operator` as a process, workers as pods the pod runner runs as processes, and real
Temporal, PostgreSQL and Redis.

The operator here watches only namespaces named ``pss-*``. Every wait polls with a deadline; the
seconds from a cause to the tree's condition are measured and printed (`pytest -s` shows them).
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_process import OperatorProcess, apply_crds, namespace, ok, running
from platformlib import REPO, Platform, wait_for

from agent_tree import naming
from agent_tree.spec import AgentTreeSpec

pytestmark = pytest.mark.e2e

INVOICE = REPO / "examples" / "invoice"
CHART = REPO / "charts" / "agent-tree"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
SURFACE_DEADLINE = 10.0  # the bound: a refusal reaches the tree within 10 s
RUN_DEADLINE = 180.0


@pytest.fixture(scope="module")
def operator(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(platform)
    with running(OperatorProcess(platform, tmp_path_factory.mktemp("operator") / "operator.log", "pss-*")) as op:
        yield op


@pytest.fixture
def ns(platform: Platform, operator: OperatorProcess) -> Iterator[str]:
    with namespace(platform, operator, "pss") as name:
        yield name


@pytest.fixture
def restricted_ns(platform: Platform, ns: str) -> str:
    ok(platform.kubectl("label", "namespace", ns, *(f"{k}={v}" for k, v in RESTRICTED.items())))
    return ns


# --- helpers ---------------------------------------------------------------------------------------


def get(platform: Platform, ns: str, kind: str, name: str | None = None, *args: str) -> Any:
    return json.loads(ok(platform.kubectl("get", kind, *([name] if name else []), "-n", ns, "-o", "json", *args)))


def apply(platform: Platform, ns: str, doc: dict) -> str:
    return ok(platform.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(doc)))


def invoice_tree() -> dict:
    return yaml.safe_load((INVOICE / "agenttree.yaml").read_text())


def condition(obj: dict, type_: str) -> dict:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return {}


def tree_ready(platform: Platform, ns: str, timeout: float = 120) -> dict:
    def check() -> dict | None:
        tree = get(platform, ns, "agenttree", "invoice")
        current = (tree.get("status") or {}).get("observedGeneration") == tree["metadata"]["generation"]
        return tree if current and condition(tree, "Ready").get("status") == "True" else None

    return wait_for(check, timeout, f"AgentTree {ns}/invoice Ready")


def degraded(platform: Platform, ns: str, status: str, timeout: float) -> tuple[dict, float]:
    """Poll until the tree's Degraded condition has ``status``; return the tree and the seconds it took."""
    start = time.monotonic()

    def check() -> dict | None:
        tree = get(platform, ns, "agenttree", "invoice")
        return tree if condition(tree, "Degraded").get("status") == status else None

    tree = wait_for(check, timeout, f"AgentTree {ns}/invoice Degraded={status}", interval=0.1)
    return tree, time.monotonic() - start


def iso_seconds(value: str) -> float:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def worker_pods(platform: Platform, ns: str) -> list[dict]:
    return get(platform, ns, "pods", None, "-l", "app.kubernetes.io/managed-by=agent-tree-operator")["items"]


# --- 1. the invoice tree in a namespace that enforces `restricted` ---------------------------------


def test_invoice_tree_runs_in_a_restricted_namespace(platform: Platform, restricted_ns: str) -> None:
    ns = restricted_ns
    apply(platform, ns, invoice_tree())
    tree = tree_ready(platform, ns)
    assert tree["status"]["ready"] == "4/4"
    assert condition(tree, "Degraded")["status"] == "False"
    assert (condition(tree, "Reconciling")["status"], condition(tree, "Stalled")["status"]) == ("False", "False")
    # The pods exist: PodSecurity admitted them (it refuses at pod creation, not at Deployment creation).
    pods = worker_pods(platform, ns)
    assert len(pods) == 5, [p["metadata"]["name"] for p in pods]  # invoice-specialist runs 2
    for pod in pods:
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}

    run = yaml.safe_load((INVOICE / "agentrun.yaml").read_text())
    apply(platform, ns, run)

    def finished() -> dict | None:
        obj = get(platform, ns, "agentrun", run["metadata"]["name"])
        phase = (obj.get("status") or {}).get("phase")
        return obj if phase in ("Succeeded", "Failed", "Cancelled") else None

    done = wait_for(finished, RUN_DEADLINE, f"AgentRun {ns}/{run['metadata']['name']} finished")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["answer"].startswith("Invoice #4821 rejected due to missing PO number")


def test_a_tree_that_relaxes_restricted_is_refused_and_says_so(platform: Platform, restricted_ns: str) -> None:
    """The namespace really enforces: a per-agent override that breaks `restricted` gets its pods
    refused, and the tree quotes PodSecurity's refusal naming the agent (the other agents run)."""
    ns = restricted_ns
    tree = invoice_tree()
    tree["spec"]["agents"][1]["worker"] = {"securityContext": {"allowPrivilegeEscalation": True}}
    start = time.monotonic()
    apply(platform, ns, tree)
    refused, _ = degraded(platform, ns, "True", 30)
    seconds = time.monotonic() - start
    dep = get(platform, ns, "deployment", naming.deployment_name("invoice", "triage"))
    failure = condition(dep, "ReplicaFailure")
    lag = iso_seconds(condition(refused, "Degraded")["lastTransitionTime"]) - iso_seconds(failure["lastTransitionTime"])
    print(f"\nPodSecurity refusal on the tree {seconds:.1f}s after kubectl apply; "
          f"{lag:.0f}s (1 s resolution) after the Deployment's ReplicaFailure")  # fmt: skip
    assert lag <= 2, (failure, condition(refused, "Degraded"))
    cond = condition(refused, "Degraded")
    assert cond["reason"] == "WorkersRefused", cond
    assert cond["message"].startswith("spec.agents[1] (triage): worker pods refused (FailedCreate): "), cond
    assert 'violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false' in cond["message"], cond
    assert condition(refused, "Stalled")["status"] == "True"
    assert condition(refused, "Ready")["status"] == "False"
    assert seconds < SURFACE_DEADLINE + 10  # the tree is created, applied and refused within this


# --- 2. a ResourceQuota that allows no pods -----------------------------------------------------------


def test_quota_refusal_degrades_the_tree_within_seconds_and_clears(platform: Platform, ns: str) -> None:
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "zero"}, "spec": {"hard": {"pods": "0"}}}
    apply(platform, ns, quota)
    wait_for(lambda: (get(platform, ns, "resourcequota", "zero").get("status") or {}).get("hard"), 30,
             "the quota controller to fill in status.hard")  # fmt: skip
    tree = invoice_tree()
    start = time.monotonic()
    apply(platform, ns, tree)
    refused, seconds = degraded(platform, ns, "True", SURFACE_DEADLINE)
    seconds = time.monotonic() - start
    cond = condition(refused, "Degraded")
    print(f"\nquota refusal: Degraded=True {seconds:.2f}s after kubectl apply of the tree")
    assert seconds <= SURFACE_DEADLINE
    assert cond["reason"] == "WorkersRefused", cond
    # Every agent is named with the API server's refusal quoted.
    for i, agent in enumerate(a["name"] for a in tree["spec"]["agents"]):
        wait_for(
            lambda i=i, agent=agent: f"spec.agents[{i}] ({agent}): worker pods refused (FailedCreate): pods "
            in condition(get(platform, ns, "agenttree", "invoice"), "Degraded")["message"],
            SURFACE_DEADLINE, f"spec.agents[{i}] ({agent}) in the Degraded message",
        )  # fmt: skip
    message = condition(get(platform, ns, "agenttree", "invoice"), "Degraded")["message"]
    assert "is forbidden: exceeded quota: zero, requested: pods=1, used: pods=0, limited: pods=0" in message
    refused = get(platform, ns, "agenttree", "invoice")
    assert condition(refused, "Ready")["status"] == "False"
    assert condition(refused, "Stalled")["status"] == "True"
    assert refused["status"]["ready"] == "0/4"
    columns = ok(platform.kubectl("get", "agenttree", "invoice", "-n", ns, "--no-headers")).split()
    assert columns[1:3] == ["supervisor", "0/4"] and columns[3] == "False", columns  # NAME ROOT AGENTS READY

    ok(platform.kubectl("delete", "resourcequota", "zero", "-n", ns))
    start = time.monotonic()
    healed, _ = degraded(platform, ns, "False", 60)
    cleared = time.monotonic() - start
    print(f"quota deleted: Degraded=False {cleared:.2f}s later (the ReplicaSet controller's retry backoff)")
    healed = tree_ready(platform, ns)
    assert condition(healed, "Stalled")["status"] == "False"
    assert healed["status"]["ready"] == "4/4"


# --- 3. the chart's worker defaults pass `restricted` ---------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> str:
    proc = subprocess.run([str(REPO / "hack" / "build-helm.sh")], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(f"hack/build-helm.sh could not provide helm (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def chart_worker_pod(helm: str, tmp: Path, ns: str) -> dict:
    """A Pod built from the worker Deployment the operator makes with the chart's rendered defaults."""
    from agent_tree_operator.config import OperatorConfig
    from agent_tree_operator.resources.deployments import worker_deployment

    env = {k: v for k, v in os.environ.items() if k.startswith("HELM_")}
    proc = subprocess.run(
        [helm, "template", "agent-tree", str(CHART), "--namespace", "agent-tree-system", "--kube-version", "1.35.0"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, **env, "HELM_CACHE_HOME": str(tmp / "c"), "HELM_CONFIG_HOME": str(tmp / "f"),
             "HELM_DATA_HOME": str(tmp / "d")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    deployment = next(
        d
        for d in yaml.safe_load_all(proc.stdout)
        if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "agent-tree"
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    config = OperatorConfig.from_env({e["name"]: e["value"] for e in container["env"] if "value" in e})
    spec = AgentTreeSpec.model_validate(invoice_tree()["spec"])
    dep = worker_deployment(namespace=ns, tree="invoice", tree_uid="0", agent="triage", spec=spec, config=config)
    dep.pop("status", None)
    template = dep["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": naming.deployment_name("invoice", "triage"), "namespace": ns,
                     "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }  # fmt: skip


def dry_run(platform: Platform, ns: str, pod: dict) -> subprocess.CompletedProcess:
    return platform.kubectl("apply", "--dry-run=server", "-n", ns, "-f", "-", input=yaml.safe_dump(pod))


def test_chart_worker_defaults_pass_restricted_in_a_server_side_dry_run(
    platform: Platform, restricted_ns: str, helm: str, tmp_path: Path
) -> None:
    # PodSecurity admission judges Pods (a Deployment only gets a warning), so the dry run is of a
    # Pod with the worker Deployment's template.
    pod = chart_worker_pod(helm, tmp_path, restricted_ns)
    r = dry_run(platform, restricted_ns, pod)
    assert r.returncode == 0, r.stderr
    assert "PodSecurity" not in r.stderr, r.stderr  # not even a warning
    assert "created (server dry run)" in r.stdout

    bare = copy.deepcopy(pod)
    bare["spec"].pop("securityContext")
    bare["spec"]["containers"][0].pop("securityContext")
    r = dry_run(platform, restricted_ns, bare)
    assert r.returncode != 0, "a worker pod without the securityContext was admitted: is the namespace restricted?"
    assert 'violates PodSecurity "restricted:latest"' in r.stderr, r.stderr
    for what in ('capabilities.drop=["ALL"]', "runAsNonRoot", "seccompProfile", "allowPrivilegeEscalation"):
        assert what in r.stderr, (what, r.stderr)


# --- 4. a worker pod's waiting reason (CrashLoopBackOff) -------------------------------------------------


def test_crash_looping_worker_pod_degrades_the_tree(platform: Platform, ns: str) -> None:
    """There is no kubelet on the local platform (kwok owns pod status), so the test writes the
    status a kubelet writes for a crash-looping container through the pods/status subresource; what
    is under test is the operator's pod watch turning it into the tree's condition, and back."""
    tree = {
        "apiVersion": "agenttree.io/v1alpha1",
        "kind": "AgentTree",
        "metadata": {"name": "invoice"},
        "spec": {
            "root": "solo",
            "worker": {"env": [{"name": "PYTHONPATH", "value": "examples/invoice"}]},
            "agents": [{"name": "solo", "entrypoint": "invoice_agents:triage"}],
        },
    }
    apply(platform, ns, tree)
    tree_ready(platform, ns)
    (pod,) = worker_pods(platform, ns)
    name = pod["metadata"]["name"]
    crash = {
        "status": {
            "containerStatuses": [
                {
                    "name": "worker",
                    "ready": False,
                    "started": False,
                    "restartCount": 5,
                    "image": pod["spec"]["containers"][0]["image"],
                    "imageID": "",
                    "state": {"waiting": {"reason": "CrashLoopBackOff",
                                          "message": f"back-off 2m40s restarting failed container=worker pod={name}"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
                }
            ]
        }
    }  # fmt: skip
    start = time.monotonic()
    ok(
        platform.kubectl(
            "patch", "pod", name, "-n", ns, "--subresource=status", "--type=merge", "-p", json.dumps(crash)
        )
    )
    failing, _ = degraded(platform, ns, "True", SURFACE_DEADLINE)
    seconds = time.monotonic() - start
    print(f"\nCrashLoopBackOff: Degraded=True {seconds:.2f}s after the pod's status said so")
    cond = condition(failing, "Degraded")
    assert cond["reason"] == "WorkersFailing", cond
    assert cond["message"] == (
        f"spec.agents[0] (solo): worker pod {name} CrashLoopBackOff: last exit 1 (Error); "
        f"back-off 2m40s restarting failed container=worker pod={name}"
    )
    assert condition(failing, "Stalled")["status"] == "True"
    assert failing["status"]["ready"] == "0/1"

    # The pod goes (as a fixed rollout would replace it); its replacement runs: Degraded clears.
    ok(platform.kubectl("delete", "pod", name, "-n", ns, "--wait=false"))
    _, cleared = degraded(platform, ns, "False", 60)
    print(f"crash-looping pod deleted: Degraded=False {cleared:.2f}s later")
    assert tree_ready(platform, ns)["status"]["ready"] == "1/1"
