"""``spec.forkFrom``, pure: the source's history rows -> what the fork starts with, or why it cannot.

The follower reads the source from PostgreSQL (``adapters/history.py``: the latest run of that name
in the run's namespace, its steps, its pinned tree spec) and :func:`plan_fork` decides. Any problem
fails the run at once (the spec is immutable, so waiting would not fix it) with reason
``InvalidForkFrom`` and a message naming the field and the fix; nothing of the source is touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent_tree.contract.control import ForkPointError, ForkSource, fork_point

REASON = "InvalidForkFrom"
NO_HISTORY = (
    "spec.forkFrom: the operator has no history database (AGENT_TREE_DATABASE_URL is not set); "
    "forks are resolved from it: configure it, or create a new AgentRun without forkFrom"
)


class ForkError(Exception):
    """The fork cannot start; ``str()`` names the field and the fix."""


@dataclass(frozen=True)
class ForkPlan:
    """What a fork starts with.

    Attributes:
        fork: the run input's ``fork`` (source workflow id, step, until_ord).
        tree: the AgentTree whose workers serve the fork (``spec.treeRef`` or the source's tree).
        spec: the source's pinned tree spec; None: the AgentTree as it is now (``treeRevision: current``).
        revision: the pinned spec's revision (None with ``current``).
        input, context: the fork's (the overrides in ``spec.forkFrom``, else the run's, else the source's).
    """

    fork: ForkSource
    tree: str
    spec: dict[str, Any] | None
    revision: str | None
    input: str
    context: dict[str, Any] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        """``status.forkedFrom``."""
        return {"run": self.fork.name, "step": self.fork.step, "workflowId": self.fork.workflow_id}


def plan_fork(
    namespace: str,
    run_spec: Mapping[str, Any],
    source: Mapping[str, Any] | None,
    steps: list[dict[str, Any]],
    pinned: dict[str, Any] | None,
) -> ForkPlan:
    """The fork of ``run_spec["forkFrom"]`` given the source's history rows.

    Args:
        source: the latest ``runs`` row of that name in ``namespace`` (None: there is none).
        steps: the source's steps in ord order.
        pinned: the tree spec of the source's revision from ``tree_specs`` (None: not stored).

    Raises:
        ForkError: the message names ``spec.forkFrom.run`` / ``.step`` / ``.treeRevision`` or
            ``spec.treeRef`` and says what to do.
    """
    fork_from = run_spec["forkFrom"]
    name = fork_from["run"]
    if source is None:
        raise ForkError(
            f"spec.forkFrom.run: no run of AgentRun {name!r} in namespace {namespace!r} in the history; "
            "name an AgentRun of this namespace that has started (see `agent-tree runs -n NAMESPACE`)"
        )
    tree_ref = (run_spec.get("treeRef") or {}).get("name")
    if tree_ref and tree_ref != source["tree"]:
        raise ForkError(
            f"spec.treeRef.name: {tree_ref!r} is not the tree of run {name!r} ({source['tree']!r}); "
            "omit spec.treeRef or name the source's tree"
        )
    try:
        step, until = fork_point(steps, fork_from.get("step"), name)
    except ForkPointError as exc:
        raise ForkError(str(exc)) from None
    current = fork_from.get("treeRevision") == "current"
    if not current and pinned is None:
        raise ForkError(
            f"spec.forkFrom.treeRevision: the tree spec run {name!r} was pinned to (revision "
            f"{source['tree_revision']}) is not in the history; set spec.forkFrom.treeRevision: current "
            "to run on the AgentTree as it is now"
        )
    user_input = fork_from.get("input") or run_spec.get("input") or source["input"]
    context = fork_from.get("context")
    if context is None:
        context = run_spec.get("context") or source.get("context") or {}
    return ForkPlan(
        fork=ForkSource(workflow_id=source["workflow_id"], name=name, step=step, until_ord=until),
        tree=source["tree"],
        spec=None if current else pinned,
        revision=None if current else source["tree_revision"],
        input=user_input,
        context=dict(context),
    )
