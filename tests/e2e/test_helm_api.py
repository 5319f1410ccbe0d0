"""The chart's REST API on the local platform's real API server (issue 13 item 6).

One release (`hch-*`, operator scaled to 0, CRDs left to `kubectl apply -f crds/`) in a namespace
that enforces Pod Security `restricted`, with the Ingress and the NetworkPolicies on:

- every API object the chart renders is created (so the API server validated it), the Deployment's
  pod is admitted under `restricted` (the ReplicaSet controller creates it through PodSecurity
  admission) and the Service's EndpointSlice points at it;
- the API's ServiceAccount may create tokenreviews and subjectaccessreviews and nothing more (a
  `kubectl auth can-i` matrix and its effective rules), in particular no `impersonate`;
- the pod runner runs the pod's command and env as a process with a token of that ServiceAccount
  (as a pod would have), and the chart's probes' paths answer on the chart's port: /healthz and
  /readyz (with the platform's PostgreSQL and Redis from the Secret the chart references), /metrics
  on the metrics port.
"""

from __future__ import annotations

import copy
import json
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from operator_process import apply_crds, free_port, ok
from platformlib import REPO, Platform, built_tool, wait_for
from test_helm import can, kubectl_json, operator_kubeconfig

pytestmark = pytest.mark.e2e

CHART = REPO / "charts" / "agent-tree"
RESTRICTED = ("pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/enforce-version=latest")
API_RULES = {
    ("authentication.k8s.io", "tokenreviews", "create"),
    ("authorization.k8s.io", "subjectaccessreviews", "create"),
}


@dataclass
class ApiRelease:
    name: str
    namespace: str
    team: str  # another namespace, where runs would live
    fullname: str
    port: int
    metrics_port: int

    @property
    def api(self) -> str:
        return f"{self.fullname}-api"

    @property
    def sa(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.api}"


def http(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=3) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError:
        return 0, ""


@pytest.fixture(scope="module")
def helm(platform: Platform, tmp_path_factory: pytest.TempPathFactory):
    binary = built_tool("build-helm.sh")
    home = tmp_path_factory.mktemp("helm-home")
    env = {**platform.process_env(), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([binary, *args], capture_output=True, text=True, timeout=300, env=env)

    return run


@pytest.fixture(scope="module")
def release(platform: Platform, helm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiRelease]:
    """Install with the API scaled to 0, give its process a token of the API's ServiceAccount, scale to 1."""
    suffix = uuid.uuid4().hex[:6]
    rel = ApiRelease(name=f"hch-{suffix}", namespace=f"hch-api-{suffix}", team=f"hch-team-{suffix}",
                     fullname=f"hch-{suffix}-agent-tree", port=free_port(), metrics_port=free_port())  # fmt: skip
    tmp = tmp_path_factory.mktemp("helm-api")
    apply_crds(platform)
    for ns in (rel.namespace, rel.team):
        ok(platform.kubectl("create", "namespace", ns))
    ok(platform.kubectl("label", "namespace", rel.namespace, *RESTRICTED))
    ok(platform.kubectl("-n", rel.namespace, "create", "secret", "generic", "connections",
                        f"--from-literal=DATABASE_URL={platform.database_url}",
                        f"--from-literal=REDIS_URL={platform.redis_url}"))  # fmt: skip
    values = {
        "crds": {"install": False},
        "approvals": {"admissionPolicy": False, "approverRole": False},  # cluster-wide: not this test's
        "operator": {"replicas": 0, "watchNamespaces": [rel.team]},
        "postgresql": {"existingSecret": "connections", "existingSecretKey": "DATABASE_URL"},
        "redis": {"existingSecret": "connections", "existingSecretKey": "REDIS_URL"},
        "networkPolicy": {"enabled": True},
        "api": {
            "replicas": 0,
            "port": rel.port,
            "metricsPort": rel.metrics_port,
            "ingress": {
                "enabled": True,
                "annotations": {"nginx.ingress.kubernetes.io/proxy-buffering": "off",
                                "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"},
                "hosts": [{"host": f"{rel.name}.example.com", "paths": [{"path": "/"}]}],
            },
        },
    }  # fmt: skip
    values_file = tmp / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    try:
        ok(helm("install", rel.name, str(CHART), "-n", rel.namespace, "-f", str(values_file)))
        # What a pod gets from its ServiceAccount: a token of that account (the local process has no
        # projected volume, so it gets a kubeconfig holding one).
        kubeconfig = tmp / "api.kubeconfig"
        operator_kubeconfig(platform, rel.namespace, rel.api, kubeconfig)
        extra_env = json.dumps([{"name": "KUBECONFIG", "value": str(kubeconfig)}])
        ok(helm("upgrade", rel.name, str(CHART), "-n", rel.namespace, "--reuse-values",
                "--set", "api.replicas=1", "--set-json", f"api.extraEnv={extra_env}"))  # fmt: skip
        yield rel
    finally:
        helm("uninstall", rel.name, "-n", rel.namespace, "--wait", "--timeout", "60s")
        for ns in (rel.namespace, rel.team):
            platform.kubectl("delete", "namespace", ns, "--wait=false")


def api_process(platform: Platform, rel: ApiRelease) -> dict[str, Any] | None:
    for key, proc in platform.pod_processes().items():
        if key.startswith(f"{rel.namespace}/{rel.api}-"):
            return {"key": key, **proc}
    return None


def api_log(platform: Platform, rel: ApiRelease) -> str:
    found = api_process(platform, rel)
    paths = sorted((platform.logs / "pods").glob(f"{rel.namespace}_{rel.api}-*.log"))
    text = "\n".join(p.read_text()[-4000:] for p in paths)
    return f"process: {found}\n{text or '(no pod log)'}"


# --- the objects ---------------------------------------------------------------------------------------


def test_api_objects_are_created_and_the_pod_is_admitted_under_restricted(
    platform: Platform, helm, release: ApiRelease
) -> None:
    manifest = [d for d in yaml.safe_load_all(ok(helm("get", "manifest", release.name, "-n", release.namespace))) if d]
    api = {(d["kind"], d["metadata"]["name"]) for d in manifest
           if d["metadata"]["labels"].get("app.kubernetes.io/component") == "api"}  # fmt: skip
    assert api == {("Deployment", release.api), ("Service", release.api), ("Service", f"{release.api}-metrics"),
                   ("ServiceAccount", release.api), ("ClusterRole", release.api), ("ClusterRoleBinding", release.api),
                   ("Ingress", release.api), ("NetworkPolicy", release.api)}  # fmt: skip
    for kind, name in api:
        namespaced = kind not in ("ClusterRole", "ClusterRoleBinding")
        live = kubectl_json(platform, *(["-n", release.namespace] if namespaced else []), "get", kind, name)
        assert live["metadata"]["annotations"]["meta.helm.sh/release-name"] == release.name

    # The ReplicaSet controller creates the pod through PodSecurity admission (`restricted` here).
    deployment = wait_for(
        lambda: (d := kubectl_json(platform, "-n", release.namespace, "get", "deployment", release.api))
        .get("status", {}).get("readyReplicas") == 1 and d,
        120, f"deployment {release.api} ready",
    )  # fmt: skip
    pods = kubectl_json(platform, "-n", release.namespace, "get", "pods", "-l", "app.kubernetes.io/component=api")
    (pod,) = pods["items"]
    assert pod["spec"]["serviceAccountName"] == release.api
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    # The namespace does enforce `restricted`: the same pod without the chart's securityContext is refused.
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare-api", "namespace": release.namespace},
            "spec": copy.deepcopy(deployment["spec"]["template"]["spec"])}  # fmt: skip
    bare["spec"].pop("securityContext")
    bare["spec"]["containers"][0].pop("securityContext")
    r = platform.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(bare))
    assert r.returncode != 0 and 'violates PodSecurity "restricted:latest"' in r.stderr, r.stderr

    # The Service routes to that pod on the `http` port.
    def endpoints() -> list[dict[str, Any]] | None:
        slices = kubectl_json(platform, "-n", release.namespace, "get", "endpointslices",
                              "-l", f"kubernetes.io/service-name={release.api}")["items"]  # fmt: skip
        ready = [s for s in slices for e in s.get("endpoints") or [] if e.get("conditions", {}).get("ready")]
        return ready or None

    (eps, *_) = wait_for(endpoints, 60, f"endpoints of service {release.api}")
    assert {(p["name"], p["port"]) for p in eps["ports"]} == {("http", release.port)}
    assert eps["endpoints"][0]["targetRef"]["name"] == pod["metadata"]["name"]


# --- RBAC ---------------------------------------------------------------------------------------------


def effective_rules(platform: Platform, who: str, namespace: str) -> set[tuple[str, str, str]]:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": namespace},
    }
    out = json.loads(ok(platform.kubectl("create", "--validate=false", "-f", "-", "-o", "json", f"--as={who}",
                                         input=json.dumps(review))))  # fmt: skip
    assert not out["status"].get("incomplete"), out["status"]
    return {(g, r, v) for rule in out["status"]["resourceRules"] for g in rule.get("apiGroups", [])
            for r in rule["resources"] for v in rule["verbs"]}  # fmt: skip


def test_api_service_account_may_review_tokens_and_access_and_nothing_else(
    platform: Platform, release: ApiRelease
) -> None:
    who, team, own = release.sa, release.team, release.namespace
    allowed = [("create", "tokenreviews.authentication.k8s.io", None, None),
               ("create", "subjectaccessreviews.authorization.k8s.io", None, None)]  # fmt: skip
    denied = [
        *[("impersonate", r, ns, None) for r in ("users", "groups", "serviceaccounts", "uids.authentication.k8s.io")
          for ns in (None, team)],
        *[(v, "agentruns.agenttree.io", team, None) for v in ("get", "list", "watch", "create", "patch", "delete")],
        *[(v, "agenttrees.agenttree.io", team, None) for v in ("get", "list")],
        *[(v, "agentapprovals.agenttree.io", team, None) for v in ("get", "update", "patch")],
        ("get", "secrets", own, None), ("get", "secrets", team, None), ("list", "pods", team, None),
        ("create", "serviceaccounts", own, "token"),
        ("create", "localsubjectaccessreviews.authorization.k8s.io", team, None),
    ]  # fmt: skip
    wrong = [f"{'cannot' if want else 'can'} {v} {r}{'/' + s if s else ''} in {ns or 'cluster'}"
             for want, cases in ((True, allowed), (False, denied)) for v, r, ns, s in cases
             if can(platform, who, v, r, ns, s) != want]  # fmt: skip
    assert not wrong, f"API account {who}:\n" + "\n".join(wrong)
    # Its effective rules are what any account has (self reviews) plus the chart's two, nothing more.
    baseline = effective_rules(platform, f"system:serviceaccount:{team}:default", team)
    for ns in (team, own):
        assert effective_rules(platform, who, ns) - baseline == API_RULES


# --- the process --------------------------------------------------------------------------------------


def test_api_process_answers_the_charts_probes_and_metrics(platform: Platform, release: ApiRelease) -> None:
    try:
        proc = wait_for(lambda: api_process(platform, release), 60, "the API pod's process")
        assert proc["argv"] == ["agent-tree", "api"]
        for path, port in (("healthz", release.port), ("readyz", release.port), ("metrics", release.metrics_port)):
            url = f"http://127.0.0.1:{port}/{path}"
            _, body = wait_for(lambda url=url: (r := http(url))[0] == 200 and r, 60, f"{url} answering 200")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{api_log(platform, release)}") from None
    assert "# TYPE" in body
    # The chart's allowAnonymous=false reached the process: a request without a token is refused.
    status, _ = http(f"http://127.0.0.1:{release.port}/api/v1/namespaces/{release.team}/runs")
    assert status == 401, api_log(platform, release)


def token(platform: Platform, namespace: str, account: str) -> str:
    return ok(platform.kubectl("-n", namespace, "create", "token", account, "--duration=1h")).strip()


def audit_creates(platform: Platform, namespace: str, name: str) -> list[dict[str, Any]]:
    """The API server's audit events of creating AgentRun namespace/name (platform audit policy)."""
    try:
        lines = platform.audit_log.read_text().splitlines()
    except FileNotFoundError:
        return []
    events = [json.loads(line) for line in lines if f'"{name}"' in line]
    return [e for e in events if e.get("verb") == "create" and e.get("stage") == "ResponseComplete"
            and e["objectRef"].get("resource") == "agentruns" and e["objectRef"].get("namespace") == namespace
            and e["objectRef"].get("name") == name]  # fmt: skip


def test_the_charts_rbac_is_enough_and_writes_carry_the_callers_identity(
    platform: Platform, release: ApiRelease
) -> None:
    """Through the chart's API process: TokenReview and SubjectAccessReview work with the two rules
    its account has, and a run created over HTTP is created by the caller (the account itself may
    not create AgentRuns: the audit log names the caller, with no impersonation)."""
    team, base = release.team, f"http://127.0.0.1:{release.port}/api/v1"
    ok(platform.kubectl("-n", team, "apply", "-f", str(REPO / "examples" / "invoice" / "agenttree.yaml")))
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "runner", "namespace": team},
            "rules": [{"apiGroups": ["agenttree.io"], "resources": ["agentruns"], "verbs": ["get", "list", "create"]},
                      {"apiGroups": ["agenttree.io"], "resources": ["agenttrees"], "verbs": ["get"]}]}  # fmt: skip
    ok(platform.kubectl("apply", "-f", "-", input=json.dumps(role)))
    for account in ("runner", "nobody"):
        ok(platform.kubectl("-n", team, "create", "serviceaccount", account))
    ok(
        platform.kubectl(
            "-n", team, "create", "rolebinding", "runner", "--role=runner", f"--serviceaccount={team}:runner"
        )
    )
    runner = {"Authorization": f"Bearer {token(platform, team, 'runner')}"}
    nobody = {"Authorization": f"Bearer {token(platform, team, 'nobody')}"}
    try:
        wait_for(lambda: http(f"http://127.0.0.1:{release.port}/readyz")[0] == 200, 60, "the API ready")
        status, body = http(f"{base}/whoami", runner)
        assert status == 200, body
        assert json.loads(body)["username"] == f"system:serviceaccount:{team}:runner"
        assert http(f"{base}/namespaces/{team}/runs", runner)[0] == 200
        assert http(f"{base}/namespaces/{team}/runs", nobody)[0] == 403
        assert http(f"{base}/namespaces/{team}/runs")[0] == 401

        name = f"hch-run-{uuid.uuid4().hex[:6]}"
        create = {"name": name, "spec": {"treeRef": {"name": "invoice"}, "input": "Why was invoice #4821 rejected?"}}
        request = urllib.request.Request(f"{base}/namespaces/{team}/runs", data=json.dumps(create).encode(),
                                         headers={**runner, "Content-Type": "application/json"}, method="POST")  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 201
            created = json.loads(resp.read())
        assert created["createdBy"] == f"system:serviceaccount:{team}:runner"
        assert kubectl_json(platform, "-n", team, "get", "agentrun", name)["metadata"]["uid"] == created["uid"]
        (event,) = wait_for(lambda: audit_creates(platform, team, name), 30, f"the audit event of creating {name}")
        assert event["user"]["username"] == f"system:serviceaccount:{team}:runner"
        assert "impersonatedUser" not in event
    except AssertionError as e:
        raise AssertionError(f"{e}\n{api_log(platform, release)}") from None


def test_uninstall_removes_the_api(platform: Platform, helm, release: ApiRelease) -> None:
    """Last: the API's cluster-scoped RBAC goes with the release, and its process stops."""
    ok(helm("uninstall", release.name, "-n", release.namespace, "--wait", "--timeout", "60s"))
    for kind in ("clusterrole", "clusterrolebinding"):
        assert platform.kubectl("get", kind, release.api).returncode != 0, f"{kind} {release.api} left behind"
    wait_for(lambda: api_process(platform, release) is None, 60, "the API process to stop")
