"""A run's approvals: list them, approve or reject one, as the caller (their AgentApproval write).

The decision is an update of the AgentApproval with the caller's own token, exactly what
``agent-tree approve`` writes: the chart's admission policy checks that ``decidedBy`` is the caller
and that they are among the tool's approvers; the operator delivers it to the run.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends

from agent_tree import naming
from agent_tree.run_requests import PAST, Refused, already_decided, choose
from agent_tree_api.auth import Caller
from agent_tree_api.deps import Services, caller, services
from agent_tree_api.errors import ApiError
from agent_tree_api.kube import MERGE_PATCH, KubeError, resource_path
from agent_tree_api.models import ApprovalList, DecisionRequest, DecisionResult
from agent_tree_api.routes.common import PREFIX, get_agentrun
from agent_tree_api.routes.runs import ERRORS, Name, Namespace
from agent_tree_api.views import approval_view

router = APIRouter(prefix=PREFIX, tags=["approvals"])
PLURAL = "agentapprovals"


async def _approvals(svc: Services, who: Caller, namespace: str, agentrun: dict[str, Any]) -> list[dict[str, Any]]:
    meta = agentrun["metadata"]
    selector = f"{naming.LABEL_RUN}={naming.run_label(meta['name'])}"
    try:
        listed = await svc.kube.as_caller(
            who.token, "GET", resource_path(namespace, PLURAL), params={"labelSelector": selector}
        )
    except KubeError as exc:
        raise ApiError.from_kube(exc) from None
    items = [a for a in listed.get("items") or [] if a["spec"]["request"].get("runUID") == meta["uid"]]
    return sorted(items, key=lambda a: a["spec"]["request"].get("requestedAt", ""))


async def _run(svc: Services, who: Caller, namespace: str, name: str) -> dict[str, Any]:
    agentrun = await get_agentrun(svc, who, namespace, name)
    if agentrun is None:
        raise ApiError(404, "NotFound", f"AgentRun {namespace}/{name} not found")
    return agentrun


@router.get("/runs/{name}/approvals", response_model=ApprovalList, responses=ERRORS)
async def list_approvals(
    namespace: Namespace, name: Name, who: Caller = Depends(caller), svc: Services = Depends(services)
) -> ApprovalList:
    """Every approval of the run, pending first then decided, oldest first."""
    agentrun = await _run(svc, who, namespace, name)
    views = [approval_view(a) for a in await _approvals(svc, who, namespace, agentrun)]
    return ApprovalList(items=sorted(views, key=lambda v: not v.pending))


async def _decide(
    svc: Services,
    who: Caller,
    namespace: str,
    name: str,
    approval_id: str,
    decision: Literal["approve", "reject"],
    body: DecisionRequest,
) -> DecisionResult:
    for attempt in range(2):
        agentrun = await _run(svc, who, namespace, name)
        approvals = await _approvals(svc, who, namespace, agentrun)
        try:
            target = choose(namespace, name, agentrun, approvals, approval_id)
            done = already_decided(target, decision)
        except Refused as exc:
            raise ApiError(409, "Conflict", str(exc)) from None
        if done is not None:
            return DecisionResult(approval=approval_view(target), message=done)
        patch = {
            "metadata": {"resourceVersion": target["metadata"]["resourceVersion"]},
            "spec": {
                "decision": decision,
                "reason": body.reason or None,
                "decidedBy": {"username": who.username, "groups": list(who.groups)},
            },
        }
        path = resource_path(namespace, PLURAL, target["metadata"]["name"])
        try:
            written = await svc.kube.as_caller(who.token, "PATCH", path, patch, content_type=MERGE_PATCH)
        except KubeError as exc:
            if exc.status == 409 and attempt == 0:
                continue  # written meanwhile: look again (it may be decided now)
            raise ApiError.from_kube(exc) from None
        request = written["spec"]["request"]
        message = f"{PAST[decision]} approval {request['id']} of {namespace}/{name} ({request['agent']} calling {request['tool']}) as {who.username}"
        return DecisionResult(approval=approval_view(written), message=message)
    raise ApiError(409, "Conflict", f"the AgentApproval of {namespace}/{name} kept changing; try again")


@router.post("/runs/{name}/approvals/{approval_id}/approve", response_model=DecisionResult, responses=ERRORS)
async def approve(
    namespace: Namespace,
    name: Name,
    approval_id: str,
    body: DecisionRequest | None = None,
    who: Caller = Depends(caller),
    svc: Services = Depends(services),
) -> DecisionResult:
    """Approve a pending tool call as the caller (who must be among its approvers)."""
    return await _decide(svc, who, namespace, name, approval_id, "approve", body or DecisionRequest())


@router.post("/runs/{name}/approvals/{approval_id}/reject", response_model=DecisionResult, responses=ERRORS)
async def reject(
    namespace: Namespace,
    name: Name,
    approval_id: str,
    body: DecisionRequest | None = None,
    who: Caller = Depends(caller),
    svc: Services = Depends(services),
) -> DecisionResult:
    """Reject a pending tool call as the caller: the tool does not run; the agent is told who and why."""
    return await _decide(svc, who, namespace, name, approval_id, "reject", body or DecisionRequest())
