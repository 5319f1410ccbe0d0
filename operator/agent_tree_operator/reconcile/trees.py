"""AgentTree reconciliation, pure: (spec, observed Deployments, old status) -> plan.

The plan lists the Deployments to server-side-apply, the ones to delete (agents removed from the
tree) and the whole status to write. It never does I/O, so every branch is unit-tested without a
cluster. Validation errors name the field (``spec.agents[2].children[0]: ...``); a problem that can
heal without an edit (a referenced Secret that does not exist yet) is marked retryable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from agent_tree import naming
from agent_tree.contract import spec_revision
from agent_tree.spec import AgentTreeSpec, format_errors
from agent_tree_operator.config import OperatorConfig
from agent_tree_operator.reconcile.conditions import condition, merge_conditions, same_conditions
from agent_tree_operator.resources.deployments import desired_replicas, worker_deployment

MESSAGE_MAX = 1024

# Degraded reasons that need a person (an edit, a quota, a pod security exemption): they also set
# Stalled=True, which kstatus (Helm 4 --wait, Flux, kpt) reads as Failed. Kept stable: Argo CD's
# health Lua and users match on them.
INVALID_SPEC = "InvalidSpec"
APPLY_FAILED = "ApplyFailed"
WORKERS_REFUSED = "WorkersRefused"  # a Deployment's ReplicaFailure: pods forbidden, quota exceeded
WORKERS_STUCK = "WorkersStuck"  # a Deployment's Progressing=False ProgressDeadlineExceeded
WORKERS_FAILING = "WorkersFailing"  # a worker pod waiting in CrashLoopBackOff, ImagePullBackOff, ...
STALLING = (INVALID_SPEC, APPLY_FAILED, WORKERS_REFUSED, WORKERS_STUCK, WORKERS_FAILING)
# Container waiting reasons the kubelet reports for a pod that will not run without a fix (not the
# transient ContainerCreating / PodInitializing).
FAILING_WAITING = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


def plain(value: Any) -> Any:
    # kopf hands out read-only mapping views; json needs dicts and lists.
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def parse_spec(raw: Mapping[str, Any]) -> tuple[AgentTreeSpec | None, list[str]]:
    """The validated spec, or None and one ``spec.<path>: message`` line per problem."""
    try:
        return AgentTreeSpec.model_validate(plain(raw)), []
    except ValidationError as exc:
        return None, [f"spec.{line}" if not line.startswith("spec") else line for line in format_errors(exc)]


def secret_refs(spec: AgentTreeSpec) -> dict[str, str]:
    """Field path -> Secret name of every Secret the tree references."""
    refs = {}
    for i, agent in enumerate(spec.agents):
        if agent.model is not None and agent.model.apiKeySecretRef is not None:
            refs[f"spec.agents[{i}].model.apiKeySecretRef"] = agent.model.apiKeySecretRef.name
    return refs


@dataclass(frozen=True)
class DeploymentCondition:
    """One entry of a Deployment's ``status.conditions``."""

    type: str
    status: str
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class ObservedDeployment:
    """What the operator needs to know about one existing worker Deployment."""

    name: str
    agent: str
    owner_uid: str | None = None
    replicas: int | None = None
    ready: int = 0
    updated: int = 0
    generation: int = 0
    observed_generation: int = 0
    conditions: tuple[DeploymentCondition, ...] = ()

    def condition(self, type_: str) -> DeploymentCondition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def problem(self) -> tuple[str, str] | None:
        """(Degraded reason, cause quoted from the Deployment) when its controller reports a failure."""
        failure = self.condition("ReplicaFailure")
        if failure is not None and failure.status == "True":
            # The ReplicaSet controller's message is the API server's refusal, verbatim.
            return WORKERS_REFUSED, f"worker pods refused ({failure.reason or 'ReplicaFailure'}): {failure.message}"
        progressing = self.condition("Progressing")
        if (
            progressing is not None
            and progressing.status == "False"
            and progressing.reason == "ProgressDeadlineExceeded"
        ):
            return WORKERS_STUCK, f"rollout stuck (ProgressDeadlineExceeded): {progressing.message}"
        return None

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ObservedDeployment:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        owners = [o for o in meta.get("ownerReferences") or [] if o.get("kind") == "AgentTree" and o.get("controller")]
        return cls(
            name=meta.get("name", ""),
            agent=(meta.get("labels") or {}).get(naming.LABEL_AGENT, ""),
            owner_uid=owners[0].get("uid") if owners else None,
            replicas=spec.get("replicas"),
            ready=status.get("readyReplicas") or 0,
            updated=status.get("updatedReplicas") or 0,
            generation=meta.get("generation") or 0,
            observed_generation=status.get("observedGeneration") or 0,
            conditions=tuple(
                DeploymentCondition(
                    type=str(c.get("type", "")),
                    status=str(c.get("status", "")),
                    reason=str(c.get("reason") or ""),
                    message=str(c.get("message") or ""),
                )
                for c in status.get("conditions") or []
                if isinstance(c, Mapping)
            ),
        )


@dataclass(frozen=True)
class ObservedPod:
    """A worker pod whose container is waiting for a reason that needs a fix (see FAILING_WAITING)."""

    name: str
    agent: str
    reason: str
    message: str = ""

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ObservedPod | None:
        """The pod's first failing container, or None when none is failing."""
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason") or ""
            if reason not in FAILING_WAITING:
                continue
            message = waiting.get("message") or ""
            last = (cs.get("lastState") or {}).get("terminated") or {}
            if reason == "CrashLoopBackOff" and last:
                # The back-off message says nothing about why: the last exit does.
                exit_code = last.get("exitCode")
                why = last.get("reason") or "Error"
                message = (
                    f"last exit {exit_code} ({why}){': ' + last['message'] if last.get('message') else ''}; {message}"
                )
            return cls(
                name=meta.get("name", ""),
                agent=(meta.get("labels") or {}).get(naming.LABEL_AGENT, ""),
                reason=reason,
                message=message.strip("; "),
            )
        return None


@dataclass
class TreePlan:
    """What one reconcile of an AgentTree should do."""

    apply: list[dict[str, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    retry: str | None = None  # a problem that may heal on its own: reconcile again later
    valid: bool = True


def _cut(text: str) -> str:
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 1] + "…"


def plan_tree(
    *,
    namespace: str,
    name: str,
    uid: str,
    generation: int | None,
    raw_spec: Mapping[str, Any],
    observed: Iterable[ObservedDeployment],
    old_status: Mapping[str, Any] | None,
    config: OperatorConfig,
    now: str,
    existing_secrets: set[str] | None = None,
    pods: Iterable[ObservedPod] = (),
) -> TreePlan:
    """Plan one reconcile of an AgentTree.

    Args:
        namespace, name, uid, generation: the tree's identity.
        raw_spec: its spec as stored by the API server.
        observed: the worker Deployments labelled with this tree (any owner).
        old_status: its current status (for timestamps and the last good revision).
        config: the operator's configuration.
        now: timestamp for new conditions.
        existing_secrets: names of Secrets in the namespace that the spec references and exist;
            None skips the check.
        pods: the tree's worker pods whose containers are failing (CrashLoopBackOff, ...).
    """
    old_status = plain(old_status or {})
    observed = [d for d in observed if d.owner_uid in (None, uid)]
    spec, errors = parse_spec(raw_spec)
    if spec is None:
        message = _cut("; ".join(errors))
        conditions = [
            condition("Ready", False, INVALID_SPEC, message),
            condition("Progressing", False, INVALID_SPEC, "fix the spec; the last valid revision keeps running"),
            condition("Degraded", True, INVALID_SPEC, message),
            *kstatus_conditions(ready=False, reconciling=None, stalled=(INVALID_SPEC, message)),
        ]
        status = {
            **{k: old_status[k] for k in ("revision", "ready", "agents") if k in old_status},
            "observedGeneration": generation,
            "conditions": merge_conditions(old_status.get("conditions"), conditions, now, generation),
        }
        return TreePlan(status=status, valid=False)

    revision = spec_revision(spec)
    desired = {
        a.name: worker_deployment(namespace=namespace, tree=name, tree_uid=uid, agent=a.name, spec=spec, config=config)
        for a in spec.agents
    }
    wanted = {naming.deployment_name(name, agent) for agent in desired}
    delete = sorted(d.name for d in observed if d.owner_uid == uid and d.name not in wanted)
    by_name = {d.name: d for d in observed}
    failing_pods: dict[str, ObservedPod] = {}
    for pod in sorted(pods, key=lambda p: p.name):
        failing_pods.setdefault(pod.agent, pod)

    agents, not_ready, rolling = [], [], []
    problems: dict[str, list[str]] = {}  # Degraded reason -> "spec.agents[i] (name): cause"
    for i, agent in enumerate(spec.agents):
        dep_name = naming.deployment_name(name, agent.name)
        seen = by_name.get(dep_name)
        target = desired_replicas(spec.worker_for(agent.name))
        if target is None:
            target = seen.replicas if seen is not None and seen.replicas is not None else 1
        problem = seen.problem() if seen is not None else None
        if problem is None and seen is not None and agent.name in failing_pods:
            pod = failing_pods[agent.name]
            problem = (
                WORKERS_FAILING,
                f"worker pod {pod.name} {pod.reason}" + (f": {pod.message}" if pod.message else ""),
            )
        ready = seen.ready if seen is not None else 0
        agents.append(
            {
                "name": agent.name,
                "taskQueue": naming.task_queue(namespace, name, agent.name),
                "deployment": dep_name,
                "replicas": target,
                "readyReplicas": ready,
            }
        )
        where = f"spec.agents[{i}] ({agent.name})"
        if problem is not None:
            problems.setdefault(problem[0], []).append(f"{where}: {problem[1]}")
        if seen is None:
            rolling.append(f"{where}: Deployment {dep_name} not created yet")
            not_ready.append(f"{where}: 0/{target} workers ready")
            continue
        if seen.observed_generation < seen.generation or seen.updated < target:
            rolling.append(f"{where}: Deployment {dep_name} {seen.updated}/{target} updated")
        # An agent whose workers are refused or stuck is not ready, even while pods of an older
        # revision still serve: the tree's spec is not what runs (status.ready counts it out too).
        if ready < target or problem is not None:
            not_ready.append(f"{where}: {ready}/{target} workers ready")

    total = len(spec.agents)
    troubled = {line.split(":", 1)[0] for lines in problems.values() for line in lines}
    ready_count = total - sum(
        1
        for i, a in enumerate(agents)
        if a["readyReplicas"] < a["replicas"]
        or a["deployment"] not in by_name
        or f"spec.agents[{i}] ({a['name']})" in troubled
    )
    conditions = [
        condition("Ready", True, "AllAgentsReady", f"{ready_count}/{total} agents ready")
        if not not_ready
        else condition("Ready", False, "AgentsNotReady", _cut("; ".join(not_ready))),
        condition("Progressing", True, "RollingOut", _cut("; ".join(rolling)))
        if rolling
        else condition("Progressing", False, "Reconciled", f"revision {revision} applied"),
    ]
    retry = None
    if existing_secrets is not None:
        missing = [
            f"{path}: Secret {secret!r} not found in namespace {namespace!r}; create it"
            for path, secret in secret_refs(spec).items()
            if secret not in existing_secrets
        ]
        if missing:
            retry = _cut("; ".join(missing))
    stalled = None
    if problems:
        # The first reason in STALLING order names the condition; the message lists every agent.
        reason = next(r for r in STALLING if r in problems)
        stalled = (reason, _cut("; ".join(line for r in STALLING for line in problems.get(r, []))))
        conditions.append(condition("Degraded", True, *stalled))
    elif retry:
        conditions.append(condition("Degraded", True, "SecretNotFound", retry + " (retrying)"))
    else:
        conditions.append(condition("Degraded", False, "AsExpected", ""))
    is_ready = not not_ready
    reconciling = None
    if stalled is None and rolling:
        reconciling = ("RollingOut", _cut("; ".join(rolling)))
    elif stalled is None and not is_ready:
        reconciling = ("AgentsNotReady", _cut("; ".join(not_ready)))
    elif stalled is None and retry:
        reconciling = ("SecretNotFound", retry)
    conditions.extend(kstatus_conditions(ready=is_ready, reconciling=reconciling, stalled=stalled))
    status = {
        "observedGeneration": generation,
        "revision": revision,
        "ready": f"{ready_count}/{total}",
        "agents": agents,
        "conditions": merge_conditions(old_status.get("conditions"), conditions, now, generation),
    }
    return TreePlan(apply=list(desired.values()), delete=delete, status=status, retry=retry)


def kstatus_conditions(
    *, ready: bool, reconciling: tuple[str, str] | None, stalled: tuple[str, str] | None
) -> list[dict[str, Any]]:
    """``Reconciling`` and ``Stalled``, the conditions kstatus (sigs.k8s.io/cli-utils) reads first.

    kstatus: Reconciling=True -> InProgress, Stalled=True -> Failed, neither (with observedGeneration
    equal to metadata.generation) -> Current. At most one of them is True: kstatus takes the first
    True one in list order.
    """
    if stalled is not None:
        return [
            condition("Reconciling", False, "Stalled", "needs a fix: see Stalled"),
            condition("Stalled", True, *stalled),
        ]
    if reconciling is not None:
        return [condition("Reconciling", True, *reconciling), condition("Stalled", False, "AsExpected", "")]
    return [
        condition("Reconciling", False, "Reconciled" if ready else "AsExpected", ""),
        condition("Stalled", False, "AsExpected", ""),
    ]


def mark_apply_failed(status: dict[str, Any], message: str) -> None:
    """Record Deployments the API server refused to store (they need an edit of the tree) in ``status``."""
    for cond in status.get("conditions") or []:
        if cond["type"] in ("Degraded", "Stalled"):
            cond.update(status="True", reason=APPLY_FAILED, message=message)
        elif cond["type"] == "Ready":
            cond.update(status="False", reason=APPLY_FAILED, message=message)
        elif cond["type"] == "Reconciling":
            cond.update(status="False", reason="Stalled", message="needs a fix: see Stalled")


def status_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether writing ``new`` over ``old`` changes anything but condition timestamps."""
    old = plain(old or {})
    for key, value in new.items():
        if key == "conditions":
            if not same_conditions(old.get("conditions"), value):
                return True
        elif old.get(key) != value:
            return True
    return False
