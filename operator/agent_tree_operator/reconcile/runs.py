"""AgentRun state, pure: progress events and workflow results -> the status summary to write.

A run's status is a SUMMARY (a few KB at most): phase, current agent, steps, a short answer, a small
result, the plan, token usage, timestamps and conditions. The full history lives in PostgreSQL.
:class:`LiveRun` folds progress (Redis stream events or the workflow's ``progress`` query) into that
summary; :func:`status_patch` turns it into a JSON merge patch holding only what changed.

The run path has the tree path's shape (``reconcile/trees.py`` ``plan_tree``): the follower observes
(the tree index, the run's annotations, the workflow, the progress stream) into a ``RunObserved``,
``reconcile/run_plan.py``'s ``plan_run`` decides what to do (wait, start, cancel, finish, keep
following), the follower acts, and :func:`plan_write` decides the ONE status write of that pass: the
first write when the run starts, then at most one per interval and only on change, and the final
write at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent_tree import naming
from agent_tree.contract import (
    AGENT_START,
    APPROVAL_DECIDED,
    APPROVAL_REQUESTED,
    BUDGET_EXHAUSTED,
    BUDGETS_CHANGED,
    HANDOFF,
)
from agent_tree.durations import format_duration
from agent_tree.policy import BUDGET_EXHAUSTED as PAUSED_REASON
from agent_tree.spec_runs import FINAL_PHASES
from agent_tree_operator.reconcile.approvals import RunApprovals
from agent_tree_operator.reconcile.conditions import (
    condition,
    merge_conditions,
    now_iso,
    parse_iso,
    same_conditions,
)

ACTIVE_PHASES = frozenset({"Running", "AwaitingApproval"})  # the phases pending approvals move between
CANCEL_ANNOTATION = naming.CANCEL_ANNOTATION
EVENT_MESSAGE_MAX = 300

# SupervisorResult.status -> (phase, reason)
RESULT_PHASES = {
    "completed": ("Succeeded", "Completed"),
    "failed": ("Failed", "AgentsFailed"),
    "max_steps_reached": ("Failed", "MaxStepsReached"),
    "cancelled": ("Cancelled", "Cancelled"),
}


def is_final(status: Mapping[str, Any] | None) -> bool:
    return (status or {}).get("phase") in FINAL_PHASES


def cut(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bounded(value: Any, limit: int) -> dict[str, Any] | None:
    """``value`` if its JSON fits in ``limit`` bytes, else a small note saying where the rest is."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        value = {"value": value}
    text = json.dumps(value, default=str, ensure_ascii=False)
    if len(text.encode()) <= limit:
        return json.loads(text)
    keys = sorted(str(k) for k in value)[:20]
    return {"truncated": True, "bytes": len(text.encode()), "keys": keys, "see": "agent-tree history"}


@dataclass
class K8sEvent:
    """A Kubernetes Event to post on the run."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class LiveRun:
    """The summary of one run as the operator knows it right now."""

    phase: str = "Pending"
    reason: str = "Pending"
    message: str | None = None
    current_agent: str | None = None
    steps: int = 0
    token_usage: int = 0
    plan: Any = None
    answer: str | None = None
    result: Any = None
    workflow_id: str | None = None
    tree_revision: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    forked_from: dict[str, Any] | None = None  # status.forkedFrom: {run, step, workflowId}
    usage: dict[str, Any] | None = None  # against spec.budgets: {turns, toolCalls, tokens, costUSD}
    handoffs: int = 0  # handoff events seen in this process (the stream may be replayed after a restart)
    last_stream_id: str = "0-0"
    seen: set[str] = field(default_factory=set)
    approvals: RunApprovals = field(default_factory=RunApprovals)

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None, ref: str = "") -> LiveRun:
        """Resume from a status written earlier (e.g. before an operator restart); ``ref`` is NS/NAME."""
        status = status or {}
        succeeded = next((c for c in status.get("conditions") or [] if c.get("type") == "Succeeded"), {})
        return cls(
            phase=status.get("phase") or "Pending",
            reason=succeeded.get("reason") or status.get("phase") or "Pending",
            message=status.get("message"),
            current_agent=status.get("currentAgent"),
            steps=status.get("steps") or 0,
            token_usage=status.get("tokenUsage") or 0,
            plan=status.get("plan"),
            answer=status.get("answer"),
            result=status.get("result"),
            workflow_id=status.get("workflowId"),
            tree_revision=status.get("treeRevision"),
            started_at=status.get("startedAt"),
            completed_at=status.get("completedAt"),
            approvals=RunApprovals.from_status(ref, status.get("approvals")),
            forked_from=status.get("forkedFrom"),
            usage=status.get("usage"),
        )

    @property
    def final(self) -> bool:
        return self.phase in FINAL_PHASES

    # --- transitions ------------------------------------------------------------------------
    def pending(self, reason: str, message: str) -> None:
        self.phase, self.reason, self.message = "Pending", reason, message

    def running(self, workflow_id: str, revision: str | None, root: str | None, now: str) -> None:
        self.phase, self.reason, self.message = "Running", "Running", None
        self.workflow_id = workflow_id
        self.tree_revision = revision or self.tree_revision
        self.current_agent = self.current_agent or root
        self.started_at = self.started_at or now
        self._approval_phase()  # a run resumed while it waits keeps waiting (no flap through Running)

    def finish_with_result(self, result: Mapping[str, Any], now: str) -> K8sEvent:
        """Fold the workflow's result summary (answer/status/final_agent/payload/plan/steps/token_usage)."""
        status = str(result.get("status") or "completed")
        self.phase, self.reason = RESULT_PHASES.get(status, ("Failed", "UnknownResult"))
        if result.get("reason") and self.phase == "Failed":  # a limit stopped it: BudgetExceeded, ...
            self.reason = str(result["reason"])
        self.answer = result.get("answer")
        self.result = result.get("payload") if result.get("payload") is not None else self.result
        self.plan = result.get("plan") if result.get("plan") is not None else self.plan
        self.steps = _int(result.get("steps"), self.steps)
        self.token_usage = _int(result.get("token_usage", result.get("tokenUsage")), self.token_usage)
        self.current_agent = result.get("final_agent") or self.current_agent
        self.usage = result.get("usage") if isinstance(result.get("usage"), Mapping) else self.usage
        self.completed_at = now
        self.started_at = self.started_at or now
        if self.phase == "Succeeded":
            self.message = None
            return K8sEvent("Normal", "Succeeded", cut(f"{self.steps} steps: {self.answer or ''}", EVENT_MESSAGE_MAX))
        self.message = cut(f"run ended with status {status}: {self.answer or ''}", EVENT_MESSAGE_MAX)
        return K8sEvent("Warning", self.reason, self.message)

    def finish_with_error(self, phase: str, reason: str, message: str, now: str) -> K8sEvent:
        self.phase, self.reason, self.message = phase, reason, cut(message, EVENT_MESSAGE_MAX)
        self.completed_at = now
        self.started_at = self.started_at or now
        return K8sEvent("Warning", reason, self.message or reason)

    # --- progress ---------------------------------------------------------------------------
    def apply_event(self, event: Mapping[str, Any], stream_id: str | None = None) -> list[K8sEvent]:
        """Fold one progress event (agent_tree.events vocabulary) into the summary."""
        if stream_id is not None:
            if stream_id in self.seen:
                return []
            self.seen.add(stream_id)
            self.last_stream_id = stream_id
        kind = event.get("type")
        agent = event.get("agent")
        out: list[K8sEvent] = []
        if kind in (APPROVAL_REQUESTED, APPROVAL_DECIDED):
            fold = self.approvals.request if kind == APPROVAL_REQUESTED else self.approvals.decide
            out += [K8sEvent(n.type, n.reason, cut(n.message, EVENT_MESSAGE_MAX) or "") for n in fold(event)]
            self._approval_phase()
        if kind == AGENT_START and agent:
            self.current_agent = str(agent)
        elif kind == HANDOFF:
            self.handoffs += 1
            self.steps = max(self.steps, self.handoffs)  # a replayed stream never counts a step twice
            target = event.get("to_agent") or "supervisor"
            message = f"{agent} -> {target} [{event.get('status')}]: {event.get('summary') or ''}"
            out.append(K8sEvent("Normal", "Handoff", cut(message, EVENT_MESSAGE_MAX) or ""))
        elif kind == BUDGET_EXHAUSTED and not self.final:
            self.phase, self.reason = "Paused", PAUSED_REASON
            self.message = cut(str(event.get("message") or "a budget is exhausted"), EVENT_MESSAGE_MAX)
            out.append(K8sEvent("Warning", PAUSED_REASON, self.message or ""))
        elif kind == BUDGETS_CHANGED:
            out.append(K8sEvent("Normal", "BudgetsChanged", cut(f"budgets now {event.get('budgets')}", 300) or ""))
            if event.get("resumed") and self.phase == "Paused":
                self.phase, self.reason, self.message = "Running", "Running", None
        if isinstance(event.get("usage"), Mapping):
            self.usage = dict(event["usage"])
        if isinstance(event.get("plan"), Mapping):
            self.plan = dict(event["plan"])
        for key in ("step", "steps"):
            if key in event:
                self.steps = max(self.steps, _int(event.get(key), self.steps))
        for key in ("token_usage", "tokenUsage", "tokens"):
            if key in event:
                self.token_usage = max(self.token_usage, _int(event.get(key), self.token_usage))
        return out

    def apply_progress(self, snapshot: Any) -> list[K8sEvent]:
        """Fold the workflow's ``progress`` query answer (used when the Redis stream is unavailable)."""
        if not isinstance(snapshot, Mapping):
            return []
        out: list[K8sEvent] = []
        agent = snapshot.get("current_agent", snapshot.get("currentAgent", snapshot.get("agent")))
        if agent and agent != self.current_agent:
            if self.current_agent:
                out.append(K8sEvent("Normal", "Handoff", f"{self.current_agent} -> {agent}"))
            self.current_agent = str(agent)
        self.steps = max(self.steps, _int(snapshot.get("steps", snapshot.get("step")), self.steps))
        tokens = snapshot.get("token_usage", snapshot.get("tokenUsage"))
        self.token_usage = max(self.token_usage, _int(tokens, self.token_usage))
        if isinstance(snapshot.get("plan"), Mapping):
            self.plan = dict(snapshot["plan"])
        if "approvals" in snapshot:
            out += self.apply_approvals(snapshot.get("approvals"))
        if snapshot.get("usage"):
            self.usage = dict(snapshot["usage"])
        paused = snapshot.get("paused")
        if paused and self.phase != "Paused" and not self.final:
            self.phase, self.reason, self.message = "Paused", PAUSED_REASON, cut(str(paused), EVENT_MESSAGE_MAX)
            out.append(K8sEvent("Warning", PAUSED_REASON, self.message or ""))
        elif not paused and self.phase == "Paused" and snapshot.get("phase") == "Running":
            self.phase, self.reason, self.message = "Running", "Running", None
        return out

    def apply_approvals(self, pending: Any) -> list[K8sEvent]:
        """The workflow's own list of pending approvals (``Progress.approvals``) replaces the one known."""
        notices = self.approvals.replace(pending)
        self._approval_phase()
        return [K8sEvent(n.type, n.reason, cut(n.message, EVENT_MESSAGE_MAX) or "") for n in notices]

    def _approval_phase(self) -> None:
        """AwaitingApproval while any approval is pending, Running again once none is."""
        if self.phase not in ACTIVE_PHASES:
            return
        if self.approvals.pending:
            self.phase, self.reason, self.message = "AwaitingApproval", "AwaitingApproval", self.approvals.message()
        elif self.phase == "AwaitingApproval":
            self.phase, self.reason, self.message = "Running", "Running", None

    # --- status -----------------------------------------------------------------------------
    def status(self, *, answer_max: int, max_bytes: int) -> dict[str, Any]:
        """The status summary (without timestamps on conditions; see :func:`status_patch`)."""
        # The DURATION column stays empty until the run finishes: a value that only a status write
        # moves would read as a frozen "0s" for as long as the run lasts.
        duration = None
        started, completed = parse_iso(self.started_at), parse_iso(self.completed_at)
        if started is not None and completed is not None:
            duration = format_duration((completed - started).total_seconds())
        return {
            "phase": self.phase,
            "currentAgent": self.current_agent,
            "steps": self.steps,
            "answer": cut(self.answer, answer_max),
            "result": bounded(self.result, max_bytes),
            "plan": bounded(self.plan, max_bytes),
            "tokenUsage": self.token_usage,
            "usage": self.usage,
            "treeRevision": self.tree_revision,
            "workflowId": self.workflow_id,
            "startedAt": self.started_at,
            "completedAt": self.completed_at,
            "duration": duration,
            "message": self.message,
            "approvals": None if self.final else self.approvals.status(),
            "waiting": None if self.final else self.approvals.waiting(),
            "forkedFrom": self.forked_from,
            "conditions": self.conditions(),
        }

    def conditions(self) -> list[dict[str, Any]]:
        """``Succeeded`` / ``Failed`` (kubectl wait) plus what kstatus reads: ``Reconciling``, ``Stalled``.

        kstatus (sigs.k8s.io/cli-utils) reads a run as InProgress while ``Reconciling=True`` (Pending,
        Running, and any phase a run waits in), Failed while ``Stalled=True`` (Failed, Cancelled: a
        cancelled run produced no result, so whatever waits for it must not carry on as if it had),
        and Current otherwise (Succeeded).
        """
        if self.phase == "Succeeded":
            return [
                condition("Succeeded", True, self.reason, cut(self.answer or "", 200) or ""),
                condition("Failed", False, self.reason, ""),
                condition("Reconciling", False, self.reason, "the run finished"),
                condition("Stalled", False, self.reason, ""),
            ]
        if self.phase in ("Failed", "Cancelled"):
            return [
                condition("Succeeded", False, self.reason, self.message or ""),
                condition("Failed", True, self.reason, self.message or ""),
                condition("Reconciling", False, self.reason, "the run finished"),
                condition("Stalled", True, self.reason, self.message or f"the run ended {self.phase}"),
            ]
        return [
            condition("Succeeded", "Unknown", self.reason, self.message or ""),
            condition("Failed", False, self.reason, ""),
            condition("Reconciling", True, self.reason, self.message or self._progress_message()),
            condition("Stalled", False, self.reason, ""),
        ]

    def _progress_message(self) -> str:
        if self.phase == "Running":
            return f"workflow {self.workflow_id} is running" if self.workflow_id else "the run is running"
        return f"the run is {self.phase}"


CREATED_MESSAGE = "waiting for the agent-tree operator to pick the run up"


def initial_status() -> dict[str, Any]:
    """What a run reads before the operator's first write: the AgentRun CRD's default ``status``.

    Without it a new run has no conditions, and kstatus reads an object without conditions as
    Current (done) until the operator writes; with it the API server shows every run InProgress
    (``Reconciling=True``, reason ``Created``) from the moment it exists.
    """
    live = LiveRun()
    live.pending("Created", CREATED_MESSAGE)
    status = live.status(answer_max=0, max_bytes=0)
    return {key: value for key, value in status.items() if value is not None}


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def status_patch(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    *,
    now: str | None = None,
    generation: int | None = None,
    ignore: frozenset[str] = frozenset({"duration"}),
) -> dict[str, Any] | None:
    """A JSON merge patch taking ``old`` status to ``new``, or None when nothing meaningful changed.

    Keys in ``ignore`` (``duration``, e.g. a stale one written by an older operator) do not make a
    patch necessary on their own, but ride along when something else changes.
    """
    old = dict(old or {})
    now = now or now_iso()
    patch: dict[str, Any] = {}
    for key, value in new.items():
        if key == "conditions":
            if not same_conditions(old.get("conditions"), value):
                patch["conditions"] = merge_conditions(old.get("conditions"), value, now, generation)
        elif old.get(key) != value and not (value is None and key not in old):
            patch[key] = value
    if not (set(patch) - ignore):
        return None
    if generation is not None and old.get("observedGeneration") != generation:
        patch["observedGeneration"] = generation
    return patch


class Coalescer:
    """When the last status write of one run went out (a monotonic clock), for :func:`plan_write`."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last_write: float | None = None

    def wait_time(self, now: float) -> float:
        """Seconds until the next progress write is allowed (0 = now)."""
        if self.last_write is None:
            return 0.0
        return max(0.0, self.last_write + self.interval - now)

    def wrote(self, now: float) -> None:
        self.last_write = now


@dataclass(frozen=True)
class WritePlan:
    """The status write of one pass: ``patch`` to send now (None: nothing now), and when a change
    held back by the interval may go out (``due_in`` seconds; None: nothing is held back)."""

    patch: dict[str, Any] | None = None
    due_in: float | None = None


def plan_write(
    written: Mapping[str, Any] | None,
    desired: Mapping[str, Any],
    *,
    final: bool,
    now: float,
    last_write: float | None,
    interval: float,
    generation: int | None = None,
    stamp: str | None = None,
) -> WritePlan:
    """Coalescing, pure: whether the summary ``desired`` is written now, later, or not at all.

    - nothing changed (:func:`status_patch` is None): no write;
    - the first write of this follower, a new phase (the run starts: Running with its current agent;
      it finishes) and the final write go out at once: a run shorter than ``interval`` writes twice
      in all (Running, then its final phase), a run that waited for its tree three times (Pending
      with the reason, Running, final), and neither its start nor its end is delayed by the interval;
    - any other change waits until ``interval`` seconds after the last write; changes meanwhile fold
      into that one write, so a run of duration T writes at most ``2 + T / interval`` times and never
      once per step.

    Args:
        written: the status last written (or read from the object).
        desired: the summary to reach (:meth:`LiveRun.status`).
        final: the run has finished (this is its last write).
        now: a monotonic clock reading; ``last_write`` is on the same clock (None: no write yet).
        interval: ``AGENT_TREE_STATUS_INTERVAL_MS`` in seconds.
        generation: the run's ``metadata.generation`` (written as ``observedGeneration``).
        stamp: the RFC 3339 time of changed conditions (default: now).
    """
    patch = status_patch(written, desired, now=stamp, generation=generation)
    if patch is None:
        return WritePlan()
    if final or last_write is None or "phase" in patch or now - last_write >= interval:
        return WritePlan(patch=patch)
    return WritePlan(due_in=last_write + interval - now)
