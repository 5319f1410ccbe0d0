"""The one place where names shared by the operator, the workers and the chart are derived.

Every part must call these helpers instead of formatting names itself (see docs/contracts.md).
"""

from __future__ import annotations

import hashlib

GROUP = "agenttree.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

LABEL_TREE = "agenttree.io/tree"
LABEL_AGENT = "agenttree.io/agent"
# Set by the operator on a finished AgentRun (no TTL) in the same write that releases its finalizer;
# the operator's AgentRun watch selects ``LABEL_FINISHED!=true``, so finished runs cost it no memory.
LABEL_FINISHED = "agenttree.io/finished"
UNFINISHED_SELECTOR = f"{LABEL_FINISHED}!=true"
CANCEL_ANNOTATION = "agenttree.io/cancel"  # "true" on an AgentRun cancels its workflow
ANNOTATION_TASK_QUEUE = "agenttree.io/task-queue"  # on a worker Deployment: the queue its workers serve
FINALIZER = "agenttree.io/operator"  # the operator's finalizer on unfinished AgentRuns
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "agent-tree-operator"
MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
PART_OF = "agent-tree"

_K8S_NAME_MAX = 63


def task_queue(namespace: str, tree: str, agent: str) -> str:
    """Temporal task queue served by the workers of one agent of one tree."""
    return f"agent-tree.{namespace}.{tree}.{agent}"


def workflow_id(namespace: str, name: str, uid: str) -> str:
    """Temporal workflow id of an AgentRun; including the uid makes a re-created run a new workflow."""
    return f"agentrun.{namespace}.{name}.{uid}"


def stream_key(run_id: str) -> str:
    """Redis stream holding the live progress of one run (keyed by its workflow id)."""
    return f"agent-tree:run:{run_id}"


def deployment_name(tree: str, agent: str) -> str:
    """Name of an agent's worker Deployment; shortened with a stable hash when over 63 characters."""
    name = f"{tree}-{agent}"
    if len(name) <= _K8S_NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: _K8S_NAME_MAX - 9].rstrip('-')}-{digest}"


def worker_labels(tree: str, agent: str) -> dict[str, str]:
    """Standard labels of an agent's worker Deployment and its pods."""
    return {
        "app.kubernetes.io/name": "agent-tree-worker",
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/component": "worker",
        LABEL_MANAGED_BY: MANAGED_BY,
        "app.kubernetes.io/instance": tree,
        LABEL_TREE: tree,
        LABEL_AGENT: agent,
    }
