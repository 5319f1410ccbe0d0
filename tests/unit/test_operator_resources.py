"""Worker Deployments built for an AgentTree: names, labels, owner, command, env, replicas, resources."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from agent_tree_operator.config import OperatorConfig
from agent_tree_operator.resources.deployments import merge_env, worker_deployment

from agent_tree import naming
from agent_tree.settings import Settings
from agent_tree.spec import AgentTreeSpec

ROOT = Path(__file__).resolve().parents[2]
CONFIG = OperatorConfig(
    settings=Settings(temporal_address="temporal:7233", database_url="postgresql://db/x", redis_url="redis://r:6379/0")
)


def invoice() -> AgentTreeSpec:
    doc = yaml.safe_load((ROOT / "examples" / "invoice" / "agenttree.yaml").read_text())
    return AgentTreeSpec.model_validate(doc["spec"])


def build(agent: str, spec: AgentTreeSpec | None = None, config: OperatorConfig = CONFIG) -> dict:
    return worker_deployment(
        namespace="team", tree="invoice", tree_uid="uid-1", agent=agent, spec=spec or invoice(), config=config
    )


def env_of(dep: dict) -> dict[str, dict]:
    return {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_one_deployment_per_agent_with_names_labels_and_owner():
    spec = invoice()
    deps = [build(a.name, spec) for a in spec.agents]
    assert [d["metadata"]["name"] for d in deps] == [
        "invoice-supervisor",
        "invoice-triage",
        "invoice-invoice-specialist",
        "invoice-verifier",
    ]
    dep = deps[2]
    assert dep["metadata"]["namespace"] == "team"
    assert dep["metadata"]["labels"] == naming.worker_labels("invoice", "invoice-specialist")
    assert dep["spec"]["template"]["metadata"]["labels"] == naming.worker_labels("invoice", "invoice-specialist")
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    (owner,) = dep["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "agenttree.io/v1alpha1",
        "kind": "AgentTree",
        "name": "invoice",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_command_and_env_select_the_agents_task_queue():
    dep = build("triage")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    queue = naming.task_queue("team", "invoice", "triage")
    assert container["command"] == ["agent-tree", "worker", "--task-queue", queue]
    env = env_of(dep)
    assert env["AGENT_TREE_TASK_QUEUE"]["value"] == queue
    assert env["AGENT_TREE_TEMPORAL_ADDRESS"]["value"] == "temporal:7233"
    assert env["AGENT_TREE_DATABASE_URL"]["value"] == "postgresql://db/x"
    assert env["AGENT_TREE_REDIS_URL"]["value"] == "redis://r:6379/0"
    assert env["PYTHONPATH"]["value"] == "examples/invoice"  # the tree's spec.worker.env
    assert dep["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert container["image"] == CONFIG.worker_image


def test_replicas_and_resources_from_the_spec():
    assert build("supervisor")["spec"]["replicas"] == 1
    assert build("invoice-specialist")["spec"]["replicas"] == 2
    resources = build("triage")["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources == {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}


@pytest.mark.parametrize("worker", [{"externalScaling": True}, {"autoscale": {"minReplicas": 1, "maxReplicas": 3}}])
def test_replicas_left_to_their_owner(worker):
    spec = AgentTreeSpec.model_validate(
        {
            "root": "sup",
            "agents": [{"name": "sup", "children": ["a"]}, {"name": "a", "entrypoint": "m:f", "worker": worker}],
        }
    )
    dep = build("a", spec)
    assert "replicas" not in dep["spec"]  # server-side apply: a field we do not send is not ours to fight over
    assert build("sup", spec)["spec"]["replicas"] == 1


def test_tree_env_overrides_operator_env_in_place_without_duplicates():
    spec = AgentTreeSpec.model_validate(
        {
            "root": "sup",
            "worker": {
                "env": [{"name": "AGENT_TREE_TEMPORAL_ADDRESS", "value": "other:7233"}, {"name": "X", "value": "1"}]
            },
            "agents": [
                {"name": "sup", "children": ["a"]},
                {"name": "a", "entrypoint": "m:f", "worker": {"env": [{"name": "X", "value": "2"}]}},
            ],
        }
    )
    env = build("a", spec)["spec"]["template"]["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    assert names[0] == "AGENT_TREE_TEMPORAL_ADDRESS"
    assert env_of(build("a", spec))["AGENT_TREE_TEMPORAL_ADDRESS"]["value"] == "other:7233"
    assert env_of(build("a", spec))["X"]["value"] == "2"


def test_merge_env_keeps_value_from():
    from agent_tree.spec_workers import EnvVar

    out = merge_env(
        [{"name": "A", "value": "1"}], [EnvVar(name="B", valueFrom={"secretKeyRef": {"name": "s", "key": "k"}})]
    )
    assert out == [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]


def test_model_key_comes_from_the_secret_never_inline():
    spec = AgentTreeSpec.model_validate(
        {
            "root": "sup",
            "agents": [
                {"name": "sup", "children": ["llm"]},
                {"name": "llm", "model": {"name": "gpt-4o-mini", "apiKeySecretRef": {"name": "openai", "key": "key"}}},
            ],
        }
    )
    env = env_of(build("llm", spec))
    assert env["AGENT_TREE_MODEL_API_KEY_LLM"] == {
        "name": "AGENT_TREE_MODEL_API_KEY_LLM",
        "valueFrom": {"secretKeyRef": {"name": "openai", "key": "key"}},
    }
    assert "AGENT_TREE_MODEL_API_KEY_LLM" not in env_of(build("sup", spec))


def test_operator_defaults_for_image_and_resources():
    spec = AgentTreeSpec.model_validate(
        {"root": "sup", "agents": [{"name": "sup", "children": ["a"]}, {"name": "a", "entrypoint": "m:f"}]}
    )
    config = OperatorConfig(
        worker_image="registry/agent-tree:9",
        worker_resources={"requests": {"cpu": "1"}},
        worker_service_account="agent-tree-worker",
        worker_env_secret="shared",
    )
    pod = build("a", spec, config)["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry/agent-tree:9"
    assert pod["containers"][0]["resources"] == {"requests": {"cpu": "1"}}
    assert pod["serviceAccountName"] == "agent-tree-worker"
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "shared", "optional": True}}]


def test_long_names_are_shortened_stably():
    name = "a" * 50
    spec = AgentTreeSpec.model_validate(
        {"root": "sup", "agents": [{"name": "sup", "children": ["b" * 30]}, {"name": "b" * 30, "entrypoint": "m:f"}]}
    )
    dep = worker_deployment(namespace="ns", tree=name, tree_uid="u", agent="b" * 30, spec=spec, config=CONFIG)
    assert len(dep["metadata"]["name"]) <= 63
    assert dep["metadata"]["name"] == naming.deployment_name(name, "b" * 30)


@pytest.mark.parametrize(
    ("port", "env", "container_port"),
    [(9090, "9090", 9090), (9100, "9100", 9100), (0, None, None), ("auto", "auto", None)],
)
def test_workers_get_the_metrics_port_and_a_named_container_port(port, env, container_port):
    config = OperatorConfig.from_env({"AGENT_TREE_WORKER_METRICS_PORT": str(port)})
    container = build("triage", config=config)["spec"]["template"]["spec"]["containers"][0]
    values = {e["name"]: e.get("value") for e in container["env"]}
    assert values.get("AGENT_TREE_METRICS_PORT") == env
    if container_port is None:
        assert "ports" not in container  # off, or a port chosen at start ("auto")
    else:
        assert container["ports"] == [{"name": "metrics", "containerPort": container_port, "protocol": "TCP"}]


# --- Pod Security `restricted` by default, overridable (issue 10 item 1) -----------------------------


def pod_spec(dep: dict) -> dict:
    return dep["spec"]["template"]["spec"]


def test_workers_meet_restricted_pod_security_by_default():
    spec = pod_spec(build("triage"))
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,  # the Dockerfile's USER
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = spec["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }
    # /tmp (HOME in the image) stays writable under the read-only root filesystem.
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert spec["volumes"] == [{"name": "tmp", "emptyDir": {}}]


def test_dockerfile_user_is_the_default_uid():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER 10001:10001" in dockerfile
    assert "HOME=/tmp" in dockerfile


def test_tree_and_agent_override_security_context_field_by_field():
    doc = yaml.safe_load((ROOT / "examples" / "invoice" / "agenttree.yaml").read_text())["spec"]
    doc["worker"]["podSecurityContext"] = {"runAsUser": 2000, "runAsGroup": 2000}
    doc["worker"]["securityContext"] = {"readOnlyRootFilesystem": False}
    doc["agents"][1]["worker"] = {"podSecurityContext": {"runAsGroup": 3000}, "securityContext": {"privileged": False}}
    spec = AgentTreeSpec.model_validate(doc)
    sup, triage = pod_spec(build("supervisor", spec)), pod_spec(build("triage", spec))
    assert sup["securityContext"]["runAsUser"] == 2000 and sup["securityContext"]["runAsGroup"] == 2000
    assert sup["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}  # the rest of the default stays
    assert sup["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is False
    assert sup["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # the agent's fields over the tree's, the tree's over the operator's
    assert triage["securityContext"]["runAsUser"] == 2000 and triage["securityContext"]["runAsGroup"] == 3000
    assert triage["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is False
    assert triage["containers"][0]["securityContext"]["privileged"] is False


def test_operator_defaults_come_from_the_chart_and_may_be_empty():
    config = OperatorConfig.from_env(
        {"AGENT_TREE_WORKER_POD_SECURITY_CONTEXT": '{"runAsNonRoot": true, "runAsUser": 4242}',
         "AGENT_TREE_WORKER_SECURITY_CONTEXT": "{}"}
    )  # fmt: skip
    spec = pod_spec(build("triage", config=config))
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 4242}
    assert "securityContext" not in spec["containers"][0]


def test_bad_security_context_in_a_tree_names_the_field():
    from agent_tree_operator.reconcile.trees import parse_spec

    doc = yaml.safe_load((ROOT / "examples" / "invoice" / "agenttree.yaml").read_text())["spec"]
    doc["agents"][2]["worker"]["securityContext"] = {"capabilities": {"drop": "ALL"}, "runAsUser": -1}
    doc["worker"]["podSecurityContext"] = {"seccompProfile": {"type": "Default"}, "runAsUSer": 1}
    _, errors = parse_spec(doc)
    text = "\n".join(errors)
    assert "spec.agents[2].worker.securityContext.capabilities.drop: " in text
    assert "spec.agents[2].worker.securityContext.runAsUser: " in text
    assert "spec.worker.podSecurityContext.seccompProfile.type: " in text
    assert "spec.worker.podSecurityContext.runAsUSer: unknown field" in text
