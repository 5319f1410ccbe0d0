"""The worker Deployment of one agent: the object the operator server-side-applies per agent.

Only fields the operator means to own are set: under server-side apply, a field left out is a field
someone else (an HPA, KEDA, a human with ``kubectl scale``) may own without a conflict.
"""

from __future__ import annotations

from typing import Any

from agent_tree import naming
from agent_tree.providers.openai_client import env_key_name
from agent_tree.spec import AgentTreeSpec, WorkerSpec
from agent_tree.spec_workers import EnvVar
from agent_tree_operator.config import OperatorConfig

CONTAINER = "worker"
TMP_VOLUME = "tmp"
METRICS_PORT_NAME = "metrics"
TREE_KIND = "AgentTree"


def owner_reference(tree: str, uid: str) -> dict[str, Any]:
    """The controller owner reference that ties a child object to its AgentTree (garbage collection)."""
    return {
        "apiVersion": naming.API_VERSION,
        "kind": TREE_KIND,
        "name": tree,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def selector_labels(tree: str, agent: str) -> dict[str, str]:
    """The Deployment's selector: immutable once created, so only the identity labels."""
    labels = naming.worker_labels(tree, agent)
    return {k: labels[k] for k in ("app.kubernetes.io/name", naming.LABEL_TREE, naming.LABEL_AGENT)}


def merge_env(base: list[dict[str, Any]], extra: list[EnvVar]) -> list[dict[str, Any]]:
    """``base`` then ``extra``; an ``extra`` variable replaces a ``base`` one of the same name in place.

    Server-side apply keys ``env`` by name, so duplicates would be rejected: the last definition wins,
    as it would in a shell.
    """
    out: dict[str, dict[str, Any]] = {item["name"]: dict(item) for item in base}
    for var in extra:
        item: dict[str, Any] = {"name": var.name}
        if var.valueFrom is not None:
            item["valueFrom"] = var.valueFrom
        else:
            item["value"] = var.value or ""
        out[var.name] = item
    return list(out.values())


def security_contexts(worker: WorkerSpec, config: OperatorConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pod's and the container's ``securityContext``: the tree's fields over the operator's defaults.

    Field by field (top-level keys): a tree that sets ``runAsUser`` keeps the default
    ``seccompProfile``, so overriding one setting does not silently drop the rest of ``restricted``.
    """
    pod = dict(config.worker_pod_security_context)
    container = dict(config.worker_security_context)
    if worker.podSecurityContext is not None:
        pod.update(worker.podSecurityContext.model_dump(exclude_none=True))
    if worker.securityContext is not None:
        container.update(worker.securityContext.model_dump(exclude_none=True))
    return pod, container


def desired_replicas(worker: WorkerSpec) -> int | None:
    """Replicas the operator writes, or None when someone else owns the field.

    ``externalScaling`` (HPA/KEDA) and ``autoscale`` (the operator's backlog scaler, which writes
    replicas itself) leave the field out of the applied object; a new Deployment then starts at 1.
    """
    if worker.externalScaling or worker.autoscale is not None:
        return None
    return 1 if worker.replicas is None else worker.replicas


def worker_deployment(
    *,
    namespace: str,
    tree: str,
    tree_uid: str,
    agent: str,
    spec: AgentTreeSpec,
    config: OperatorConfig,
) -> dict[str, Any]:
    """The Deployment that runs ``agent-tree worker`` for one agent's task queue.

    Args:
        namespace: the tree's namespace (the Deployment lives beside it).
        tree: the AgentTree's name.
        tree_uid: its uid, for the owner reference.
        agent: the agent's name (must be in ``spec.agents``).
        spec: the parsed, valid tree spec.
        config: the operator's configuration (image default, connection env).
    """
    worker = spec.worker_for(agent)
    queue = naming.task_queue(namespace, tree, agent)
    labels = naming.worker_labels(tree, agent)
    base = [
        *config.worker_env(),
        {"name": "AGENT_TREE_TASK_QUEUE", "value": queue},
        {"name": "AGENT_TREE_TREE", "value": f"{namespace}/{tree}"},
        {"name": "AGENT_TREE_AGENT", "value": agent},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    model = spec.agent(agent).model
    if model is not None and model.apiKeySecretRef is not None:
        # The key reaches the agent's worker as the per-agent variable the model provider reads first;
        # the worker itself never calls the Kubernetes API.
        ref = model.apiKeySecretRef
        base.append({"name": env_key_name(agent), "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    env = merge_env(base, worker.env)
    pod_security, container_security = security_contexts(worker, config)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": worker.image or config.worker_image,
        "imagePullPolicy": config.worker_image_pull_policy,
        "command": ["agent-tree", "worker", "--task-queue", queue],
        "env": env,
        # The root filesystem may be read-only (the default): /tmp, an emptyDir, is the one writable
        # path (the image sets HOME=/tmp; the worker writes nothing else).
        "volumeMounts": [{"name": TMP_VOLUME, "mountPath": "/tmp"}],
    }
    if container_security:
        container["securityContext"] = container_security
    if config.worker_metrics_port > 0:
        # Prometheus scrapes workers through this named port (the chart's PodMonitor selects it).
        container["ports"] = [
            {"name": METRICS_PORT_NAME, "containerPort": config.worker_metrics_port, "protocol": "TCP"}
        ]
    if config.worker_env_secret:
        container["envFrom"] = [{"secretRef": {"name": config.worker_env_secret, "optional": True}}]
    resources = config.worker_resources
    if worker.resources is not None:
        resources = {k: v for k, v in worker.resources.model_dump().items() if v} or resources
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "containers": [container],
        # Workers need nothing from the Kubernetes API: the tree travels in the workflow input.
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 60,
        "volumes": [{"name": TMP_VOLUME, "emptyDir": {}}],
    }
    if pod_security:
        pod_spec["securityContext"] = pod_security
    if config.worker_service_account:
        pod_spec["serviceAccountName"] = config.worker_service_account
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(tree, agent)},
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    replicas = desired_replicas(worker)
    if replicas is not None:
        deployment_spec = {"replicas": replicas, **deployment_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": naming.deployment_name(tree, agent),
            "namespace": namespace,
            "labels": labels,
            "annotations": {naming.ANNOTATION_TASK_QUEUE: queue},
            "ownerReferences": [owner_reference(tree, tree_uid)],
        },
        "spec": deployment_spec,
    }
