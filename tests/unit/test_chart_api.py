"""The chart's REST API (`agent-tree api`, issue 13 item 6): Deployment, Services, Ingress, RBAC,
ServiceMonitor and NetworkPolicy, rendered by the real helm (hack/build-helm.sh) and checked here;
tests/e2e/test_helm_api.py installs them on a real API server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from platformlib import built_tool
from test_chart import CHART, CONNECTIONS, KUBE_VERSION, NS, find, one, permissions, render, run_helm

API = "agent-tree-api"
# Everything the API's ServiceAccount may do: who is this token, may it read there. No impersonate,
# nothing on agenttree.io (writes go through with the caller's own token).
API_PERMISSIONS = {
    ("authentication.k8s.io", "tokenreviews", "create"),
    ("authorization.k8s.io", "subjectaccessreviews", "create"),
}
SSE_ANNOTATIONS = {
    "nginx.ingress.kubernetes.io/proxy-buffering": "off",
    "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
}


@pytest.fixture(scope="session")
def helm() -> str:
    return built_tool("build-helm.sh")


def is_api(doc: dict[str, Any]) -> bool:
    return doc["metadata"]["labels"].get("app.kubernetes.io/component") == "api"


def api_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment", name=API)["spec"]["template"]


def api_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = api_pod(docs)["spec"]["containers"]
    return container


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def refused(helm: str, tmp: Path, values: dict[str, Any]) -> str:
    proc = run_helm(helm, "template", "x", str(CHART), "--kube-version", KUBE_VERSION, values=values, tmp=tmp)
    assert proc.returncode != 0, f"accepted {values}"
    return proc.stderr


# --- present by default, absent when disabled ----------------------------------------------------


def test_api_objects_are_there_by_default_and_gone_with_api_disabled(helm: str, tmp_path: Path) -> None:
    docs = render(helm, tmp_path)
    api = {(d["kind"], d["metadata"]["name"]) for d in docs if is_api(d)}
    assert api == {
        ("Deployment", API),
        ("Service", API),
        ("Service", f"{API}-metrics"),
        ("ServiceAccount", API),
        ("ClusterRole", API),
        ("ClusterRoleBinding", API),
    }
    off = render(helm, tmp_path, {"api": {"enabled": False, "ingress": {"enabled": True}}})
    assert not [d for d in off if is_api(d) or "api" in d["metadata"]["name"].split("-")]
    # Turning the API off leaves every other object exactly as it was.
    assert off == [d for d in docs if not is_api(d)]


# --- RBAC ------------------------------------------------------------------------------------------


def test_api_rbac_is_tokenreview_and_subjectaccessreview_only(helm: str, tmp_path: Path) -> None:
    docs = render(helm, tmp_path)
    account = one(docs, "ServiceAccount", name=API, namespace=NS)
    assert "automountServiceAccountToken" not in account  # the pod asks for its token explicitly
    assert api_pod(docs)["spec"]["serviceAccountName"] == API
    assert api_pod(docs)["spec"]["automountServiceAccountToken"] is True
    bindings = [
        b
        for b in find(docs, "ClusterRoleBinding") + find(docs, "RoleBinding")
        if {"kind": "ServiceAccount", "name": API, "namespace": NS} in b["subjects"]
    ]
    assert [(b["kind"], b["metadata"]["name"]) for b in bindings] == [("ClusterRoleBinding", API)]
    (binding,) = bindings
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": API, "namespace": NS}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": API}
    assert permissions(one(docs, "ClusterRole", name=API)["rules"]) == API_PERMISSIONS
    # No role of the chart lets anyone impersonate (the API passes callers' tokens through).
    everything = set().union(*(permissions(r["rules"]) for r in find(docs, "ClusterRole") + find(docs, "Role")))
    assert not {p for p in everything if p[2] == "impersonate"}
    # Namespaced mode changes the operator's RBAC, not the API's (a TokenReview is cluster-scoped).
    namespaced = render(helm, tmp_path, {"operator": {"watchNamespaces": ["team-a"]}})
    assert permissions(one(namespaced, "ClusterRole", name=API)["rules"]) == API_PERMISSIONS


def test_api_rbac_follows_rbac_create_and_its_service_account_values(helm: str, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {"rbac": {"create": False}})
    assert not [d for d in docs if is_api(d) and d["apiVersion"].startswith("rbac.")]
    assert one(docs, "ServiceAccount", name=API)
    values = {"api": {"serviceAccount": {"create": False, "name": "platform-api"}}}
    docs = render(helm, tmp_path, values)
    assert not find(docs, "ServiceAccount", name=API) and not find(docs, "ServiceAccount", name="platform-api")
    assert api_pod(docs)["spec"]["serviceAccountName"] == "platform-api"
    assert one(docs, "ClusterRoleBinding", name=API)["subjects"][0]["name"] == "platform-api"
    stderr = refused(helm, tmp_path, {"api": {"serviceAccount": {"create": False}}})
    assert "api.serviceAccount.name is required when api.serviceAccount.create is false" in stderr


# --- the pod ------------------------------------------------------------------------------------------


def test_api_pod_passes_restricted_pod_security(helm: str, tmp_path: Path) -> None:
    docs = render(helm, tmp_path)
    pod = api_pod(docs)["spec"]
    sc = pod["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    container = api_container(docs)
    csc = container["securityContext"]
    assert csc["allowPrivilegeEscalation"] is False and csc["privileged"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert csc["runAsNonRoot"] is True and csc["readOnlyRootFilesystem"] is True
    assert csc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
    assert all("hostPort" not in p for p in container["ports"])
    # The same settings as the operator's pod, which the e2e tests run under `restricted`.
    operator = one(docs, "Deployment", name="agent-tree")["spec"]["template"]["spec"]
    assert sc == operator["securityContext"]
    assert csc == operator["containers"][0]["securityContext"]
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"] and resources["limits"]["memory"]
    # Helm merges a changed key into the defaults; the rest stays.
    changed = api_container(render(helm, tmp_path, {"api": {"securityContext": {"readOnlyRootFilesystem": False}}}))
    assert changed["securityContext"] == {**csc, "readOnlyRootFilesystem": False}


def test_api_command_probes_ports_and_env(helm: str, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, CONNECTIONS)
    template = api_pod(docs)
    assert template["metadata"]["labels"]["app.kubernetes.io/part-of"] == "agent-tree"  # the pod runner's selector
    assert template["metadata"]["labels"]["app.kubernetes.io/component"] == "api"
    container = api_container(docs)
    assert container["command"] == ["agent-tree", "api"] and "args" not in container
    assert container["image"] == "agent-tree:0.1.0" and container["imagePullPolicy"] == "IfNotPresent"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
    ]
    env = env_of(container)
    assert {k: v for k, v in env.items() if k.startswith("AGENT_TREE_API_")} == {
        "AGENT_TREE_API_PORT": "8080",
        "AGENT_TREE_API_METRICS_PORT": "9090",
        "AGENT_TREE_API_ALLOW_ANONYMOUS": "false",
        "AGENT_TREE_API_AUTH_CACHE_SECONDS": "60",
        "AGENT_TREE_API_ACCESS_CACHE_SECONDS": "10",
        "AGENT_TREE_API_MAX_BODY_BYTES": "1048576",
        "AGENT_TREE_API_HEARTBEAT_SECONDS": "15",
    }
    # The database and Redis reach it exactly as they reach the operator: Secret references.
    operator_env = one(docs, "Deployment", name="agent-tree")["spec"]["template"]["spec"]["containers"][0]["env"]
    for name in ("AGENT_TREE_DATABASE_URL", "AGENT_TREE_REDIS_URL"):
        assert [e for e in container["env"] if e["name"] == name] == [e for e in operator_env if e["name"] == name]
    assert env["AGENT_TREE_DATABASE_URL"] == {"secretKeyRef": {"name": "pg", "key": "dsn"}}

    values = {
        "api": {"port": 18080, "metricsPort": 0, "allowAnonymous": True, "maxBodyBytes": 4194304,
                "heartbeatSeconds": 5, "extraArgs": ["--log-level", "debug"],
                "extraEnv": [{"name": "EXTRA", "value": "1"}],
                "image": {"repository": "r.example/api", "digest": "sha256:" + "c" * 64, "pullPolicy": "Always"}},
        "metrics": {"serviceMonitor": {"enabled": True}},
    }  # fmt: skip
    docs = render(helm, tmp_path, values)
    container = api_container(docs)
    env = env_of(container)
    assert env["AGENT_TREE_API_PORT"] == "18080" and env["AGENT_TREE_API_METRICS_PORT"] == "0"
    assert env["AGENT_TREE_API_ALLOW_ANONYMOUS"] == "true" and env["AGENT_TREE_API_MAX_BODY_BYTES"] == "4194304"
    assert env["AGENT_TREE_API_HEARTBEAT_SECONDS"] == "5" and env["EXTRA"] == "1"
    assert "AGENT_TREE_DATABASE_URL" not in env and "AGENT_TREE_REDIS_URL" not in env
    assert container["args"] == ["--log-level", "debug"]
    assert container["image"] == "r.example/api@sha256:" + "c" * 64 and container["imagePullPolicy"] == "Always"
    assert container["ports"] == [{"name": "http", "containerPort": 18080, "protocol": "TCP"}]
    # No metrics port: no metrics Service and no ServiceMonitor for the API (the operator's stays).
    assert not find(docs, "Service", name=f"{API}-metrics") and not find(docs, "ServiceMonitor", name=API)
    assert one(docs, "ServiceMonitor", name="agent-tree")
    # Unset, the API's image follows the operator's.
    operator_image = {"image": {"repository": "r.example/agent-tree", "tag": "1.2.3", "pullPolicy": "Never"}}
    container = api_container(render(helm, tmp_path, operator_image))
    assert container["image"] == "r.example/agent-tree:1.2.3" and container["imagePullPolicy"] == "Never"


# --- Service, Ingress, ServiceMonitor, NetworkPolicy ---------------------------------------------------


def test_api_service_targets_the_api_pods_only(helm: str, tmp_path: Path) -> None:
    docs = render(helm, tmp_path)
    deployment = one(docs, "Deployment", name=API)
    service = one(docs, "Service", name=API)["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert service["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert selects(service["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    operator_pod_labels = one(docs, "Deployment", name="agent-tree")["spec"]["template"]["metadata"]["labels"]
    assert not selects(service["selector"], operator_pod_labels)
    metrics = one(docs, "Service", name=f"{API}-metrics")["spec"]
    assert metrics["type"] == "ClusterIP" and metrics["selector"] == service["selector"]
    assert metrics["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    values = {"api": {"service": {"type": "LoadBalancer", "port": 8443, "annotations": {"a": "b"}}}}
    exposed = one(render(helm, tmp_path, values), "Service", name=API)
    assert exposed["spec"]["type"] == "LoadBalancer" and exposed["metadata"]["annotations"] == {"a": "b"}
    assert [p["port"] for p in exposed["spec"]["ports"]] == [8443]  # never the metrics port


def test_api_ingress_is_off_by_default_and_routes_to_the_service_when_on(helm: str, tmp_path: Path) -> None:
    assert not find(render(helm, tmp_path), "Ingress")
    values = {
        "api": {
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "annotations": SSE_ANNOTATIONS,
                "hosts": [
                    {"host": "agents.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]},
                    {"host": "api.example.com", "paths": [{"path": "/v1"}]},
                ],
                "tls": [{"secretName": "agents-tls", "hosts": ["agents.example.com"]}],
            }
        }
    }
    docs = render(helm, tmp_path, values)
    ingress = one(docs, "Ingress", name=API)
    assert ingress["metadata"]["annotations"] == SSE_ANNOTATIONS
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"secretName": "agents-tls", "hosts": ["agents.example.com"]}]
    service = one(docs, "Service", name=API)
    backend = {"service": {"name": service["metadata"]["name"], "port": {"name": service["spec"]["ports"][0]["name"]}}}
    assert spec["rules"] == [
        {"host": "agents.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}},
        {"host": "api.example.com", "http": {"paths": [{"path": "/v1", "pathType": "Prefix", "backend": backend}]}},
    ]
    plain = one(render(helm, tmp_path, {"api": {"ingress": {"enabled": True}}}), "Ingress")["spec"]
    assert "ingressClassName" not in plain and "tls" not in plain


def test_api_servicemonitor_scrapes_the_api_metrics_service(helm: str, tmp_path: Path) -> None:
    assert not find(render(helm, tmp_path), "ServiceMonitor")
    docs = render(helm, tmp_path, {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}})
    monitor = one(docs, "ServiceMonitor", name=API)
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NS]}
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # Each ServiceMonitor selects exactly one Service: its own metrics Service.
    for name, service in (("agent-tree", "agent-tree-metrics"), (API, f"{API}-metrics")):
        selector = one(docs, "ServiceMonitor", name=name)["spec"]["selector"]["matchLabels"]
        chosen = [s["metadata"]["name"] for s in find(docs, "Service") if selects(selector, s["metadata"]["labels"])]
        assert chosen == [service], (name, chosen)
    off = render(helm, tmp_path, {"api": {"enabled": False}, "metrics": {"serviceMonitor": {"enabled": True}}})
    assert [m["metadata"]["name"] for m in find(off, "ServiceMonitor")] == ["agent-tree"]


def test_api_network_policy(helm: str, tmp_path: Path) -> None:
    assert not find(render(helm, tmp_path), "NetworkPolicy")
    callers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    values = {"networkPolicy": {"enabled": True, "metricsFrom": [{"namespaceSelector": {}}], "api": {"from": callers}}}
    docs = render(helm, tmp_path, values)
    policy = one(docs, "NetworkPolicy", name=API)["spec"]
    assert policy["podSelector"]["matchLabels"] == one(docs, "Deployment", name=API)["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    ingress = {rule["ports"][0]["port"]: rule.get("from") for rule in policy["ingress"]}
    assert ingress == {"http": callers, "metrics": [{"namespaceSelector": {}}]}
    egress = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    # DNS, the Kubernetes API, PostgreSQL, Redis; not Temporal (runs start through AgentRuns).
    assert egress == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP"), (5432, "TCP"), (6379, "TCP")}
    # The operator's own policy does not select the API pods, nor the API's the operator's.
    operator_labels = one(docs, "Deployment", name="agent-tree")["spec"]["template"]["metadata"]["labels"]
    assert not selects(policy["podSelector"]["matchLabels"], operator_labels)
    operator_policy = one(docs, "NetworkPolicy", name="agent-tree")["spec"]
    assert not selects(operator_policy["podSelector"]["matchLabels"], api_pod(docs)["metadata"]["labels"])
    open_ = one(render(helm, tmp_path, {"networkPolicy": {"enabled": True}}), "NetworkPolicy", name=API)["spec"]
    assert all("from" not in rule for rule in open_["ingress"])


# --- schema -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"api": {"replicas": "two"}}, "at '/api/replicas': got string, want integer"),
        ({"api": {"enabled": "yes"}}, "at '/api/enabled': got string, want boolean"),
        ({"api": {"allowAnonymous": "false"}}, "at '/api/allowAnonymous': got string, want boolean"),
        ({"api": {"port": 0}}, "at '/api/port'"),
        ({"api": {"metricsPort": "9090"}}, "at '/api/metricsPort': got string, want integer"),
        ({"api": {"service": {"type": "Ingress"}}}, "at '/api/service/type'"),
        ({"api": {"image": {"tag": "latest"}}}, "at '/api/image/tag'"),
        ({"api": {"ingress": {"hosts": [{"host": "a", "paths": [{"path": "v1"}]}]}}},
         "at '/api/ingress/hosts/0/paths/0/path': 'v1' does not match pattern '^/'"),
        ({"api": {"ingress": {"tls": {"secretName": "x"}}}}, "at '/api/ingress/tls': got object, want array"),
        ({"api": {"colour": "blue"}}, "at '/api': additional properties 'colour' not allowed"),
        ({"api": {"securityContext": {"runAsUser": "root"}}}, "/api/securityContext"),
        ({"networkPolicy": {"api": {"from": "everyone"}}}, "at '/networkPolicy/api/from': got string, want array"),
    ],
)  # fmt: skip
def test_schema_refuses_bad_api_values_naming_the_field(
    helm: str, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    stderr = refused(helm, tmp_path, values)
    assert "values don't meet the specifications of the schema" in stderr and message in stderr, stderr


def test_every_api_value_has_a_description() -> None:
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())

    def undocumented(node: dict[str, Any], path: str) -> list[str]:
        out = [] if "description" in node or path.endswith("]") else [path]
        for key, child in node.get("properties", {}).items():
            out += undocumented(child, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            out += undocumented(node["items"], f"{path}[]")
        return out

    api = schema["properties"]["api"]
    missing = undocumented(api, "api")
    assert not missing, f"values.schema.json: no description for {missing}"
    assert set(api["properties"]) >= {"enabled", "replicas", "image", "resources", "podSecurityContext",
                                      "securityContext", "port", "metricsPort", "allowAnonymous", "extraEnv",
                                      "nodeSelector", "tolerations", "affinity", "service", "ingress"}  # fmt: skip


# --- the chart and `agent-tree api` agree ------------------------------------------------------------------


def test_api_env_is_what_agent_tree_api_reads(helm: str, tmp_path: Path) -> None:
    """Every AGENT_TREE_API_* the chart sets is a setting of ApiConfig, and the values arrive."""
    import dataclasses

    from agent_tree_api.config import ApiConfig

    known = {f"AGENT_TREE_API_{f.name.upper()}" for f in dataclasses.fields(ApiConfig) if f.name != "settings"}
    values = {"api": {"port": 18080, "metricsPort": 0, "allowAnonymous": True, "authCacheSeconds": 30,
                      "accessCacheSeconds": 5, "maxBodyBytes": 2097152, "heartbeatSeconds": 7}}  # fmt: skip
    env = env_of(api_container(render(helm, tmp_path, values)))
    chart = {k for k in env if k.startswith("AGENT_TREE_API_")}
    assert chart <= known, f"agent-tree api does not read {sorted(chart - known)}"
    config = ApiConfig.from_env({k: v for k, v in env.items() if isinstance(v, str)})
    assert (config.port, config.metrics_port, config.allow_anonymous) == (18080, 0, True)
    assert (config.auth_cache_seconds, config.access_cache_seconds) == (30, 5)
    assert (config.max_body_bytes, config.heartbeat_seconds) == (2097152, 7)
    default = ApiConfig.from_env({k: v for k, v in env_of(api_container(render(helm, tmp_path))).items()
                                  if isinstance(v, str)})  # fmt: skip
    assert default == dataclasses.replace(ApiConfig(), settings=default.settings), (
        "chart defaults differ from the API's"
    )


def test_api_cli_takes_the_charts_command_and_arguments(helm: str, tmp_path: Path) -> None:
    """The image's `agent-tree api` (the same console script as this venv's) exists and takes extraArgs."""
    import subprocess
    import sys

    from agent_tree.cli import build_parser

    container = api_container(render(helm, tmp_path, {"api": {"extraArgs": ["--log-level", "debug"]}}))
    cli = Path(sys.executable).parent / container["command"][0]
    proc = subprocess.run([str(cli), *container["command"][1:], "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    args = build_parser().parse_args([*container["command"][1:], *container["args"]])
    assert (args.command, args.log_level) == ("api", "debug")
