"""AgentTrees: list and get, read through the Kubernetes API as the caller."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from agent_tree_api.auth import Caller
from agent_tree_api.deps import Services, caller, services
from agent_tree_api.errors import ApiError
from agent_tree_api.kube import KubeError, resource_path
from agent_tree_api.models import TreeList, TreeView
from agent_tree_api.routes.common import PREFIX
from agent_tree_api.routes.runs import ERRORS, Name, Namespace

router = APIRouter(prefix=PREFIX, tags=["trees"])


def tree_view(obj: dict[str, Any]) -> TreeView:
    meta = obj["metadata"]
    return TreeView(
        namespace=meta["namespace"],
        name=meta["name"],
        spec=obj.get("spec") or {},
        status=obj.get("status") or {},
        createdAt=meta.get("creationTimestamp"),
    )


@router.get("/trees", response_model=TreeList, responses=ERRORS)
async def list_trees(
    namespace: Namespace, who: Caller = Depends(caller), svc: Services = Depends(services)
) -> TreeList:
    """The namespace's AgentTrees with their status (workers ready per agent, conditions)."""
    try:
        listed = await svc.kube.as_caller(who.token, "GET", resource_path(namespace, "agenttrees"))
    except KubeError as exc:
        raise ApiError.from_kube(exc) from None
    return TreeList(items=[tree_view(obj) for obj in listed.get("items") or []])


@router.get("/trees/{name}", response_model=TreeView, responses=ERRORS)
async def get_tree(
    namespace: Namespace, name: Name, who: Caller = Depends(caller), svc: Services = Depends(services)
) -> TreeView:
    try:
        return tree_view(await svc.kube.as_caller(who.token, "GET", resource_path(namespace, "agenttrees", name)))
    except KubeError as exc:
        raise ApiError.from_kube(exc) from None
