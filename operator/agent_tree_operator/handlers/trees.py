"""kopf handlers of AgentTrees and their worker Deployments.

- create / update / resume: the full reconcile (list the tree's Deployments, plan, apply, delete,
  write status once). A Secret that is referenced but missing makes it retry with backoff.
- Deployment events (watched with a server-side label selector): refresh the tree's status only
  (per-agent readiness, ReplicaFailure, progress deadline), from kopf's in-memory indices, without
  reading the API.
- Worker pod events (same selector): a container waiting in CrashLoopBackOff, ImagePullBackOff, ...
  enters an index; a change refreshes the tree's status the same way.
- Tree events: wake the AgentRuns waiting for this tree.
"""

from __future__ import annotations

from typing import Any

import kopf

from agent_tree import naming
from agent_tree.spec import AgentTreeSpec
from agent_tree_operator import metrics
from agent_tree_operator.adapters.kube import KubeError
from agent_tree_operator.handlers.context import Key, OperatorContext
from agent_tree_operator.reconcile.conditions import now_iso
from agent_tree_operator.reconcile.trees import (
    APPLY_FAILED,
    ObservedDeployment,
    ObservedPod,
    TreePlan,
    mark_apply_failed,
    parse_spec,
    plain,
    plan_tree,
    secret_refs,
    status_changed,
)

TREES = ("agenttree.io", "v1alpha1", "agenttrees")
DEPLOYMENTS = ("apps", "v1", "deployments")
PODS = ("", "v1", "pods")
MANAGED = {naming.LABEL_MANAGED_BY: naming.MANAGED_BY}
MAX_RETRY_DELAY = 300.0
KIND = "AgentTree"


# --- indices: kopf keeps them current from the watch streams, handlers read them for free ------------
@kopf.index(*TREES)
def agenttrees_idx(namespace: str, name: str, uid: str, meta: Any, spec: Any, status: Any, **_: Any) -> dict:
    """(namespace, name) -> the tree's uid, generation, spec and status as plain data."""
    return {
        (namespace, name): {
            "uid": uid,
            "generation": meta.get("generation"),
            "spec": plain(spec),
            "status": plain(status),
        }
    }


@kopf.index(*DEPLOYMENTS, labels=MANAGED)
def workers_idx(namespace: str, labels: Any, body: Any, **_: Any) -> dict:
    """(namespace, tree) -> the tree's worker Deployments."""
    tree = labels.get(naming.LABEL_TREE)
    if not tree:
        return {}
    return {(namespace, tree): ObservedDeployment.from_object(plain(body))}


@kopf.index(*PODS, labels=MANAGED)
def worker_pods_idx(namespace: str, labels: Any, body: Any, **_: Any) -> dict:
    """(namespace, tree) -> the tree's worker pods whose containers fail (nothing for healthy pods)."""
    tree = labels.get(naming.LABEL_TREE)
    pod = ObservedPod.from_object(plain(body)) if tree else None
    return {(namespace, tree): pod} if pod is not None else {}


def _ctx(memo: Any) -> OperatorContext:
    return memo.ctx


def retry_delay(retry: int) -> float:
    """5 s, 10 s, 20 s ... up to 5 minutes."""
    return min(MAX_RETRY_DELAY, 5.0 * (2 ** min(retry, 10)))


# --- the full reconcile ----------------------------------------------------------------------------
@kopf.on.resume(*TREES, id="reconcile")
@kopf.on.create(*TREES, id="reconcile")
@kopf.on.update(*TREES, id="reconcile")
async def reconcile_tree(
    namespace: str,
    name: str,
    uid: str,
    meta: Any,
    spec: Any,
    status: Any,
    body: Any,
    memo: Any,
    retry: int,
    logger: Any,
    worker_pods_idx: kopf.Index,
    **_: Any,
) -> None:
    ctx = _ctx(memo)
    key: Key = (namespace, name)
    pods = list(worker_pods_idx.get(key, []))
    async with ctx.locks[key]:
        try:
            with metrics.reconcile_timer(KIND):
                plan = await _reconcile(
                    ctx, key, uid, meta.get("generation"), plain(spec), plain(status), body, logger, pods
                )
        except KubeError as exc:
            metrics.RECONCILES.labels(KIND, "error").inc()
            raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=retry_delay(retry)) from exc
    if plan.retry:
        metrics.RECONCILES.labels(KIND, "retry").inc()
        raise kopf.TemporaryError(plan.retry, delay=retry_delay(retry))
    metrics.RECONCILES.labels(KIND, "ok" if plan.valid else "invalid").inc()


async def _reconcile(
    ctx: OperatorContext,
    key: Key,
    uid: str,
    generation: int | None,
    spec: dict,
    status: dict,
    body: Any,
    logger: Any,
    pods: list[ObservedPod],
) -> TreePlan:
    namespace, name = key
    memory = ctx.trees[key]
    if memory.uid != uid:
        memory.uid, memory.status, memory.secrets = uid, None, None
    observed = [ObservedDeployment.from_object(d) for d in await ctx.kube.list_worker_deployments(namespace, name)]
    parsed, _errors = parse_spec(spec)
    existing = None
    if parsed is not None:
        wanted = set(secret_refs(parsed).values())
        existing = await ctx.kube.existing_secrets(namespace, wanted) if wanted else set()
        memory.secrets = existing
    old = memory.status if memory.status is not None else status
    plan = plan_tree(
        namespace=namespace,
        name=name,
        uid=uid,
        generation=generation,
        raw_spec=spec,
        observed=observed,
        old_status=old,
        config=ctx.config,
        now=now_iso(),
        existing_secrets=existing,
        pods=pods,
    )
    if not plan.valid:
        degraded = next(c for c in plan.status["conditions"] if c["type"] == "Degraded")
        kopf.warn(body, reason="InvalidSpec", message=degraded["message"])
    apply_failures: list[str] = []
    transient: KubeError | None = None
    for deployment in plan.apply:
        try:
            await ctx.kube.apply_deployment(deployment)
        except KubeError as exc:
            if not exc.rejected:
                transient = transient or exc  # keep applying the others; retry after the status write
                continue
            agent = deployment["metadata"]["labels"][naming.LABEL_AGENT]
            index = _agent_index(parsed, agent)
            apply_failures.append(
                f"spec.agents[{index}] ({agent}): Deployment {deployment['metadata']['name']} "
                f"rejected by the API server: {exc.message}"
            )
    for dep in plan.delete:
        if await ctx.kube.delete_deployment(namespace, dep):
            logger.info("deleted worker Deployment %s (its agent left the tree)", dep)
            kopf.info(body, reason="AgentRemoved", message=f"deleted worker Deployment {dep}")
    if apply_failures:
        # A Deployment the API server refuses (e.g. a malformed resource quantity) needs an edit of the
        # tree: say which field, keep the other agents running, and do not retry in a loop.
        message = "; ".join(apply_failures)[:1024]
        mark_apply_failed(plan.status, message)
        kopf.warn(body, reason=APPLY_FAILED, message=message)
    await _write_status(ctx, key, uid, old, plan.status)
    if transient is not None:
        raise transient
    return plan


def _agent_index(spec: AgentTreeSpec | None, agent: str) -> int | str:
    if spec is not None:
        for i, a in enumerate(spec.agents):
            if a.name == agent:
                return i
    return "?"


async def _write_status(ctx: OperatorContext, key: Key, uid: str, old: dict | None, new: dict) -> None:
    if not status_changed(old, new):
        return
    written = await ctx.kube.patch_status("agenttrees", key[0], key[1], new)
    if written is not None:
        ctx.trees[key].status = new


# --- status refresh on Deployment changes -----------------------------------------------------------
@kopf.on.event(*DEPLOYMENTS, labels=MANAGED)
async def worker_changed(
    namespace: str,
    name: str,
    type: str | None,
    labels: Any,
    meta: Any,
    spec: Any,
    memo: Any,
    agenttrees_idx: kopf.Index,
    workers_idx: kopf.Index,
    worker_pods_idx: kopf.Index,
    **_: Any,
) -> None:
    ctx = _ctx(memo)
    if type == "DELETED":
        ctx.autoscaler.forget_deployment(namespace, name)
    else:
        ctx.autoscaler.observe_deployment(namespace, name, spec.get("replicas"), meta.get("generation") or 0)
    tree = labels.get(naming.LABEL_TREE)
    if tree:
        await refresh_tree_status(ctx, (namespace, tree), agenttrees_idx, workers_idx, worker_pods_idx)


@kopf.on.event(*PODS, labels=MANAGED)
async def worker_pod_changed(
    namespace: str,
    labels: Any,
    memo: Any,
    agenttrees_idx: kopf.Index,
    workers_idx: kopf.Index,
    worker_pods_idx: kopf.Index,
    **_: Any,
) -> None:
    tree = labels.get(naming.LABEL_TREE)
    if tree:
        # Cheap when nothing changed: the plan is recomputed in memory and written only if it differs.
        await refresh_tree_status(_ctx(memo), (namespace, tree), agenttrees_idx, workers_idx, worker_pods_idx)


async def refresh_tree_status(
    ctx: OperatorContext, key: Key, trees: kopf.Index, workers: kopf.Index, pods: kopf.Index
) -> None:
    """Recompute a tree's status from the indices (readiness changed); write it only when it changed."""
    entries = list(trees.get(key, []))
    if not entries:
        return
    tree = entries[0]
    memory = ctx.trees[key]
    if memory.uid != tree["uid"]:
        return  # not reconciled by this process yet: its resume/create handler writes the status
    async with ctx.locks[key]:
        old = memory.status if memory.status is not None else tree["status"]
        plan = plan_tree(
            namespace=key[0],
            name=key[1],
            uid=tree["uid"],
            generation=tree["generation"],
            raw_spec=tree["spec"],
            observed=list(workers.get(key, [])),
            old_status=old,
            config=ctx.config,
            now=now_iso(),
            existing_secrets=memory.secrets,
            pods=list(pods.get(key, [])),
        )
        if not plan.valid or _degraded_reason(old) == APPLY_FAILED:
            return  # only a reconcile (an edit) changes these
        try:
            await _write_status(ctx, key, tree["uid"], old, plan.status)
        except KubeError as exc:
            kopf.warn(
                {
                    "apiVersion": naming.API_VERSION,
                    "kind": "AgentTree",
                    "metadata": {"namespace": key[0], "name": key[1], "uid": tree["uid"]},
                },
                reason="StatusFailed",
                message=str(exc)[:500],
            )


def _degraded_reason(status: dict | None) -> str | None:
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == "Degraded" and cond.get("status") == "True":
            return cond.get("reason")
    return None


# --- wake runs waiting for a tree ---------------------------------------------------------------------
@kopf.on.event(*TREES)
async def tree_event(namespace: str, name: str, type: str | None, memo: Any, **_: Any) -> None:
    ctx = _ctx(memo)
    key: Key = (namespace, name)
    if type == "DELETED":
        ctx.trees.pop(key, None)
    ctx.signals.notify(key)
