"""Helpers the route modules share: fetching an AgentRun as the caller, and its history."""

from __future__ import annotations

from typing import Any

from agent_tree import naming
from agent_tree_api.auth import Caller
from agent_tree_api.deps import Services
from agent_tree_api.errors import ApiError
from agent_tree_api.history import HistoryUnavailable
from agent_tree_api.kube import KubeError, resource_path

PREFIX = "/api/v1/namespaces/{namespace}"
NAMESPACE_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAME_RE = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


async def get_agentrun(svc: Services, who: Caller, namespace: str, name: str) -> dict[str, Any] | None:
    """The AgentRun as the caller may see it; None when it does not exist (any other refusal raises)."""
    try:
        return await svc.kube.as_caller(who.token, "GET", resource_path(namespace, "agentruns", name))
    except KubeError as exc:
        if exc.status == 404:
            return None
        raise ApiError.from_kube(exc) from None


async def history_call(coro: Any) -> Any:
    """Await a history read; an unreachable database is a 503 naming it."""
    try:
        return await coro
    except HistoryUnavailable as exc:
        raise ApiError(503, "ServiceUnavailable", f"history: {exc}") from None


async def resolve_run(
    svc: Services, who: Caller, namespace: str, name: str
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str]:
    """(AgentRun or None, its latest history row or None, its workflow id); 404 when neither exists.

    The caller must be allowed to ``get agentruns`` in the namespace (the Kubernetes read checks it
    for a live AgentRun; a SubjectAccessReview does for one only the history still has).
    """
    agentrun = await get_agentrun(svc, who, namespace, name)
    if agentrun is None:
        await svc.auth.require(who, "get", namespace)
    row = await history_call(svc.history.latest_run(namespace, name))
    if agentrun is not None:
        uid = agentrun["metadata"]["uid"]
        if row is not None and row.get("uid") != uid:
            row = None  # an earlier AgentRun of the same name
        return agentrun, row, naming.workflow_id(namespace, name, uid)
    if row is None:
        raise ApiError(404, "NotFound", f"AgentRun {namespace}/{name}: not in the cluster and not in the history")
    return None, row, row["workflow_id"]
