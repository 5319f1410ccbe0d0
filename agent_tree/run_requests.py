"""What people ask of a run, shaped once for every client: which approval a decision is for, and the
AgentRun a retry or fork creates.

The CLI (``agent-tree approve / reject / retry / fork``) and the REST API both write through the
Kubernetes API as the caller; this module holds what they decide before writing, with no I/O.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from agent_tree.naming import API_VERSION
from agent_tree.spec_runs import FINAL_PHASES

PAST = {"approve": "approved", "reject": "rejected"}
COPIED = ("treeRef", "maxSteps", "timeoutSeconds", "budgets")  # what a retry or fork copies from its source
NAME_MAX = 63


class Refused(Exception):
    """The decision cannot be made as asked; the message says why and what to do."""


def is_pending(approval: Mapping[str, Any]) -> bool:
    status = approval.get("status") or {}
    return (
        not approval["spec"].get("decision") and not status.get("decision") and status.get("phase") != "Undeliverable"
    )


def choose(
    namespace: str, run: str, agentrun: Mapping[str, Any], approvals: list[dict[str, Any]], approval_id: str | None
) -> dict[str, Any]:
    """The approval to decide; refused when the id is unknown or ambiguous (listing the pending ones)."""
    pending = [a for a in approvals if is_pending(a)]
    listing = ", ".join(f"{a['spec']['request']['id']} ({a['spec']['request']['tool']})" for a in pending) or "none"
    phase = (agentrun.get("status") or {}).get("phase")
    if approval_id is not None:
        for approval in approvals:
            if approval["spec"]["request"]["id"] == approval_id:
                return approval
        if phase in FINAL_PHASES:
            raise Refused(f"AgentRun {namespace}/{run} is {phase} and has no approval {approval_id!r}")
        raise Refused(f"AgentRun {namespace}/{run} has no approval {approval_id!r}; pending: {listing}")
    if len(pending) == 1:
        return pending[0]
    if phase in FINAL_PHASES:
        raise Refused(f"AgentRun {namespace}/{run} is {phase}: nothing waits for a decision any more")
    if not pending:
        raise Refused(f"AgentRun {namespace}/{run} waits for no approval now (phase {phase})")
    raise Refused(f"AgentRun {namespace}/{run} waits for {len(pending)} approvals; name one: {listing}")


def already_decided(approval: Mapping[str, Any], decision: str) -> str | None:
    """The line to print when this approval holds the same decision; refused when it holds the other one."""
    spec, status = approval["spec"], approval.get("status") or {}
    held = status.get("decision") or spec.get("decision")
    by = (status.get("decidedBy") if status.get("decision") else spec.get("decidedBy")) or {}
    request = spec["request"]
    if held is None:
        if status.get("phase") == "Undeliverable":
            raise Refused(f"approval {request['id']} cannot be decided: {status.get('message') or 'the run ended'}")
        return None
    who = by.get("username") or "unknown"
    if held == decision:
        return f"approval {request['id']} of {request['run']} was already {PAST[held]} by {who}; nothing to do"
    raise Refused(
        f"approval {request['id']} of {request['run']} was already {PAST[held]} by {who}; a decision never changes"
    )


def fork_manifest(
    name: str,
    source_name: str,
    *,
    step: int | None = None,
    user_input: str | None = None,
    context: dict[str, Any] | None = None,
    current_tree: bool = False,
    source_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The AgentRun to create (``source_spec``: the source AgentRun's spec when it still exists)."""
    fork_from: dict[str, Any] = {"run": source_name}
    if step is not None:
        fork_from["step"] = step
    if user_input is not None:
        fork_from["input"] = user_input
    if context is not None:
        fork_from["context"] = context
    if current_tree:
        fork_from["treeRevision"] = "current"
    spec = {k: v for k, v in (source_spec or {}).items() if k in COPIED and v is not None}
    spec["forkFrom"] = fork_from
    return {"apiVersion": API_VERSION, "kind": "AgentRun", "metadata": {"name": name}, "spec": spec}


def new_name(source: str, kind: str) -> str:
    suffix = f"-{kind}-{secrets.token_hex(3)[:5]}"
    return source[: NAME_MAX - len(suffix)].rstrip("-.") + suffix
