"""AgentRun decisions, pure: what the follower observed -> what to do next (wait, start, cancel, finish).

The run path's plan step, shaped like the tree path's (``reconcile/trees.py`` ``plan_tree``): the
follower observes (the tree index, the run's annotations, the workflow) into a :class:`RunObserved`,
:func:`check_tree` says whether the run's tree can take it, and :func:`plan_run` decides; the status
summary and its one write per pass are ``reconcile/runs.py``'s (:class:`~.runs.LiveRun`,
:func:`~.runs.plan_write`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent_tree_operator.reconcile.conditions import get
from agent_tree_operator.reconcile.runs import CANCEL_ANNOTATION, EVENT_MESSAGE_MAX, FINAL_PHASES, cut
from agent_tree_operator.reconcile.trees import parse_spec


@dataclass(frozen=True)
class RunObserved:
    """What the follower observed before deciding; :func:`plan_run` reads nothing else.

    Attributes:
        phase: the run's phase as the follower knows it (``LiveRun.phase``).
        started: the run's workflow exists (started by this follower or found after a restart).
        cancel_requested: the annotation ``agenttree.io/cancel`` is ``"true"``.
        cancel_sent: this follower already asked Temporal to cancel the workflow.
        age: seconds since the run was created (None: unknown).
        timeout_seconds: ``spec.timeoutSeconds`` (None or 0: no deadline before the start).
        tree: :func:`check_tree`'s answer ``(spec, reason, message)`` (only read before the start).
    """

    phase: str = "Pending"
    started: bool = False
    cancel_requested: bool = False
    cancel_sent: bool = False
    age: float | None = None
    timeout_seconds: int | None = None
    tree: tuple[Any, str, str] | None = None


@dataclass(frozen=True)
class RunPlan:
    """What to do next: ``action`` is one of

    - ``"wait"``: stay Pending with ``reason`` / ``message`` (the tree is missing, invalid or Degraded);
    - ``"start"``: start the workflow on ``spec`` (the validated tree spec to snapshot);
    - ``"finish"``: end the run now as ``phase`` with ``reason`` / ``message`` (it never started);
    - ``"cancel"``: ask Temporal to cancel the running workflow, then keep following;
    - ``"follow"``: keep following the workflow;
    - ``"done"``: the run has finished; nothing left to do.
    """

    action: str
    reason: str = ""
    message: str = ""
    phase: str | None = None
    spec: Any = None


def plan_run(observed: RunObserved) -> RunPlan:
    """observed -> what to do (pure; the follower acts on it and then writes the status once)."""
    if observed.phase in FINAL_PHASES:
        return RunPlan("done")
    if observed.started:
        if observed.cancel_requested and not observed.cancel_sent:
            return RunPlan(
                "cancel", "CancelRequested", f"annotation {CANCEL_ANNOTATION}=true: workflow cancellation requested"
            )
        return RunPlan("follow")
    if observed.cancel_requested:
        return RunPlan(
            "finish", "Cancelled", f"cancelled by annotation {CANCEL_ANNOTATION} before it started", phase="Cancelled"
        )
    spec, reason, message = observed.tree or (None, "TreeNotFound", "the tree was not looked up")
    if observed.timeout_seconds and observed.age is not None and observed.age > observed.timeout_seconds:
        # Also when the tree just became ready: the run's deadline passed before it could start.
        return RunPlan(
            "finish",
            "Timeout",
            f"still {reason if spec is None else 'Pending'} after spec.timeoutSeconds={observed.timeout_seconds}: "
            f"{message}",
            phase="Failed",
        )
    if spec is None:
        return RunPlan("wait", reason, message)
    return RunPlan("start", spec=spec)


def check_tree(
    namespace: str,
    tree_name: str,
    raw_spec: Mapping[str, Any] | None,
    tree_status: Mapping[str, Any] | None = None,
) -> tuple[Any, str, str]:
    """Whether a run can start on this tree: ``(spec, reason, message)``; spec is None when it cannot.

    A missing or invalid tree keeps the run Pending (it starts when the tree appears or is fixed), and
    so does a ``Degraded`` one (its workers refused, stuck or failing): a run started there would sit
    on a task queue that no worker serves. The message quotes the tree's reason and message, so
    ``kubectl describe agentrun`` says why the run waits.
    """
    if raw_spec is None:
        return (
            None,
            "TreeNotFound",
            (
                f"AgentTree {tree_name!r} not found in namespace {namespace!r} (spec.treeRef.name); "
                "the run starts when it is created"
            ),
        )
    spec, errors = parse_spec(raw_spec)
    if spec is None:
        shown = "; ".join(errors[:3]) + (f" (+{len(errors) - 3} more)" if len(errors) > 3 else "")
        return (
            None,
            "TreeInvalid",
            cut(f"AgentTree {tree_name!r} is invalid: {shown}; the run starts once it is fixed", EVENT_MESSAGE_MAX * 2)
            or "",
        )
    degraded = get(list((tree_status or {}).get("conditions") or []), "Degraded")
    if degraded is not None and degraded.get("status") == "True":
        reason = degraded.get("reason") or "Degraded"
        return (
            None,
            "TreeDegraded",
            cut(
                f"AgentTree {tree_name!r} is Degraded ({reason}): {degraded.get('message') or ''}; "
                "the run starts when the tree recovers",
                EVENT_MESSAGE_MAX * 2,
            )
            or "",
        )
    return spec, "TreeResolved", ""
