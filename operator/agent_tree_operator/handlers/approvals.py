"""kopf handlers of AgentApprovals: a decision an approver wrote reaches the run's workflow, once.

An approver decides by updating the AgentApproval (``spec.decision``; the API server checked who they
are and that they may). Every watch event of an AgentApproval with a decision that the run has not got
yet (:func:`~agent_tree_operator.reconcile.approvals.needs_delivery`) makes sure one delivery task
runs for it: it sends the ``decide`` Update (idempotent per approval id), retrying while Temporal or
the run's workers are away, and records in the status what the run holds (``delivered``,
``accepted``). After an operator restart the initial listing brings every undelivered decision back.

No finalizer, no kopf annotations: an event handler keeps no state on the object.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from agent_tree import naming
from agent_tree_operator.adapters.kube import KubeError
from agent_tree_operator.adapters.temporal import Undeliverable
from agent_tree_operator.handlers.context import OperatorContext
from agent_tree_operator.reconcile.approvals import PLURAL, decision_of, delivered_status, needs_delivery, workflow_of
from agent_tree_operator.reconcile.conditions import now_iso
from agent_tree_operator.reconcile.trees import plain

APPROVALS = (naming.GROUP, naming.VERSION, PLURAL)
RETRY = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0)


def undelivered(spec: Any, status: Any, type: Any = None, **_: Any) -> bool:
    return type != "DELETED" and needs_delivery(spec, status)


@kopf.on.event(*APPROVALS, id="deliver", when=undelivered)
async def deliver_decision(body: Any, uid: str, memo: Any, logger: Any, **_: Any) -> None:
    ctx: OperatorContext = memo.ctx
    running = ctx.deliveries.get(uid)
    if running is not None and not running.done():
        return
    task = asyncio.create_task(deliver(ctx, plain(body), logger), name=f"deliver-{uid}")
    ctx.deliveries[uid] = task
    task.add_done_callback(lambda t: ctx.deliveries.pop(uid, None) if ctx.deliveries.get(uid) is t else None)


async def deliver(ctx: OperatorContext, body: dict[str, Any], logger: logging.Logger) -> None:
    """Send one AgentApproval's decision to its run, then write what the run holds into its status."""
    meta, spec = body["metadata"], body["spec"]
    namespace, name = meta["namespace"], meta["name"]
    workflow_id = workflow_of(namespace, spec)
    sent = decision_of(spec, now_iso())
    delays = iter(RETRY)
    while True:
        try:
            ack = await ctx.temporal.decide(workflow_id, sent)
        except Undeliverable as exc:
            status: dict[str, Any] = {"phase": "Undeliverable", "delivered": False, "message": str(exc)[:500]}
            logger.warning("decision of AgentApproval %s/%s not delivered: %s", namespace, name, exc)
            break
        except Exception as exc:  # Temporal away, or no worker answered in time: the decision waits
            delay = next(delays, RETRY[-1])
            logger.warning("cannot deliver AgentApproval %s/%s (%s); retrying in %ss", namespace, name, exc, delay)
            await asyncio.sleep(delay)
            continue
        status = delivered_status(ack, sent)
        logger.info(
            "AgentApproval %s/%s: %s by %s delivered (accepted: %s)",
            namespace, name, sent.decision, sent.decided_by.username, ack.accepted,
        )  # fmt: skip
        break
    delays = iter(RETRY)
    while True:
        try:
            await ctx.kube.patch_status(PLURAL, namespace, name, status)
            return
        except KubeError as exc:
            if exc.not_found:  # deleted meanwhile (its run was, or someone removed it): nothing to record
                return
            delay = next(delays, RETRY[-1])
            logger.warning("cannot write the status of AgentApproval %s/%s (%s); retrying", namespace, name, exc)
            await asyncio.sleep(delay)
