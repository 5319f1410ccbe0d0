"""The Helm chart: helm lint, helm template with several value sets, and checks on what renders.

Helm comes from hack/build-helm.sh (built from the Go module proxy, cached under
~/.cache/agent-tree): the session fixture builds or finds it and fails, naming the reason, when it
cannot. Rendered objects are checked structurally with the `kubernetes` client's models: each
object is deserialized into its model and serialized back, so a misspelled or misplaced field
(dropped by the model) shows as a difference. The same manifests also go through a server-side
dry run against a real API server in tests/e2e/test_helm.py.
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from platformlib import built_tool

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "agent-tree"
KUBE_VERSION = "1.35.0"
NS = "agent-tree-system"

# What the operator may do, and nothing else: (apiGroup, resource, verb).
NAMESPACED_PERMISSIONS = (
    {("agenttree.io", "agenttrees", v) for v in ("get", "list", "watch", "patch")}
    | {("agenttree.io", "agentruns", v) for v in ("get", "list", "watch", "patch", "delete")}
    | {("agenttree.io", "agentapprovals", v) for v in ("get", "list", "watch", "create")}
    | {("agenttree.io", s, "patch") for s in ("agenttrees/status", "agentruns/status", "agentapprovals/status")}
    | {("agenttree.io", "agenttrees/finalizers", "update")}
    | {("apps", "deployments", v) for v in ("get", "list", "watch", "create", "patch", "delete")}
    | {("", "events", "create"), ("", "secrets", "get"), ("", "pods", "list"), ("", "pods", "watch")}
)
CLUSTER_PERMISSIONS = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
# kopf observes the namespaces it was given (cluster-wide it does not need to).
NAMESPACE_OBSERVATION = {("", "namespaces", v) for v in ("list", "watch")}

NAMESPACED = {"operator": {"watchNamespaces": ["team-a", "team-b"]}}
CONNECTIONS = {
    "postgresql": {"existingSecret": "pg", "existingSecretKey": "dsn"},
    "redis": {"url": "redis://redis.cache.svc:6379/0"},
}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": NAMESPACED,
    "servicemonitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
    "networkpolicy": {"networkPolicy": {"enabled": True, "metricsFrom": [{"namespaceSelector": {}}]}},
    "connections": CONNECTIONS,
    "no-crds-no-metrics": {"crds": {"install": False}, "operator": {"metricsPort": 0}},
    "observability": {
        "metrics": {
            "serviceMonitor": {"enabled": True},
            "podMonitor": {"enabled": True, "labels": {"release": "prom"}},
            "dashboard": {"enabled": True, "namespace": "monitoring"},
        }
    },
    "api-off": {"api": {"enabled": False}},
    "api": {
        **CONNECTIONS,
        "api": {
            "replicas": 2,
            "image": {"repository": "r.example/agent-tree-api", "tag": "1.0.0"},
            "extraEnv": [{"name": "EXTRA", "value": "1"}],
            "nodeSelector": {"pool": "system"},
            "tolerations": [{"key": "system", "operator": "Exists", "effect": "NoSchedule"}],
            "service": {"type": "LoadBalancer"},
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "annotations": {"nginx.ingress.kubernetes.io/proxy-buffering": "off"},
                "tls": [{"secretName": "api-tls", "hosts": ["agent-tree.example.com"]}],
            },
        },
        "networkPolicy": {"enabled": True},
        "metrics": {"serviceMonitor": {"enabled": True}},
    },
    "everything": {
        **NAMESPACED,
        **CONNECTIONS,
        "networkPolicy": {"enabled": True},
        "metrics": {"serviceMonitor": {"enabled": True}},
        "image": {"digest": "sha256:" + "a" * 64},
        "workers": {"serviceAccount": {"extraNamespaces": ["team-c"]}, "envSecret": "tool-keys"},
        "retention": {"enabled": True, "olderThan": "14d", "timeZone": "Europe/Berlin"},
    },
}


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of the helm binary, built from the Go module proxy on first use (cached afterwards)."""
    return built_tool("build-helm.sh")


def run_helm(
    helm: str, *args: str, values: dict[str, Any] | None = None, tmp: Path | None = None
) -> subprocess.CompletedProcess:
    cmd = [helm, *args]
    if values:
        assert tmp is not None
        vf = tmp / "values.yaml"
        vf.write_text(yaml.safe_dump(values))
        cmd += ["-f", str(vf)]
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/helm-cache", "HELM_CONFIG_HOME": "/tmp/helm-config",
           "HELM_DATA_HOME": "/tmp/helm-data"}  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def render(
    helm: str, tmp: Path, values: dict[str, Any] | None = None, release: str = "agent-tree"
) -> list[dict[str, Any]]:
    proc = run_helm(helm, "template", release, str(CHART), "--namespace", NS, "--kube-version", KUBE_VERSION,
                    values=values, tmp=tmp)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def find(
    docs: list[dict[str, Any]], kind: str, name: str | None = None, namespace: str | None = None
) -> list[dict[str, Any]]:
    return [
        d for d in docs
        if d["kind"] == kind
        and (name is None or d["metadata"]["name"] == name)
        and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]  # fmt: skip


def one(docs: list[dict[str, Any]], kind: str, **kw: Any) -> dict[str, Any]:
    found = find(docs, kind, **kw)
    assert len(found) == 1, f"expected one {kind} {kw}, found {len(found)}"
    return found[0]


def permissions(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    out = set()
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule keys: {rule}"
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                for v in rule["verbs"]:
                    assert "*" not in (g, r, v), f"wildcard in {rule}"
                    out.add((g, r, v))
    return out


def model_roundtrip(doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Deserialize into the kubernetes client's model and back: unknown fields are dropped."""
    group_version = doc["apiVersion"].split("/")
    model = ("V1" if len(group_version) == 1 else group_version[1].capitalize()) + doc["kind"]
    api = client.ApiClient()
    obj = api._ApiClient__deserialize(doc, model)  # the public deserialize() wants an HTTP response
    return model, api.sanitize_for_serialization(obj)


# --- helm lint / template -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint(helm: str, tmp_path: Path, name: str) -> None:
    proc = run_helm(helm, "lint", "--strict", str(CHART), "--namespace", NS, "--kube-version", KUBE_VERSION,
                    values=VALUE_SETS[name], tmp=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendered_objects_are_valid_kubernetes_objects(helm: str, tmp_path: Path, name: str) -> None:
    docs = render(helm, tmp_path, VALUE_SETS[name])
    for doc in docs:
        assert doc["metadata"]["name"], doc
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "agent-tree", doc["metadata"]
        if doc["kind"] == "ServiceMonitor":  # a CRD kind the client does not model: check the essentials
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            assert set(doc["spec"]) == {"namespaceSelector", "selector", "endpoints"}
            continue
        if doc["kind"] == "PodMonitor":
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            assert set(doc["spec"]) == {"namespaceSelector", "selector", "podMetricsEndpoints"}
            continue
        model, back = model_roundtrip(doc)
        if back != doc:
            diff = difflib.unified_diff(
                yaml.safe_dump(doc).splitlines(), yaml.safe_dump(back).splitlines(), lineterm=""
            )
            pytest.fail(f"{model} {doc['metadata']['name']}: fields the API does not know:\n" + "\n".join(diff))


def test_schema_rejects_bad_values(helm: str, tmp_path: Path) -> None:
    bad = {
        "unknown key": {"operator": {"replica": 1}},
        "latest tag": {"image": {"tag": "latest"}},
        "url and existingSecret": {"postgresql": {"url": "postgres://x", "existingSecret": "pg"}},
        "two operators": {"operator": {"replicas": 2}},
        "bad namespace": {"operator": {"watchNamespaces": ["Team_A"]}},
        "a namespace twice": {"operator": {"watchNamespaces": ["team-a", "team-a"]}},
        "temporal address without port": {"temporal": {"address": "temporal"}},
    }
    for why, values in bad.items():
        proc = run_helm(helm, "template", "x", str(CHART), "--kube-version", KUBE_VERSION, values=values, tmp=tmp_path)
        assert proc.returncode != 0, f"accepted {why}"
        assert "values don't meet the specifications of the schema" in proc.stderr, (why, proc.stderr)


def test_servicemonitor_needs_the_metrics_service(helm: str, tmp_path: Path) -> None:
    values = {"metrics": {"serviceMonitor": {"enabled": True}}, "operator": {"metricsPort": 0}}
    proc = run_helm(helm, "template", "x", str(CHART), "--kube-version", KUBE_VERSION, values=values, tmp=tmp_path)
    assert proc.returncode != 0 and "metrics.serviceMonitor.enabled needs" in proc.stderr


def test_helm_knows_its_kubernetes_version_without_flags(helm: str, tmp_path: Path) -> None:
    """hack/build-helm.sh stamps the Kubernetes version as helm's Makefile does (from its client-go):
    `helm template` and `helm lint` then work without --kube-version, as with an official helm."""
    probe = tmp_path / "probe"
    (probe / "templates").mkdir(parents=True)
    (probe / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (probe / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\n"
        "data: {kube: {{ .Capabilities.KubeVersion.Version | quote }}}\n"
    )
    proc = run_helm(helm, "template", "probe", str(probe))
    assert proc.returncode == 0, proc.stderr
    kube = yaml.safe_load(proc.stdout)["data"]["kube"]
    major, minor = (int(x) for x in kube.removeprefix("v").split(".")[:2])
    # Helm's built-in default without the ldflags is v1.20.0; the chart needs >= 1.29 (CEL rules).
    assert (major, minor) >= (1, 29), f"helm assumes Kubernetes {kube}: built without the version ldflags?"

    proc = run_helm(helm, "template", "agent-tree", str(CHART))
    assert proc.returncode == 0, proc.stderr
    assert one([d for d in yaml.safe_load_all(proc.stdout) if d], "Deployment", name="agent-tree")
    proc = run_helm(helm, "lint", "--strict", str(CHART))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


# --- the operator Deployment ----------------------------------------------------------------------


def operator_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment", name="agent-tree")["spec"]["template"]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_operator_pod_security(helm: str, tmp_path: Path) -> None:
    docs = render(helm, tmp_path)
    deployment = one(docs, "Deployment", name="agent-tree")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True and sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    assert "hostNetwork" not in pod and "hostPID" not in pod


def test_operator_command_probes_and_labels(helm: str, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {"operator": {"healthPort": 18080, "extraArgs": ["--verbose"]}})
    template = operator_pod(docs)
    labels = template["metadata"]["labels"]
    # The local pod runner runs pods labelled part-of=agent-tree from command + args + env.
    assert labels["app.kubernetes.io/part-of"] == "agent-tree"
    assert labels["app.kubernetes.io/component"] == "operator"
    (container,) = template["spec"]["containers"]
    assert container["command"] == ["agent-tree", "operator"]
    assert container["args"] == ["--standalone", "--liveness=http://0.0.0.0:18080/healthz", "--verbose"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 18080, "protocol": "TCP"} in container["ports"]
    assert template["spec"]["automountServiceAccountToken"] is True
    assert template["spec"]["serviceAccountName"] == "agent-tree"


def test_operator_cli_takes_the_charts_arguments(helm: str, tmp_path: Path) -> None:
    """The image's `agent-tree operator` (the same console script as this venv's) knows each flag."""
    (container,) = operator_pod(render(helm, tmp_path))["spec"]["containers"]
    cli = Path(sys.executable).parent / container["command"][0]
    proc = subprocess.run([str(cli), *container["command"][1:], "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for arg in container["args"]:
        assert arg.split("=", 1)[0] in proc.stdout, f"`agent-tree operator` has no {arg.split('=', 1)[0]}"


def test_operator_env_follows_the_contract(helm: str, tmp_path: Path) -> None:
    """docs/contracts.md: AGENT_TREE_* names; secrets only by reference."""
    docs = render(
        helm, tmp_path, {**CONNECTIONS, **NAMESPACED, "temporal": {"address": "t.temporal:7233", "namespace": "agents"}}
    )
    (container,) = operator_pod(docs)["spec"]["containers"]
    env = env_of(container)
    assert env["AGENT_TREE_TEMPORAL_ADDRESS"] == "t.temporal:7233"
    assert env["AGENT_TREE_TEMPORAL_NAMESPACE"] == "agents"
    assert env["AGENT_TREE_DATABASE_URL"] == {"secretKeyRef": {"name": "pg", "key": "dsn"}}
    assert env["AGENT_TREE_REDIS_URL"] == {"secretKeyRef": {"name": "agent-tree-connections", "key": "REDIS_URL"}}
    assert env["AGENT_TREE_WATCH_NAMESPACE"] == "team-a,team-b"
    assert env["AGENT_TREE_HEALTH_PORT"] == "8080"
    assert env["AGENT_TREE_WORKER_IMAGE_PULL_POLICY"] == "IfNotPresent"
    assert "AGENT_TREE_WORKER_ENV_SECRET" not in env
    assert env["AGENT_TREE_METRICS_PORT"] == "9090"
    assert env["AGENT_TREE_WORKER_IMAGE"] == "agent-tree:0.1.0"
    assert env["AGENT_TREE_WORKER_SERVICE_ACCOUNT"] == "agent-tree-worker"
    assert json.loads(env["AGENT_TREE_WORKER_RESOURCES"]) == {
        "requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}  # fmt: skip
    contracts = (ROOT / "docs" / "contracts.md").read_text()
    for name in env:
        assert f"`{name}`" in contracts, f"{name} is not in docs/contracts.md"
    # The plain Redis URL lives in the chart's Secret, never in the pod spec.
    secret = one(docs, "Secret", name="agent-tree-connections")
    assert secret["stringData"] == {"REDIS_URL": "redis://redis.cache.svc:6379/0"}
    assert "redis://" not in json.dumps(find(docs, "Deployment"))  # the operator's and the API's


@pytest.mark.parametrize(
    ("values", "assigned"),
    [
        ({}, False),  # cluster-wide: the account exists only where the chart made it
        (NAMESPACED, True),
        ({"workers": {"serviceAccount": {"assign": "always"}}}, True),
        ({**NAMESPACED, "workers": {"serviceAccount": {"assign": "never"}}}, False),
    ],
)
def test_worker_service_account_is_assigned_where_it_exists(
    helm: str, tmp_path: Path, values: dict, assigned: bool
) -> None:
    env = env_of(operator_pod(render(helm, tmp_path, values))["spec"]["containers"][0])
    assert ("AGENT_TREE_WORKER_SERVICE_ACCOUNT" in env) is assigned


def test_cluster_wide_operator_has_no_watch_namespace(helm: str, tmp_path: Path) -> None:
    env = env_of(operator_pod(render(helm, tmp_path))["spec"]["containers"][0])
    assert "AGENT_TREE_WATCH_NAMESPACE" not in env
    assert "AGENT_TREE_DATABASE_URL" not in env and "AGENT_TREE_REDIS_URL" not in env
    assert not find(render(helm, tmp_path), "Secret")


def test_worker_env_secret(helm: str, tmp_path: Path) -> None:
    env = env_of(operator_pod(render(helm, tmp_path, {"workers": {"envSecret": "tool-keys"}}))["spec"]["containers"][0])
    assert env["AGENT_TREE_WORKER_ENV_SECRET"] == "tool-keys"


def test_images(helm: str, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {"image": {"repository": "r.example/agent-tree", "digest": "sha256:" + "b" * 64},
                                   "workers": {"image": {"repository": "r.example/team-workers", "tag": "1.2.3"}}})  # fmt: skip
    (container,) = operator_pod(docs)["spec"]["containers"]
    assert container["image"] == "r.example/agent-tree@sha256:" + "b" * 64
    assert env_of(container)["AGENT_TREE_WORKER_IMAGE"] == "r.example/team-workers:1.2.3"


# --- RBAC -------------------------------------------------------------------------------------------


def bound_roles(docs: list[dict[str, Any]], sa: str, sa_ns: str) -> list[dict[str, Any]]:
    roles = []
    for binding in find(docs, "ClusterRoleBinding") + find(docs, "RoleBinding"):
        if {"kind": "ServiceAccount", "name": sa, "namespace": sa_ns} in binding["subjects"]:
            ref = binding["roleRef"]
            roles.append(one(docs, ref["kind"], name=ref["name"], namespace=binding["metadata"].get("namespace")))
    return roles


def test_rbac_cluster_wide_is_minimal(helm: str, tmp_path: Path) -> None:
    docs = render(helm, tmp_path)
    assert not find(docs, "Role") and not find(docs, "RoleBinding")
    (role,) = bound_roles(docs, "agent-tree", NS)
    assert role["kind"] == "ClusterRole"
    assert permissions(role["rules"]) == NAMESPACED_PERMISSIONS | CLUSTER_PERMISSIONS


def test_rbac_namespaced_has_a_role_per_watched_namespace(helm: str, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, NAMESPACED)
    roles = bound_roles(docs, "agent-tree", NS)
    cluster = [r for r in roles if r["kind"] == "ClusterRole"]
    assert len(cluster) == 1 and permissions(cluster[0]["rules"]) == CLUSTER_PERMISSIONS | NAMESPACE_OBSERVATION
    namespaced = {r["metadata"]["namespace"]: r for r in roles if r["kind"] == "Role"}
    assert set(namespaced) == {"team-a", "team-b"}
    for role in namespaced.values():
        assert permissions(role["rules"]) == NAMESPACED_PERMISSIONS
    # No secrets beyond get, nothing that creates or deletes the custom resources.
    everything = set().union(*(permissions(r["rules"]) for r in roles))
    assert not {p for p in everything if p[1] == "secrets" and p[2] != "get"}
    # The one custom resource it creates: an AgentApproval per tool call waiting for a person.
    assert {p for p in everything if p[0] == "agenttree.io" and p[2] in ("create", "deletecollection")} == {
        ("agenttree.io", "agentapprovals", "create")
    }
    assert not {p for p in everything if p[2] == "update" and not p[1].endswith("/finalizers")}, "writes are PATCHes"
    assert ("agenttree.io", "agenttrees", "delete") not in everything


def test_rbac_off(helm: str, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {"rbac": {"create": False}})
    assert not [d for d in docs if d["apiVersion"].startswith("rbac.authorization.k8s.io")]


# --- worker service accounts ---------------------------------------------------------------------


@pytest.mark.parametrize(("values", "namespaces"), [
    ({}, {NS}),
    (NAMESPACED, {NS, "team-a", "team-b"}),
    ({**NAMESPACED, "workers": {"serviceAccount": {"extraNamespaces": ["team-c", "team-a"]}}}, {NS, "team-a", "team-b", "team-c"}),
])  # fmt: skip
def test_worker_service_account_has_no_token_and_no_rbac(
    helm: str, tmp_path: Path, values: dict, namespaces: set
) -> None:
    docs = render(helm, tmp_path, values)
    accounts = find(docs, "ServiceAccount", name="agent-tree-worker")
    assert {a["metadata"]["namespace"] for a in accounts} == namespaces
    assert len(accounts) == len(namespaces)
    for account in accounts:
        assert account["automountServiceAccountToken"] is False
        assert account["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
        assert bound_roles(docs, "agent-tree-worker", account["metadata"]["namespace"]) == []
    for binding in find(docs, "ClusterRoleBinding") + find(docs, "RoleBinding"):
        assert all(s["name"] != "agent-tree-worker" for s in binding["subjects"])


# --- CRDs -----------------------------------------------------------------------------------------


def repo_crds() -> dict[str, dict[str, Any]]:
    crds = {p.name: yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))}
    assert crds, "crds/ holds no CRD: generate them (agent-tree crds --write)"
    return crds


def test_chart_crd_files_are_identical_to_crds_dir() -> None:
    chart_dir = CHART / "files" / "crds"
    repo = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in chart_dir.glob("*.yaml")}
    assert repo, "crds/ holds no CRD"
    drift = sorted(n for n in repo.keys() | chart.keys() if repo.get(n) != chart.get(n))
    assert not drift, f"chart CRDs drift from crds/: {drift}; run hack/sync-chart-crds.sh"
    check = subprocess.run([str(ROOT / "hack" / "sync-chart-crds.sh"), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_rendered_crds_equal_crds_dir_plus_keep_policy(helm: str, tmp_path: Path) -> None:
    rendered = {d["metadata"]["name"]: d for d in find(render(helm, tmp_path), "CustomResourceDefinition")}
    repo = {d["metadata"]["name"]: d for d in repo_crds().values()}
    assert (
        set(rendered)
        == set(repo)
        == {"agenttrees.agenttree.io", "agentruns.agenttree.io", "agentapprovals.agenttree.io"}
    )
    for name, crd in repo.items():
        got = rendered[name]
        assert got["spec"] == crd["spec"], f"{name}: rendered spec differs from crds/"
        assert {k: v for k, v in got.items() if k != "metadata"} == {k: v for k, v in crd.items() if k != "metadata"}
        assert got["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        for key, value in (crd["metadata"].get("annotations") or {}).items():
            assert got["metadata"]["annotations"][key] == value
        for key, value in (crd["metadata"].get("labels") or {}).items():
            assert got["metadata"]["labels"][key] == value


def test_crds_are_templates_so_upgrades_apply_them(helm: str, tmp_path: Path) -> None:
    # Helm installs a chart's crds/ directory once and never upgrades it: the chart must not have one.
    assert not (CHART / "crds").exists()
    assert not find(render(helm, tmp_path, {"crds": {"install": False}}), "CustomResourceDefinition")
    unkept = find(render(helm, tmp_path, {"crds": {"keep": False}}), "CustomResourceDefinition")
    assert unkept and all("helm.sh/resource-policy" not in (c["metadata"].get("annotations") or {}) for c in unkept)


# --- metrics, ServiceMonitor, NetworkPolicy ---------------------------------------------------------


def test_metrics_service_and_servicemonitor(helm: str, tmp_path: Path) -> None:
    off = render(helm, tmp_path)
    assert not find(off, "ServiceMonitor")
    service = one(off, "Service", name="agent-tree-metrics")
    selector = one(off, "Deployment", name="agent-tree")["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]

    on = render(helm, tmp_path, VALUE_SETS["servicemonitor"])
    monitor = one(on, "ServiceMonitor", name="agent-tree")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"] == selector
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NS]}

    none = render(helm, tmp_path, {"operator": {"metricsPort": 0}})
    assert not find(none, "Service", name="agent-tree-metrics")
    assert env_of(operator_pod(none)["spec"]["containers"][0])["AGENT_TREE_METRICS_PORT"] == "0"


def test_network_policy(helm: str, tmp_path: Path) -> None:
    assert not find(render(helm, tmp_path), "NetworkPolicy")
    docs = render(helm, tmp_path, VALUE_SETS["networkpolicy"])
    policy = one(docs, "NetworkPolicy", name="agent-tree")["spec"]
    assert (
        policy["podSelector"]["matchLabels"]
        == one(docs, "Deployment", name="agent-tree")["spec"]["selector"]["matchLabels"]
    )
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    metrics_rule = next(r for r in policy["ingress"] if r["ports"][0]["port"] == "metrics")
    assert metrics_rule["from"] == [{"namespaceSelector": {}}]
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert egress_ports == {
        (53, "UDP"),
        (53, "TCP"),
        (443, "TCP"),
        (6443, "TCP"),
        (7233, "TCP"),
        (5432, "TCP"),
        (6379, "TCP"),
    }


# --- history retention CronJob -----------------------------------------------------------------------


def retention_job(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "CronJob", name="agent-tree-retention")


def test_retention_cronjob_is_off_by_default(helm: str, tmp_path: Path) -> None:
    assert not find(render(helm, tmp_path, CONNECTIONS), "CronJob")


def test_retention_cronjob_purges_with_the_operators_image_secret_and_security(helm: str, tmp_path: Path) -> None:
    from agent_tree.cli import build_parser

    values = {**CONNECTIONS, "retention": {"enabled": True}}
    docs = render(helm, tmp_path, values)
    cron = retention_job(docs)
    spec = cron["spec"]
    assert spec["schedule"] == "17 3 * * *" and "timeZone" not in spec
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] == 3 and spec["failedJobsHistoryLimit"] == 3
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 2 and job["activeDeadlineSeconds"] == 3600
    pod = job["template"]["spec"]
    operator = operator_pod(docs)["spec"]
    (container,) = pod["containers"]
    (op_container,) = operator["containers"]
    # The operator's image, its database Secret reference and its Pod Security settings, exactly.
    assert container["image"] == op_container["image"] == "agent-tree:0.1.0"
    assert container["env"] == [e for e in op_container["env"] if e["name"] == "AGENT_TREE_DATABASE_URL"]
    assert container["env"][0]["valueFrom"] == {"secretKeyRef": {"name": "pg", "key": "dsn"}}
    assert pod["securityContext"] == operator["securityContext"]
    assert container["securityContext"] == op_container["securityContext"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    # The command is one the image's CLI takes: `agent-tree db purge --older-than 30d`.
    command = container["command"]
    assert command[:3] == ["agent-tree", "db", "purge"]
    args = build_parser().parse_args(command[1:])
    assert (args.command, args.db_command) == ("db", "purge"), args
    assert args.older_than == timedelta(days=30) and not args.dry_run
    assert job["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "retention"


def test_retention_values_reach_the_cronjob(helm: str, tmp_path: Path) -> None:
    values = {
        "postgresql": {"url": "postgresql://u:p@pg:5432/db"},
        "retention": {"enabled": True, "schedule": "@hourly", "timeZone": "Europe/Berlin", "olderThan": "12h",
                      "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 5},
    }  # fmt: skip
    cron = retention_job(render(helm, tmp_path, values))
    assert cron["spec"]["schedule"] == "@hourly" and cron["spec"]["timeZone"] == "Europe/Berlin"
    assert cron["spec"]["successfulJobsHistoryLimit"] == 1 and cron["spec"]["failedJobsHistoryLimit"] == 5
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"][-2:] == ["--older-than", "12h"]
    # A plain URL goes into the chart's connection Secret; the pod references it, never the DSN itself.
    assert container["env"] == [{"name": "AGENT_TREE_DATABASE_URL", "valueFrom": {"secretKeyRef": {
        "name": "agent-tree-connections", "key": "DATABASE_URL"}}}]  # fmt: skip
    assert "postgresql://" not in yaml.safe_dump(cron)


def test_retention_needs_a_database_and_valid_values(helm: str, tmp_path: Path) -> None:
    proc = run_helm(helm, "template", "x", str(CHART), "--kube-version", KUBE_VERSION,
                    values={"retention": {"enabled": True}}, tmp=tmp_path)  # fmt: skip
    assert proc.returncode != 0
    need = "retention.enabled needs the history database: set postgresql.url or postgresql.existingSecret"
    assert need in proc.stderr, proc.stderr
    for bad in ({"olderThan": "30 days"}, {"olderThan": "30"}, {"schedule": "daily"}, {"schedule": "1 2 3"},
                {"keep": "30d"}, {"failedJobsHistoryLimit": -1}):  # fmt: skip
        values = {**CONNECTIONS, "retention": {"enabled": True, **bad}}
        proc = run_helm(helm, "template", "x", str(CHART), "--kube-version", KUBE_VERSION, values=values, tmp=tmp_path)
        assert proc.returncode != 0, f"accepted retention {bad}"
        assert "values don't meet the specifications of the schema" in proc.stderr, (bad, proc.stderr)


# --- workers' metrics, PodMonitor, Grafana dashboard -------------------------------------------------


def test_worker_metrics_port_and_autoscale_interval_reach_the_operator(helm: str, tmp_path: Path) -> None:
    env = env_of(operator_pod(render(helm, tmp_path))["spec"]["containers"][0])
    assert env["AGENT_TREE_WORKER_METRICS_PORT"] == "9090"
    assert env["AGENT_TREE_AUTOSCALE_INTERVAL_SECONDS"] == "5"
    values = {"workers": {"metricsPort": 0}, "operator": {"autoscaleIntervalSeconds": 2}}
    env = env_of(operator_pod(render(helm, tmp_path, values))["spec"]["containers"][0])
    assert env["AGENT_TREE_WORKER_METRICS_PORT"] == "0" and env["AGENT_TREE_AUTOSCALE_INTERVAL_SECONDS"] == "2"
    for bad in ({"workers": {"metricsPort": "auto"}}, {"operator": {"autoscaleIntervalSeconds": 0}}):
        proc = run_helm(helm, "template", "x", str(CHART), "--kube-version", KUBE_VERSION, values=bad, tmp=tmp_path)
        assert proc.returncode != 0 and "values don't meet the specifications of the schema" in proc.stderr


def test_pod_monitor_scrapes_the_operators_worker_pods(helm: str, tmp_path: Path) -> None:
    from agent_tree_operator.resources.deployments import METRICS_PORT_NAME

    from agent_tree import naming

    assert not find(render(helm, tmp_path), "PodMonitor")
    monitor = one(render(helm, tmp_path, VALUE_SETS["observability"]), "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    labels = naming.worker_labels("t", "a")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()  # it selects exactly the pods the operator creates
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == METRICS_PORT_NAME and endpoint["path"] == "/metrics"
    # The Temporal SDK's series carry the Temporal `namespace`: kept, not renamed exported_namespace.
    assert endpoint["honorLabels"] is True
    assert monitor["spec"]["namespaceSelector"] == {"any": True}  # cluster-wide operator
    namespaced = render(helm, tmp_path, {**NAMESPACED, "metrics": {"podMonitor": {"enabled": True}}})
    assert one(namespaced, "PodMonitor")["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    values = {"metrics": {"podMonitor": {"enabled": True}}, "workers": {"metricsPort": 0}}
    proc = run_helm(helm, "template", "x", str(CHART), "--kube-version", KUBE_VERSION, values=values, tmp=tmp_path)
    assert proc.returncode != 0 and "metrics.podMonitor.enabled needs workers.metricsPort > 0" in proc.stderr


def test_servicemonitor_keeps_the_autoscalers_namespace_label(helm: str, tmp_path: Path) -> None:
    monitor = one(render(helm, tmp_path, VALUE_SETS["servicemonitor"]), "ServiceMonitor", name="agent-tree")
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


def defined_metric_names() -> set[str]:
    """Every series name the operator and the workers export (counters with _total, histograms' parts)."""
    import agent_tree_operator.metrics as operator_metrics
    import agent_tree_worker.metrics as worker_metrics
    from prometheus_client.metrics import MetricWrapperBase

    names = set()
    for module in (operator_metrics, worker_metrics):
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                for metric in value.collect():
                    base = metric.name
                    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(
                        metric.type, [""]
                    )
                    names.update(base + s for s in suffixes)
    names.add(f"{worker_metrics.REPAIRS}_total")
    names.add(f"{worker_metrics.REPAIR_FAILURES}_total")
    return names


def metric_labels() -> dict[str, set[str]]:
    """Label names of every agent_tree_* series the operator and the workers export (by series name)."""
    import agent_tree_operator.metrics as operator_metrics
    import agent_tree_worker.metrics as worker_metrics
    from prometheus_client.metrics import MetricWrapperBase

    out: dict[str, set[str]] = {}
    for module in (operator_metrics, worker_metrics):
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                labels = set(value._labelnames)
                for metric in value.collect():
                    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(
                        metric.type, [""]
                    )
                    for suffix in suffixes:
                        out[metric.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    # Recorded by workflows through workflow.metric_meter() with {"agent"} (workflows.py), bridged.
    for name in (worker_metrics.REPAIRS, worker_metrics.REPAIR_FAILURES):
        out[f"{name}_total"] = {"agent"}
    return out


def test_one_outcome_label_name_across_metrics() -> None:
    """The outcome of what is counted is `result` everywhere (operator and workers), never `status`."""
    labels = metric_labels()
    assert labels["agent_tree_operator_reconciles_total"] >= {"result"}
    for name in ("agent_tree_worker_agent_turns_total", "agent_tree_worker_handoffs_total",
                 "agent_tree_worker_tool_calls_total", "agent_tree_worker_model_calls_total"):  # fmt: skip
        assert "result" in labels[name], name
    offenders = sorted(name for name, names in labels.items() if "status" in names)
    assert not offenders, f"these metrics use `status` as their outcome label; use `result`: {offenders}"


def test_dashboard_groups_and_filters_only_by_labels_the_metrics_have() -> None:
    """A panel grouping by a label its metric lacks shows one unlabeled line: not an error in Grafana."""
    import re

    labels = metric_labels()
    # Added by Prometheus from the target (and by the PodMonitor's relabelings).
    target = {"namespace", "pod", "job", "instance", "service", "container", "endpoint", "tree", "worker_agent"}
    dashboard = json.loads((CHART / "files" / "dashboards" / "agent-tree.json").read_text())
    checked = 0
    for panel in dashboard["panels"]:
        for t in panel.get("targets", []):
            expr = t["expr"]
            for m in re.finditer(r"\bby \(([^)]*)\)\s*\((?:rate|increase|irate)?\(?\s*(agent_tree_[a-z_]+)", expr):
                grouped = {x.strip() for x in m.group(1).split(",")}
                missing = grouped - labels[m.group(2)] - target
                assert not missing, f"panel {panel['title']!r}: {m.group(2)} has no label {sorted(missing)}"
                checked += 1
            for m in re.finditer(r"(agent_tree_[a-z_]+)\{([^}]*)\}", expr):
                used = {x.split("=")[0].strip().rstrip("!~") for x in m.group(2).split(",") if x.strip()}
                missing = used - labels[m.group(1)] - target
                assert not missing, f"panel {panel['title']!r}: {m.group(1)} has no label {sorted(missing)}"
                checked += 1
    assert checked >= 15


def test_dashboard_picks_temporal_series_by_task_queue_not_namespace() -> None:
    """The PodMonitor honours the SDK's own `namespace` label (the Temporal namespace), so the Temporal
    panels select a Kubernetes namespace through the task queue name, which embeds it."""
    import re

    from agent_tree import naming

    dashboard = json.loads((CHART / "files" / "dashboards" / "agent-tree.json").read_text())
    selectors = [
        m.group(1)
        for panel in dashboard["panels"]
        for t in panel.get("targets", [])
        for m in re.finditer(r"\btemporal_[a-z_]+\{([^}]*)\}", t["expr"])
    ]
    assert len(selectors) >= 3
    for selector in selectors:
        assert not re.search(r"\bnamespace\s*=", selector), selector
        (pattern,) = re.findall(r'task_queue=~"([^"]+)"', selector)
        # Grafana expands a multi-value $namespace into (a|b) inside a regex matcher; Prometheus anchors it.
        regex = re.compile(pattern.replace("$namespace", "team-a|team-b"))
        assert regex.fullmatch(naming.task_queue("team-b", "invoice", "triage"))
        assert not regex.fullmatch(naming.task_queue("team-c", "invoice", "triage"))
        assert not regex.fullmatch(naming.task_queue("team-ab", "invoice", "triage"))


def test_dashboard_configmap_holds_the_dashboard_and_queries_only_real_metrics(helm: str, tmp_path: Path) -> None:
    import re

    assert not find(render(helm, tmp_path), "ConfigMap")
    config_map = one(render(helm, tmp_path, VALUE_SETS["observability"]), "ConfigMap", name="agent-tree-dashboard")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"  # what Grafana's sidecar looks for
    dashboard = json.loads(config_map["data"]["agent-tree.json"])
    assert dashboard == json.loads((CHART / "files" / "dashboards" / "agent-tree.json").read_text())
    assert dashboard["uid"] == "agent-tree" and dashboard["title"] == "agent-tree"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 20
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    known = defined_metric_names()
    used = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for name in re.findall(r"\b((?:agent_tree|temporal)_[a-z_]+)\b", target["expr"]):
                used.add(name)
                if name.startswith("agent_tree_"):
                    assert name in known, f"panel {panel['title']!r} queries {name}, which nothing exports"
    # Every headline metric of the issue has a panel.
    for name in (
        "agent_tree_operator_reconciles_total",
        "agent_tree_operator_reconcile_duration_seconds_bucket",
        "agent_tree_operator_runs",
        "agent_tree_operator_run_duration_seconds_bucket",
        "agent_tree_operator_status_patches_total",
        "agent_tree_operator_runs_active",
        "agent_tree_autoscaler_backlog",
        "agent_tree_worker_agent_turns_total",
        "agent_tree_worker_model_call_duration_seconds_bucket",
        "agent_tree_worker_model_tokens_total",
        "agent_tree_worker_tool_call_duration_seconds_bucket",
        "agent_tree_worker_tool_calls_total",
        "agent_tree_worker_handoffs_total",
        "agent_tree_worker_structured_output_repairs_total",
        "agent_tree_worker_structured_output_failures_total",
    ):
        assert name in used, f"no panel shows {name}"
    assert any(name.startswith("temporal_") for name in used)


# --- worker Pod Security (issue 10 item 1) ---------------------------------------------------------


def operator_config_of(docs: list[dict[str, Any]]) -> Any:
    """The OperatorConfig the rendered operator Deployment's plain env values produce."""
    from agent_tree_operator.config import OperatorConfig

    env = env_of(operator_pod(docs)["spec"]["containers"][0])
    return OperatorConfig.from_env({k: v for k, v in env.items() if isinstance(v, str)})


def test_worker_security_contexts_reach_the_operator(helm: str, tmp_path: Path) -> None:
    from agent_tree_operator.config import DEFAULT_WORKER_POD_SECURITY_CONTEXT, DEFAULT_WORKER_SECURITY_CONTEXT

    config = operator_config_of(render(helm, tmp_path))
    # The chart's defaults are the operator's built-in ones (which pass Pod Security `restricted`).
    assert config.worker_pod_security_context == DEFAULT_WORKER_POD_SECURITY_CONTEXT
    assert config.worker_security_context == DEFAULT_WORKER_SECURITY_CONTEXT
    values = {
        "workers": {
            "podSecurityContext": {"runAsUser": 2000, "fsGroup": None},
            "securityContext": {"readOnlyRootFilesystem": False},
        }
    }
    config = operator_config_of(render(helm, tmp_path, values))
    assert config.worker_pod_security_context == {
        "runAsNonRoot": True, "runAsUser": 2000, "runAsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}  # fmt: skip
    assert config.worker_security_context["readOnlyRootFilesystem"] is False
    assert config.worker_security_context["capabilities"] == {"drop": ["ALL"]}
    none = operator_config_of(render(helm, tmp_path, {"workers": {"podSecurityContext": None}}))
    assert none.worker_pod_security_context == {}


def test_schema_rejects_bad_worker_security_contexts(helm: str, tmp_path: Path) -> None:
    for values in (
        {"workers": {"securityContext": {"readOnly": True}}},
        {"workers": {"podSecurityContext": {"runAsUser": "root"}}},
        {"workers": {"podSecurityContext": {"seccompProfile": {"type": "Default"}}}},
    ):
        proc = run_helm(helm, "template", "x", str(CHART), "--kube-version", KUBE_VERSION, values=values, tmp=tmp_path)
        assert proc.returncode != 0 and "values don't meet the specifications of the schema" in proc.stderr, values


def test_worker_security_context_schema_has_the_crds_fields() -> None:
    """The chart's value and the AgentTree's field take the same keys (one model, agent_tree.spec)."""
    from agent_tree.spec_workers import PodSecurityContext, SecurityContext

    definitions = json.loads((CHART / "values.schema.json").read_text())["definitions"]
    assert set(definitions["podSecurityContext"]["properties"]) == set(PodSecurityContext.model_fields)
    assert set(definitions["securityContext"]["properties"]) == set(SecurityContext.model_fields)


# --- approvals -------------------------------------------------------------------------------------------


def test_approver_role_and_admission_policy(helm: str, tmp_path: Path) -> None:
    docs = render(helm, tmp_path)
    (role,) = [d for d in find(docs, "ClusterRole") if d["metadata"]["name"] == "agent-tree-approver"]
    assert permissions(role["rules"]) == {
        *(("agenttree.io", r, v) for r in ("agentruns", "agentapprovals") for v in ("get", "list", "watch")),
        ("agenttree.io", "agentapprovals", "update"),
        ("agenttree.io", "agentapprovals", "patch"),
    }  # deciding only: no create or delete, nothing that changes a run
    (vap,) = find(docs, "ValidatingAdmissionPolicy")
    (binding,) = find(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == vap["metadata"]["name"] and binding["spec"]["validationActions"] == ["Deny"]
    (rule,) = vap["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["agentapprovals"] and set(rule["operations"]) == {"CREATE", "UPDATE"}
    checks = " ".join(v["expression"] for v in vap["spec"]["validations"])
    assert "request.userInfo.username" in checks and "variables.approverGroups" in checks
    off = render(helm, tmp_path, {"approvals": {"approverRole": False, "admissionPolicy": False}})
    assert not find(off, "ValidatingAdmissionPolicy") and not find(off, "ValidatingAdmissionPolicyBinding")
    assert not [d for d in find(off, "ClusterRole") if d["metadata"]["name"].endswith("-approver")]
    no_rbac = render(helm, tmp_path, {"rbac": {"create": False}})
    assert not [d for d in find(no_rbac, "ClusterRole") if d["metadata"]["name"].endswith("-approver")]
