"""Turning AgentRuns, history rows and steps into the API's response models (pure functions)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agent_tree.contract import Step, ord_str
from agent_tree.run_requests import is_pending
from agent_tree.runs_query import phase_of
from agent_tree_api.models import ApprovalView, RunSummary, RunView, StepItem


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def run_summary(namespace: str, name: str, agentrun: dict[str, Any] | None, row: dict[str, Any] | None) -> RunSummary:
    """One run from its AgentRun (None: deleted or not visible) and its latest history row (None: not started)."""
    return RunSummary(**_summary_fields(namespace, name, agentrun, row))


def run_view(namespace: str, name: str, agentrun: dict[str, Any] | None, row: dict[str, Any] | None) -> RunView:
    fields = _summary_fields(namespace, name, agentrun, row)
    return RunView(
        **fields,
        spec=(agentrun or {}).get("spec"),
        status=(agentrun or {}).get("status"),
        input=(row or {}).get("input") or ((agentrun or {}).get("spec") or {}).get("input"),
        result=(row or {}).get("result"),
    )


def _summary_fields(
    namespace: str, name: str, agentrun: dict[str, Any] | None, row: dict[str, Any] | None
) -> dict[str, Any]:
    meta = (agentrun or {}).get("metadata") or {}
    status = (agentrun or {}).get("status") or {}
    spec = (agentrun or {}).get("spec") or {}
    # A row of an earlier incarnation (same name, other uid) is not this AgentRun's history.
    if row is not None and meta.get("uid") and row.get("uid") != meta["uid"]:
        row = None
    row = row or {}
    started, finished = row.get("started_at"), row.get("finished_at")
    took = (finished - started).total_seconds() if started and finished else None
    forked = status.get("forkedFrom") or {}
    return {
        "namespace": namespace,
        "name": name,
        "uid": meta.get("uid") or row.get("uid"),
        "workflowId": status.get("workflowId") or row.get("workflow_id"),
        "tree": (spec.get("treeRef") or {}).get("name") or row.get("tree"),
        "phase": status.get("phase") or (phase_of(row["status"]) if row.get("status") else "Pending"),
        "currentAgent": status.get("currentAgent"),
        "steps": max(int(status.get("steps") or 0), int(row.get("steps") or 0)),
        "tokens": max(int(status.get("tokenUsage") or 0), int(row.get("token_usage") or 0)),
        "answer": status.get("answer") or row.get("answer"),
        "startedAt": status.get("startedAt") or _iso(started),
        "finishedAt": status.get("completedAt") or _iso(finished),
        "durationSeconds": took,
        "forkedFrom": forked.get("run") or row.get("forked_from"),
        "inCluster": agentrun is not None,
    }


def step_item(number: int, step: Step) -> StepItem:
    return StepItem(
        number=number,
        position=ord_str(step["ord"]),
        ord=list(step["ord"]),
        type=step["type"],
        agent=step.get("agent"),
        data=step["data"],
        ts=str(step.get("ts") or ""),
    )


def approval_view(approval: dict[str, Any]) -> ApprovalView:
    spec, status = approval["spec"], approval.get("status") or {}
    request = spec["request"]
    decided = status.get("decidedBy") if status.get("decision") else spec.get("decidedBy")
    return ApprovalView(
        id=request["id"],
        name=approval["metadata"]["name"],
        agent=request["agent"],
        tool=request["tool"],
        arguments=request.get("arguments") or "",
        requestedAt=request["requestedAt"],
        expiresAt=request.get("expiresAt"),
        pending=is_pending(approval),
        decision=status.get("decision") or spec.get("decision"),
        decidedBy=(decided or {}).get("username"),
        reason=status.get("reason") or spec.get("reason"),
        delivered=bool(status.get("delivered")),
    )
