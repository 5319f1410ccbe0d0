"""The Helm chart on a real API server: schema check by server-side dry run, install and upgrade,
the operator pod run from the chart's own command and env, the invoice run through that operator,
and the RBAC matrix of the operator's and the workers' ServiceAccounts.

Cluster-agnostic: everything goes through a kubeconfig (the local platform's here; a kind
cluster's under hack/kind-e2e.sh). On the local platform the pod runner runs
the operator pod as a local process; the test gives that process a kubeconfig holding a token of
the chart's operator ServiceAccount (TokenRequest), so the operator works with exactly the
permissions the chart grants, as it would in a pod.

With AGENT_TREE_E2E_KUBECONFIG set (hack/kind-e2e.sh), the same tests run against that cluster
instead: the operator is a real pod (its own token, the kubelet running the chart's probes), and
the image and the in-cluster Temporal / PostgreSQL / Redis addresses come from
AGENT_TREE_E2E_IMAGE, AGENT_TREE_E2E_WORKER_IMAGE, AGENT_TREE_E2E_TEMPORAL_ADDRESS,
AGENT_TREE_E2E_DATABASE_URL and AGENT_TREE_E2E_REDIS_URL.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51
import pytest
import yaml
from platformlib import REPO, built_tool, wait_for

pytestmark = pytest.mark.e2e

CHART = REPO / "charts" / "agent-tree"
INVOICE = REPO / "examples" / "invoice"
RUN_TIMEOUT = float(os.environ.get("AGENT_TREE_E2E_RUN_TIMEOUT", "300"))
ARGO_RUN = REPO / "deploy" / "argocd" / "resource_customizations" / "agenttree.io" / "AgentRun"
AUTH_GROUPS = {"authorization.k8s.io", "authentication.k8s.io"}  # self-reviews every account has


class ExternalCluster:
    """A cluster reached through a kubeconfig (kind, ...), with the platform fixture's interface."""

    local_pods = False

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        env = os.environ
        self.temporal_address = env.get("AGENT_TREE_E2E_TEMPORAL_ADDRESS", "temporal.agent-tree-infra.svc:7233")
        self.database_url = env.get("AGENT_TREE_E2E_DATABASE_URL", "")
        self.redis_url = env.get("AGENT_TREE_E2E_REDIS_URL", "")

    def process_env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": self.kubeconfig}

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            input=input, capture_output=True, text=True, timeout=timeout, env=self.process_env(),
        )  # fmt: skip


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Any:
    """The external cluster of AGENT_TREE_E2E_KUBECONFIG, else the local platform (started on demand)."""
    external = os.environ.get("AGENT_TREE_E2E_KUBECONFIG")
    if external:
        return ExternalCluster(external)
    platform = request.getfixturevalue("platform")
    platform.local_pods = True
    return platform


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, f"{' '.join(map(str, r.args))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Release:
    name: str
    namespace: str
    team: str  # the watched namespace (trees and runs live here)
    other: str  # a namespace the operator does not watch
    fullname: str
    health_port: int
    metrics_port: int
    kubeconfig: Path
    stale_column: str
    columns_before_upgrade: list[str]

    @property
    def operator_sa(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}"

    @property
    def worker_sa(self) -> str:
        return f"system:serviceaccount:{self.team}:agent-tree-worker"


@pytest.fixture(scope="module")
def helm_bin() -> str:
    return built_tool("build-helm.sh")


@pytest.fixture(scope="module")
def helm(helm_bin: str, cluster: Any, tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("helm-home")
    env = {**cluster.process_env(), "KUBECONFIG": cluster.kubeconfig, "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}  # fmt: skip

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([helm_bin, *args], input=input, capture_output=True, text=True, timeout=300, env=env)

    return run


def kubectl_json(cluster: Any, *args: str) -> Any:
    return json.loads(ok(cluster.kubectl(*args, "-o", "json")))


def can(cluster: Any, who: str, verb: str, resource: str, namespace: str | None = None,
        subresource: str | None = None) -> bool:  # fmt: skip
    args = ["auth", "can-i", verb, resource, f"--as={who}"]
    args += ["-n", namespace] if namespace else []
    args += [f"--subresource={subresource}"] if subresource else []
    r = cluster.kubectl(*args)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode == 0


def rules_of(cluster: Any, who: str, namespace: str) -> set[tuple[str, str, str]]:
    """The effective rules of `who` in `namespace` (SelfSubjectRulesReview, impersonated)."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": namespace},
    }
    out = json.loads(
        ok(
            cluster.kubectl(
                "create", "--validate=false", "-f", "-", "-o", "json", f"--as={who}", input=json.dumps(review)
            )
        )
    )
    assert not out["status"].get("incomplete"), out["status"]
    rules = set()
    for rule in out["status"]["resourceRules"]:
        assert not rule.get("resourceNames"), rule
        for g in rule.get("apiGroups", []):
            for r in rule["resources"]:
                for v in rule["verbs"]:
                    if g not in AUTH_GROUPS:
                        rules.add((g, r, v))
    return rules


def chart_rules(docs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for d in docs if d["kind"] in ("Role", "ClusterRole") for rule in d["rules"]
            for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}  # fmt: skip


def stale_chart(tmp: Path) -> tuple[Path, str]:
    """A copy of the chart whose AgentRun CRD lacks its last printer column (an 'older release')."""
    copy = tmp / "agent-tree-stale"
    shutil.copytree(CHART, copy)
    path = copy / "files" / "crds" / "agentruns.yaml"
    crd = yaml.safe_load(path.read_text())
    dropped = crd["spec"]["versions"][0]["additionalPrinterColumns"].pop()
    path.write_text(yaml.safe_dump(crd, sort_keys=False))
    return copy, dropped["name"]


def printer_columns(cluster: Any) -> list[str]:
    crd = kubectl_json(cluster, "get", "crd", "agentruns.agenttree.io")
    return [c["name"] for c in crd["spec"]["versions"][0].get("additionalPrinterColumns", [])]


def operator_kubeconfig(cluster: Any, namespace: str, sa: str, path: Path) -> None:
    """A kubeconfig that authenticates as the chart's operator ServiceAccount (a bound token)."""
    token = ok(cluster.kubectl("-n", namespace, "create", "token", sa, "--duration=2h")).strip()
    admin = kubectl_json(cluster, "config", "view", "--raw", "--minify")
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "cluster", "user": "operator"}}],
    }  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def operator_process(cluster: Any, release: Release) -> tuple[str, dict[str, Any]] | None:
    """Local platform: the pod runner's process of the operator pod, as ('ns/pod', info)."""
    for key, proc in cluster.pod_processes().items():
        if key.startswith(f"{release.namespace}/{release.fullname}-"):
            return key, proc
    return None


def operator_running(cluster: Any, release: Release) -> bool:
    if cluster.local_pods:
        return operator_process(cluster, release) is not None
    r = cluster.kubectl("-n", release.namespace, "rollout", "status", f"deployment/{release.fullname}", "--timeout=5s")
    return r.returncode == 0


def operator_log(cluster: Any, release: Release) -> str:
    if not cluster.local_pods:
        r = cluster.kubectl("-n", release.namespace, "logs", f"deployment/{release.fullname}", "--tail=200")
        return r.stdout + r.stderr
    found = operator_process(cluster, release)
    if found is None:
        return "(no operator process)"
    path = cluster.logs / "pods" / (found[0].replace("/", "_") + ".log")
    return path.read_text()[-6000:] if path.exists() else f"(no log at {path})"


def diagnose(cluster: Any, release: Release, run_name: str) -> str:
    """What a failed run looked like: its status, the operator's log, the workers' last lines."""
    run = cluster.kubectl("-n", release.team, "get", "agentrun", run_name, "-o", "yaml").stdout
    out = [f"--- AgentRun\n{run}", f"--- operator log\n{operator_log(cluster, release)[-3000:]}"]
    if cluster.local_pods:
        for path in sorted((cluster.logs / "pods").glob(f"{release.team}_*.log")):
            out.append(f"--- {path.name}\n" + "\n".join(path.read_text().splitlines()[-15:]))
    else:
        r = cluster.kubectl("-n", release.team, "logs", "-l", "agenttree.io/tree=invoice", "--tail=15", "--prefix")
        out.append(f"--- worker logs\n{r.stdout}{r.stderr}")
    return "\n".join(out)


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except OSError:
        return 0, ""


@pytest.fixture(scope="module")
def release(cluster: Any, helm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    """Install a stale copy of the chart (operator scaled to 0), then `helm upgrade` to the real one."""
    tmp = tmp_path_factory.mktemp("helm-e2e")
    suffix = uuid.uuid4().hex[:6]
    name = f"at-{suffix}"
    rel = Release(name=name, namespace=f"ath-sys-{suffix}", team=f"ath-team-{suffix}", other=f"ath-other-{suffix}",
                  fullname=f"{name}-agent-tree", health_port=free_port(), metrics_port=free_port(),
                  kubeconfig=tmp / "operator.kubeconfig", stale_column="", columns_before_upgrade=[])  # fmt: skip
    for ns in (rel.namespace, rel.team, rel.other):
        ok(cluster.kubectl("create", "namespace", ns))
    # The connection URLs reach the chart the production way: an existing Secret, by reference.
    ok(cluster.kubectl("-n", rel.namespace, "create", "secret", "generic", "agent-tree-connections",
                        f"--from-literal=DATABASE_URL={cluster.database_url}",
                        f"--from-literal=REDIS_URL={cluster.redis_url}"))  # fmt: skip
    values: dict[str, Any] = {
        "operator": {"watchNamespaces": [rel.team], "healthPort": rel.health_port, "metricsPort": rel.metrics_port,
                     "replicas": 0},
        "temporal": {"address": cluster.temporal_address, "namespace": "default"},
        "postgresql": {"existingSecret": "agent-tree-connections", "existingSecretKey": "DATABASE_URL"},
        "redis": {"existingSecret": "agent-tree-connections", "existingSecretKey": "REDIS_URL"},
        "metrics": {"service": {"port": rel.metrics_port}},
        "api": {"enabled": False},  # the API's release: tests/e2e/test_helm_api.py
    }  # fmt: skip
    if not cluster.local_pods:  # a real cluster pulls real images
        repo, _, tag = os.environ.get("AGENT_TREE_E2E_IMAGE", "agent-tree:e2e").rpartition(":")
        values["image"] = {"repository": repo, "tag": tag, "pullPolicy": "IfNotPresent"}
        repo, _, tag = os.environ.get("AGENT_TREE_E2E_WORKER_IMAGE", "invoice-workers:e2e").rpartition(":")
        values["workers"] = {"image": {"repository": repo, "tag": tag, "pullPolicy": "IfNotPresent"}}
    values_file = tmp / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    stale, rel.stale_column = stale_chart(tmp)
    try:
        # --take-ownership: the CRDs may already exist (applied from crds/ by other tests).
        ok(helm("install", name, str(stale), "-n", rel.namespace, "-f", str(values_file), "--take-ownership"))
        rel.columns_before_upgrade = printer_columns(cluster)
        upgrade = ["upgrade", name, str(CHART), "-n", rel.namespace, "--reuse-values", "--set", "operator.replicas=1"]
        if cluster.local_pods:
            # The local process gets what a pod gets from its ServiceAccount: a token of that account.
            operator_kubeconfig(cluster, rel.namespace, rel.fullname, rel.kubeconfig)
            extra_env = json.dumps([{"name": "KUBECONFIG", "value": str(rel.kubeconfig)}])
            upgrade += ["--set-json", f"operator.extraEnv={extra_env}"]
        ok(helm(*upgrade))
        wait_for(lambda: operator_running(cluster, rel), 180, f"the operator of {name} running")
        yield rel
    finally:
        for kind in ("agentruns", "agenttrees"):
            cluster.kubectl("-n", rel.team, "delete", kind, "--all", "--timeout=60s")
        helm("uninstall", name, "-n", rel.namespace, "--wait", "--timeout", "60s")
        for ns in (rel.namespace, rel.team, rel.other):
            cluster.kubectl("delete", "namespace", ns, "--wait=false")


# --- schema check ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_rendered_chart_passes_server_side_dry_run(cluster: Any, helm, mode: str) -> None:
    """The API server validates every rendered object (CRDs included) without persisting anything."""
    ns = f"ath-dry-{uuid.uuid4().hex[:6]}"
    ok(cluster.kubectl("create", "namespace", ns))
    try:
        server = kubectl_json(cluster, "version")["serverVersion"]["gitVersion"]
        args = ["template", f"dry-{mode}", str(CHART), "-n", ns, "--kube-version", server, "--set", "networkPolicy.enabled=true",
                "--set", "redis.url=redis://redis.example:6379/0", "--set", "api.ingress.enabled=true"]  # fmt: skip
        if mode == "namespaced":
            args += ["--set", f"operator.watchNamespaces[0]={ns}"]
        manifest = ok(helm(*args))
        out = ok(cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest))
        kinds = {d["kind"] for d in yaml.safe_load_all(manifest) if d}
        assert {"CustomResourceDefinition", "Deployment", "ClusterRole", "NetworkPolicy", "Secret", "Ingress"} <= kinds
        assert out.count("(server dry run)") == sum(1 for d in yaml.safe_load_all(manifest) if d)
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false")


# --- install, upgrade, the operator pod ---------------------------------------------------------------


def test_upgrade_updates_the_crds(cluster: Any, release: Release) -> None:
    assert release.stale_column not in release.columns_before_upgrade
    assert release.stale_column in printer_columns(cluster), "helm upgrade did not update the AgentRun CRD"
    crd = kubectl_json(cluster, "get", "crd", "agentruns.agenttree.io")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == release.name


def test_operator_pod_runs_the_charts_command_and_env(cluster: Any, release: Release) -> None:
    deployment = kubectl_json(cluster, "-n", release.namespace, "get", "deployment", release.fullname)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["agent-tree", "operator"]
    if not cluster.local_pods:
        # The kubelet ran the chart's probes: an available Deployment means /healthz answered.
        assert operator_running(cluster, release), operator_log(cluster, release)
        service = f"http:{release.fullname}-metrics:{release.metrics_port}"
        raw = cluster.kubectl(
            "get", "--raw", f"/api/v1/namespaces/{release.namespace}/services/{service}/proxy/metrics"
        )
        assert "# TYPE" in ok(raw)
        return
    _, proc = wait_for(lambda: operator_process(cluster, release), 30, "the operator process")
    assert proc["argv"] == container["command"] + container["args"]
    # The liveness endpoint answers where the chart's probes look, metrics where its Service points.
    for path, port in (("healthz", release.health_port), ("metrics", release.metrics_port)):
        url = f"http://127.0.0.1:{port}/{path}"
        try:
            _, body = wait_for(lambda url=url: (r := http_get(url))[0] == 200 and r, 60, f"{url} answering 200")
        except AssertionError as e:
            raise AssertionError(f"{e}\noperator log:\n{operator_log(cluster, release)}") from None
    assert "# TYPE" in body


def test_invoice_run_succeeds_through_the_chart_operator(cluster: Any, release: Release) -> None:
    ok(cluster.kubectl("-n", release.team, "apply", "-f", str(INVOICE / "agenttree.yaml")))
    ok(cluster.kubectl("-n", release.team, "apply", "-f", str(INVOICE / "agentrun.yaml")))
    run_name = yaml.safe_load((INVOICE / "agentrun.yaml").read_text())["metadata"]["name"]

    def finished() -> dict[str, Any] | None:
        run = kubectl_json(cluster, "-n", release.team, "get", "agentrun", run_name)
        status = run.get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed", "Cancelled") else None

    try:
        status = wait_for(finished, RUN_TIMEOUT, f"AgentRun {release.team}/{run_name} to finish")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{diagnose(cluster, release, run_name)}") from None
    assert status["phase"] == "Succeeded", f"{status}\n{diagnose(cluster, release, run_name)}"
    assert status.get("answer"), status
    assert status["steps"] >= 1

    tree = kubectl_json(cluster, "-n", release.team, "get", "agenttree", "invoice")
    deployments = kubectl_json(cluster, "-n", release.team, "get", "deployments", "-l", "agenttree.io/tree=invoice")
    agents = {a["name"] for a in yaml.safe_load((INVOICE / "agenttree.yaml").read_text())["spec"]["agents"]}
    assert {d["metadata"]["labels"]["agenttree.io/agent"] for d in deployments["items"]} == agents
    for d in deployments["items"]:
        assert d["metadata"]["ownerReferences"][0]["uid"] == tree["metadata"]["uid"]
        pod = d["spec"]["template"]["spec"]
        # The chart's worker defaults reached the operator: its worker account, no API token.
        assert pod["serviceAccountName"] == "agent-tree-worker"
        assert pod["automountServiceAccountToken"] is False
    worker_sa = kubectl_json(cluster, "-n", release.team, "get", "serviceaccount", "agent-tree-worker")
    assert worker_sa["automountServiceAccountToken"] is False


# --- the Argo CD cancel action on a live run ---------------------------------------------------------


def argo_lua(script: Path, obj: dict[str, Any]) -> Any:
    """Run an Argo CD resource_customizations script as Argo CD does (Lua 5.1, `obj` global)."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=False)
    lua.execute("io, os, require, dofile, loadfile, load, loadstring, debug, package = nil")

    def to_lua(v: Any) -> Any:
        if isinstance(v, dict):
            return lua.table_from({k: to_lua(x) for k, x in v.items() if x is not None})
        if isinstance(v, list):
            return lua.table_from([to_lua(x) for x in v])
        return v

    def from_lua(v: Any) -> Any:
        if lua51.lua_type(v) != "table":
            return int(v) if isinstance(v, float) and v.is_integer() else v
        items = dict(v.items())
        if items and sorted(items) == list(range(1, len(items) + 1)):
            return [from_lua(items[i]) for i in range(1, len(items) + 1)]
        return {k: from_lua(x) for k, x in items.items()}

    lua.globals().obj = to_lua(obj)
    return from_lua(lua.execute(script.read_text()))


def test_argocd_cancel_action_on_a_live_run(cluster: Any, release: Release) -> None:
    """Argo CD's view of a real run: Progressing -> action `cancel` -> the operator -> Suspended."""
    run = {
        "apiVersion": "agenttree.io/v1alpha1", "kind": "AgentRun",
        "metadata": {"name": "cancel-me", "namespace": release.team},
        "spec": {"treeRef": {"name": "not-created-yet"}, "input": "never runs"},
    }  # fmt: skip
    ok(cluster.kubectl("apply", "-f", "-", input=json.dumps(run)))

    def live() -> dict[str, Any]:
        return kubectl_json(cluster, "-n", release.team, "get", "agentrun", "cancel-me")

    pending = wait_for(lambda: (o := live()).get("status", {}).get("phase") == "Pending" and o, 60, "phase Pending")
    assert argo_lua(ARGO_RUN / "health.lua", pending)["status"] == "Progressing"
    assert argo_lua(ARGO_RUN / "actions" / "discovery.lua", pending)["cancel"]["disabled"] is False

    acted = argo_lua(ARGO_RUN / "actions" / "cancel" / "action.lua", pending)
    assert acted["spec"] == pending["spec"] and acted["status"] == pending["status"]
    patch = {"metadata": {"annotations": acted["metadata"]["annotations"]}}
    ok(cluster.kubectl("-n", release.team, "patch", "agentrun", "cancel-me", "--type=merge", "-p", json.dumps(patch)))

    done = wait_for(lambda: (o := live()).get("status", {}).get("phase") == "Cancelled" and o, 60, "phase Cancelled")
    health = argo_lua(ARGO_RUN / "health.lua", done)
    assert health["status"] == "Suspended", health
    assert "agenttree.io/cancel" in health["message"]
    assert argo_lua(ARGO_RUN / "actions" / "discovery.lua", done)["cancel"]["disabled"] is True
    ok(cluster.kubectl("-n", release.team, "delete", "agentrun", "cancel-me", "--timeout=60s"))


# --- RBAC matrix ---------------------------------------------------------------------------------------


def test_operator_rbac_matrix(cluster: Any, release: Release) -> None:
    who, team, other, own = release.operator_sa, release.team, release.other, release.namespace
    trees, runs = "agenttrees.agenttree.io", "agentruns.agenttree.io"
    allowed = [
        *[(v, r, team, None) for r in (trees, runs) for v in ("get", "list", "watch", "patch")],
        ("delete", runs, team, None),  # spec.ttlSecondsAfterFinished
        ("patch", trees, team, "status"),
        ("patch", runs, team, "status"),
        ("update", trees, team, "finalizers"),
        *[(v, "deployments.apps", team, None) for v in ("get", "list", "watch", "create", "patch", "delete")],
        ("create", "events", team, None),
        ("get", "secrets", team, None),
        ("list", "customresourcedefinitions.apiextensions.k8s.io", None, None),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io", None, None),
        ("list", "namespaces", None, None),  # kopf observes the namespaces it serves
    ]  # fmt: skip
    denied = [
        ("create", trees, team, None),
        ("delete", trees, team, None),
        ("create", runs, team, None),
        ("update", runs, team, None),  # every write is a PATCH
        ("update", runs, team, "status"),
        ("update", "deployments.apps", team, None),
        *[(v, "secrets", team, None) for v in ("list", "watch", "create", "update", "patch", "delete")],
        ("create", "pods", team, None),
        ("delete", "pods", team, None),
        ("get", "configmaps", team, None),
        ("create", "serviceaccounts", team, "token"),
        ("create", "roles.rbac.authorization.k8s.io", team, None),
        ("create", "rolebindings.rbac.authorization.k8s.io", team, None),
        ("bind", "clusterroles.rbac.authorization.k8s.io", None, None),
        ("impersonate", "serviceaccounts", team, None),
        # Namespaces it does not watch, its own included.
        ("get", runs, other, None),
        ("create", "deployments.apps", other, None),
        ("get", "secrets", other, None),
        ("get", "secrets", own, None),
        ("list", runs, None, None),  # cluster-wide list
        # Cluster-scoped objects.
        *[(v, "customresourcedefinitions.apiextensions.k8s.io", None, None) for v in ("create", "update", "patch", "delete")],
        ("get", "namespaces", None, None),
        ("create", "namespaces", None, None),
        ("get", "nodes", None, None),
    ]  # fmt: skip
    wrong = [f"{'cannot' if want else 'can'} {v} {r}{'/' + s if s else ''} in {ns or 'cluster'}"
             for want, cases in ((True, allowed), (False, denied)) for v, r, ns, s in cases
             if can(cluster, who, v, r, ns, s) != want]  # fmt: skip
    assert not wrong, f"operator account {who}:\n" + "\n".join(wrong)


def test_operator_has_exactly_the_charts_rules(cluster: Any, release: Release, helm) -> None:
    """No more than the chart grants: the effective rules equal the rendered Role + ClusterRole."""
    rendered = ok(helm("get", "manifest", release.name, "-n", release.namespace))
    # The operator's (Cluster)Roles; the chart's approver ClusterRole is for people, bound by them.
    docs = [d for d in yaml.safe_load_all(rendered) if d and d["metadata"]["name"].endswith("-operator")]
    expected = chart_rules(docs)
    assert rules_of(cluster, release.operator_sa, release.team) == expected
    cluster_only = chart_rules([d for d in docs if d["kind"] == "ClusterRole"])
    assert rules_of(cluster, release.operator_sa, release.other) == cluster_only


def test_worker_account_cannot_touch_trees_or_runs(cluster: Any, release: Release) -> None:
    who, team = release.worker_sa, release.team
    verbs = ("get", "list", "watch", "create", "update", "patch", "delete")
    touched = [f"{v} {r}" for r in ("agenttrees.agenttree.io", "agentruns.agenttree.io") for v in verbs
               if can(cluster, who, v, r, team)]  # fmt: skip
    touched += [
        f"{v} agentruns/status"
        for v in ("patch", "update")
        if can(cluster, who, v, "agentruns.agenttree.io", team, "status")
    ]
    touched += [f"{v} {r}" for v, r in (("get", "secrets"), ("list", "pods"), ("get", "configmaps"), ("list", "deployments.apps"))
                if can(cluster, who, v, r, team)]  # fmt: skip
    assert not touched, f"worker account {who} can: {touched}"
    assert rules_of(cluster, who, team) == set(), "the worker account must have no RBAC at all"


def test_cluster_wide_rbac_matrix(cluster: Any, helm, release: Release) -> None:
    """A second release in cluster-wide mode (CRDs left to the first, no operator pod): RBAC only."""
    suffix = uuid.uuid4().hex[:6]
    name, ns = f"atcw-{suffix}", f"ath-cw-{suffix}"
    ok(cluster.kubectl("create", "namespace", ns))
    try:
        ok(helm("install", name, str(CHART), "-n", ns, "--set", "crds.install=false", "--set", "operator.replicas=0",
                "--set", "api.enabled=false"))  # fmt: skip
        who = f"system:serviceaccount:{ns}:{name}-agent-tree"
        for target in (release.team, release.other, "default"):
            for verb, resource, sub in (("watch", "agentruns.agenttree.io", None), ("patch", "agenttrees.agenttree.io", "status"),
                                        ("create", "deployments.apps", None), ("get", "secrets", None)):  # fmt: skip
                assert can(cluster, who, verb, resource, target, sub), f"cannot {verb} {resource} in {target}"
            for verb, resource in (("create", "agentruns.agenttree.io"), ("list", "secrets"), ("create", "pods")):
                assert not can(cluster, who, verb, resource, target), f"can {verb} {resource} in {target}"
        assert can(cluster, who, "list", "agentruns.agenttree.io")  # every namespace at once
        assert not can(cluster, who, "delete", "customresourcedefinitions.apiextensions.k8s.io")
        rendered = ok(helm("get", "manifest", name, "-n", ns))
        operator_roles = [d for d in yaml.safe_load_all(rendered) if d and d["metadata"]["name"].endswith("-operator")]
        assert rules_of(cluster, who, release.other) == chart_rules(operator_roles)
    finally:
        helm("uninstall", name, "-n", ns, "--wait", "--timeout", "60s")
        cluster.kubectl("delete", "namespace", ns, "--wait=false")


# --- uninstall -----------------------------------------------------------------------------------------


def test_uninstall_keeps_the_crds(cluster: Any, helm, release: Release) -> None:
    """Last: `helm uninstall` removes the operator but keeps the CRDs (and so everyone's runs)."""
    for kind in ("agentruns", "agenttrees"):
        ok(cluster.kubectl("-n", release.team, "delete", kind, "--all", "--timeout=60s"))
    ok(helm("uninstall", release.name, "-n", release.namespace, "--wait", "--timeout", "60s"))
    wait_for(lambda: not operator_running(cluster, release), 60, "the operator to stop")
    for crd in ("agenttrees.agenttree.io", "agentruns.agenttree.io"):
        ok(cluster.kubectl("get", "crd", crd))
    assert cluster.kubectl("-n", release.namespace, "get", "deployment", release.fullname).returncode != 0
