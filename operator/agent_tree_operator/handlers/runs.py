"""kopf handlers of AgentRuns: one daemon per active run, and cancellation on deletion.

The daemon (and so kopf's finalizer) exists while a run is not finished, or finished with a TTL to
honour. Finished runs without a TTL carry no finalizer: deleting them needs no operator. A run being
followed when the operator stops is followed again when it starts (daemons are spawned for every
matching object on startup), so its status converges from Temporal.
"""

from __future__ import annotations

from typing import Any

import kopf

from agent_tree import naming
from agent_tree_operator.follow import RunFollower
from agent_tree_operator.reconcile.runs import is_final

RUNS = ("agenttree.io", "v1alpha1", "agentruns")


def needs_follower(status: Any, spec: Any, **_: Any) -> bool:
    return not is_final(status) or spec.get("ttlSecondsAfterFinished") is not None


def unfinished(status: Any, **_: Any) -> bool:
    return not is_final(status)


# When the daemon must stop (run deleted, finished, operator exiting) kopf first only signals it
# (`stopped`), which every wait in the follower watches; it is cancelled only after the backoff.
@kopf.daemon(*RUNS, id="follow", when=needs_follower, cancellation_backoff=5.0, cancellation_timeout=10.0)
async def follow_run(body: Any, stopped: Any, memo: Any, logger: Any, agenttrees_idx: kopf.Index, **_: Any) -> None:
    await RunFollower(memo.ctx, body, stopped, agenttrees_idx, logger).run()


@kopf.on.delete(*RUNS, id="cancel", when=unfinished)
async def cancel_run(namespace: str, name: str, uid: str, body: Any, memo: Any, logger: Any, **_: Any) -> None:
    """Deleting a run that has not finished cancels its workflow (the finalizer waits for this)."""
    workflow_id = naming.workflow_id(namespace, name, uid)
    try:
        cancelled = await memo.ctx.temporal.cancel(workflow_id)
    except Exception as exc:
        raise kopf.TemporaryError(f"cannot cancel workflow {workflow_id}: {exc}", delay=5) from exc
    if cancelled:
        logger.info("run deleted: cancelled workflow %s", workflow_id)
        kopf.info(body, reason="Cancelled", message=f"run deleted: workflow {workflow_id} cancelled")
