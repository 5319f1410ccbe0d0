"""kopf handlers of AgentRuns: one daemon per active run, cancellation on deletion, retiring finished runs.

The daemon (and so kopf's finalizer) exists while a run is not finished, or finished with a TTL to
honour. Finished runs without a TTL carry no finalizer: deleting them needs no operator. A run being
followed when the operator stops is followed again when it starts (daemons are spawned for every
matching object on startup), so its status converges from Temporal.

Finished runs cost the operator no memory: a finished run without a TTL is labelled
``agenttree.io/finished=true`` (and ``agenttree.io/run=<its name>``, which the REST API selects a page
of runs by) in the same JSON patch that releases kopf's finalizer, and the operator
watches AgentRuns with the selector ``agenttree.io/finished!=true`` (``handlers/setup.py``), so the API
server drops the run from the watch (a DELETED event: kopf forgets the object) and never lists it
again. Finished runs without the label (made before this operator version) are labelled when the
operator first sees them.
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


def retirable(status: Any, spec: Any, labels: Any, **_: Any) -> bool:
    """Finished, no TTL to honour (its daemon is done), and not labelled yet."""
    return (
        is_final(status)
        and spec.get("ttlSecondsAfterFinished") is None
        and (labels or {}).get(naming.LABEL_FINISHED) != "true"
    )


def mark_finished(body: dict[str, Any]) -> None:
    """A kopf patch function: label the run finished (and ``agenttree.io/run: <its name>``) AND drop the
    operator's finalizer.

    Dropping the finalizer here is kopf's own decision for such a run (no daemon and no deletion
    handler matches it), taken inside the same function so that no other patch function of the cycle
    can leave it in place: a finalizer-adding function left over from a conflicted PATCH (a run that
    finished before kopf's first PATCH landed) would otherwise ride along with the label, and a run
    outside the watch would keep a finalizer nobody removes.
    """
    meta = body.setdefault("metadata", {})
    labels = {**(meta.get("labels") or {}), naming.LABEL_FINISHED: "true"}
    if meta.get("name"):  # its own name as a label: the REST API fetches a page's runs in one list (``in``)
        labels[naming.LABEL_RUN] = naming.run_label(meta["name"])
    meta["labels"] = labels
    if naming.FINALIZER in (meta.get("finalizers") or []):
        meta["finalizers"] = [f for f in meta["finalizers"] if f != naming.FINALIZER]


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


@kopf.on.event(*RUNS, id="retire", when=retirable)
async def retire_run(patch: kopf.Patch, **_: Any) -> None:
    """Label a finished run so that it leaves the operator's watch (and memory).

    A patch *function*, not a merge patch: kopf turns functions into ONE JSON patch guarded by the
    object's resourceVersion, and :func:`mark_finished` releases the finalizer in that same function.
    So the label and the release land together or not at all: a run never leaves the watch still
    holding a finalizer that nobody would remove.
    """
    patch.fns.append(mark_finished)
