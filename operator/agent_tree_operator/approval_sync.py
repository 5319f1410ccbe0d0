"""The run follower's approval writes: AgentApprovals made for pending requests, and their status.

Called once per follower pass (``follow.RunFollower``): what :class:`~agent_tree_operator.reconcile.
approvals.RunApprovals` learned from the run's steps becomes API writes here. Best effort per pass:
a failed call is tried again on the next pass (every second or so).
"""

from __future__ import annotations

import contextlib
import logging

from agent_tree import naming
from agent_tree_operator.adapters.kube import KubeError
from agent_tree_operator.handlers.context import OperatorContext
from agent_tree_operator.reconcile.approvals import PLURAL, approval_manifest, decided_status
from agent_tree_operator.reconcile.runs import LiveRun


async def sync(
    ctx: OperatorContext, namespace: str, run: str, uid: str, live: LiveRun, ensured: set[str], log: logging.Logger
) -> None:
    """Create the AgentApproval of every pending request not in ``ensured`` (creating is idempotent:
    an existing one counts), and record each decision the run took in its AgentApproval's status."""
    approvals = live.approvals
    for approval_id, request in list(approvals.requests.items()):
        if approval_id in ensured:
            continue
        manifest = approval_manifest(namespace, run, uid, request)
        try:
            await ctx.kube.create(PLURAL, namespace, manifest)
        except KubeError as exc:
            log.warning("cannot create AgentApproval %s: %s", manifest["metadata"]["name"], exc)
            continue
        ensured.add(approval_id)
    for approval_id, data in list(approvals.decided.items()):
        name = naming.approval_name(run, approval_id)
        try:
            await ctx.kube.patch_status(PLURAL, namespace, name, decided_status(data))
        except KubeError as exc:
            log.warning("cannot record the decision in AgentApproval %s: %s", name, exc)
            continue
        approvals.decided.pop(approval_id, None)
    ctx.approvals.set(uid, len(approvals.pending))


async def close(ctx: OperatorContext, namespace: str, run: str, uid: str, live: LiveRun) -> None:
    """The run ended with approvals still pending: no decision can reach it any more; say so."""
    for approval_id in list(live.approvals.pending):
        name = naming.approval_name(run, approval_id)
        status = {
            "phase": "Undeliverable",
            "message": f"the run ended ({live.phase}) before a decision; nothing waits for one any more",
        }
        with contextlib.suppress(KubeError):
            await ctx.kube.patch_status(PLURAL, namespace, name, status)
    ctx.approvals.drop(uid)
