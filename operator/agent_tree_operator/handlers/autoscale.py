"""kopf handlers feeding the backlog autoscaler (``agent_tree_operator.autoscaler``) and the run-phase gauge.

- every AgentTree watch event (re)registers the tree's agents with ``worker.autoscale`` (or forgets the
  tree when it is deleted); one background task polls and scales all registered trees. No kopf daemon
  or timer per tree: those put a finalizer on the tree, and deleting a tree (or its namespace) would
  then wait for the operator. Agents with ``externalScaling: true`` are observed (their backlog is
  exported), never scaled;
- every AgentRun watch event updates ``agent_tree_operator_runs{phase}``.

The Deployment watch (``handlers/trees.py``) keeps the autoscaler's view of current replicas.
"""

from __future__ import annotations

from typing import Any

import kopf

from agent_tree_operator.reconcile.trees import plain

TREES = ("agenttree.io", "v1alpha1", "agenttrees")
RUNS = ("agenttree.io", "v1alpha1", "agentruns")


@kopf.on.event(*TREES, id="autoscale")
async def autoscale_tree(namespace: str, name: str, type: str | None, spec: Any, memo: Any, **_: Any) -> None:
    raw = None if type == "DELETED" else plain(spec or {})
    memo.ctx.autoscaler.update_tree(namespace, name, raw)


@kopf.on.event(*RUNS, id="phases")
async def run_phase(uid: str, type: str | None, status: Any, memo: Any, **_: Any) -> None:
    if type == "DELETED":
        memo.ctx.phases.remove(uid)
    else:
        memo.ctx.phases.set(uid, (status or {}).get("phase"))
