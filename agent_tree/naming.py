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
# On an AgentApproval (made by the operator, one per tool call waiting for a person): the AgentRun it
# belongs to (a label value; see :func:`run_label`) and the approval's id in that run.
LABEL_RUN = "agenttree.io/run"
LABEL_APPROVAL_ID = "agenttree.io/approval-id"
APPROVER_CLUSTER_ROLE = "agent-tree-approver"  # the chart's ClusterRole of people who decide approvals

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


def _dns_label(text: str, limit: int) -> str:
    """``text`` as lowercase ``[a-z0-9-]``, shortened with a stable hash when over ``limit``."""
    clean = "".join(c if c.isalnum() and c.isascii() else "-" for c in text.lower()).strip("-") or "x"
    if len(clean) <= limit and clean == text:
        return clean
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{clean[: limit - 9].rstrip('-')}-{digest}" if len(clean) > limit - 9 else f"{clean}-{digest}"


def run_label(run: str) -> str:
    """The ``agenttree.io/run`` label value of an AgentRun's children: its name, hashed when over 63."""
    return run if len(run) <= _K8S_NAME_MAX else _dns_label(run, _K8S_NAME_MAX)


def approval_id_label(approval_id: str) -> str:
    """The ``agenttree.io/approval-id`` label value (a valid label value for any id)."""
    return _dns_label(approval_id, _K8S_NAME_MAX)


def approval_name(run: str, approval_id: str) -> str:
    """Name of the AgentApproval of one approval of one run (stable: re-creating it is idempotent)."""
    name = f"{run}-{approval_id}"
    return _dns_label(name, 253)
