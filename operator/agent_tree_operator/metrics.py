"""Prometheus metrics of the operator, served on ``AGENT_TREE_METRICS_PORT`` (0 = off).

Naming follows Prometheus conventions: ``agent_tree_operator_*`` / ``agent_tree_autoscaler_*``, base
units (``_seconds``), ``_total`` on counters. Label values are bounded: never a run's name or uid.

Cardinality (docs/observability.md): ``kind`` (2), ``result`` (<= 6), ``phase`` (7), ``resource`` /
``verb`` (a handful) are fixed enums. The autoscaler's series carry ``namespace``, ``tree`` and
``agent``: one set per autoscaled agent (a tree has at most 50 agents), removed when the tree is
deleted or stops autoscaling.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram, start_http_server

PHASES = ("Pending", "Running", "AwaitingApproval", "Paused", "Succeeded", "Failed", "Cancelled")

# Reconcile latency: an AgentTree reconcile is a handful of API calls; starting a run is a Temporal call.
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Run durations: from a second (a Python tree) to an hour (the default timeoutSeconds).
RUN_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

RECONCILES = Counter(
    "agent_tree_operator_reconciles_total",
    "Reconciles by kind (AgentTree, AgentRun) and result. AgentTree: ok, invalid, retry, error. "
    "AgentRun: started (workflow started), resumed (an existing workflow followed), finished, error.",
    ["kind", "result"],
)
RECONCILE_SECONDS = Histogram(
    "agent_tree_operator_reconcile_duration_seconds",
    "Time of one reconcile: an AgentTree's full reconcile, or an AgentRun's resolve-and-start.",
    ["kind"],
    buckets=RECONCILE_BUCKETS,
)
STATUS_PATCHES = Counter(
    "agent_tree_operator_status_patches_total", "Status patches written, by resource plural.", ["resource"]
)
API_WRITES = Counter(
    "agent_tree_operator_api_writes_total", "Kubernetes API writes by the operator.", ["resource", "verb"]
)
RUNS = Gauge(
    "agent_tree_operator_runs",
    "AgentRuns in the operator's watch (unfinished, or finished with a TTL to honour), by phase.",
    ["phase"],
)
RUNS_ACTIVE = Gauge("agent_tree_operator_runs_active", "AgentRuns being driven right now (not finished).")
RUNS_FOLLOWED = Gauge(
    "agent_tree_operator_runs_followed", "AgentRun daemons alive (active runs and finished runs awaiting their TTL)."
)
APPROVALS_PENDING = Gauge(
    "agent_tree_operator_approvals_pending",
    "Tool calls waiting for a person's decision (AgentApprovals not decided yet), over the runs the operator follows.",
)
RUNS_STARTED = Counter("agent_tree_operator_runs_started_total", "Workflows started for AgentRuns.")
RUNS_FINISHED = Counter("agent_tree_operator_runs_finished_total", "AgentRuns finished, by final phase.", ["phase"])
RUN_SECONDS = Histogram(
    "agent_tree_operator_run_duration_seconds",
    "Duration of finished AgentRuns from creation to their final phase, by phase.",
    ["phase"],
    buckets=RUN_BUCKETS,
)

# --- the backlog autoscaler -------------------------------------------------------------------------
AGENT = ["namespace", "tree", "agent"]
BACKLOG = Gauge(
    "agent_tree_autoscaler_backlog",
    "Tasks waiting in an autoscaled agent's Temporal task queues (workflow + activity), as last described.",
    AGENT,
)
BACKLOG_AGE = Gauge(
    "agent_tree_autoscaler_backlog_age_seconds", "Age of the oldest waiting task of an autoscaled agent.", AGENT
)
IN_PROGRESS = Gauge(
    "agent_tree_autoscaler_turns_in_progress",
    "Runs whose current agent is this agent (seen by the operator's followers).",
    AGENT,
)
DESIRED = Gauge("agent_tree_autoscaler_desired_replicas", "Replicas the autoscaler wants for an agent.", AGENT)
SCALES = Counter(
    "agent_tree_autoscaler_scale_total",
    "Replica changes written by the autoscaler, by reason: backlog (up), idle (down), prewarm (0 -> 1+).",
    ["reason"],
)
DESCRIBE_ERRORS = Counter(
    "agent_tree_autoscaler_describe_errors_total", "DescribeTaskQueue calls that failed (the tick is skipped)."
)


def forget_agent(namespace: str, tree: str, agent: str) -> None:
    """Drop the per-agent series of an agent that is no longer autoscaled (bounded cardinality)."""
    for gauge in (BACKLOG, BACKLOG_AGE, IN_PROGRESS, DESIRED):
        try:
            gauge.remove(namespace, tree, agent)
        except KeyError:
            pass


@contextmanager
def reconcile_timer(kind: str) -> Iterator[None]:
    """Observe the duration of the block in ``agent_tree_operator_reconcile_duration_seconds{kind}``."""
    began = time.perf_counter()
    try:
        yield
    finally:
        RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - began)


class RunPhases:
    """Phase of every AgentRun the operator's watch has seen, exported as ``agent_tree_operator_runs{phase}``.

    Fed by a kopf event handler (every watch event of every watched run). Finished runs without a TTL
    leave the watch (label ``agenttree.io/finished=true``; a DELETED event removes them here), so the
    gauge counts unfinished runs and finished ones still waiting for their TTL.
    """

    def __init__(self, gauge: Gauge = RUNS) -> None:
        self.gauge = gauge
        self.phases: dict[str, str] = {}
        self.counts: dict[str, int] = dict.fromkeys(PHASES, 0)
        for phase in PHASES:
            gauge.labels(phase).set(0)

    def set(self, uid: str, phase: str | None) -> None:
        phase = phase if phase in PHASES else "Pending"  # a new run has no status yet
        old = self.phases.get(uid)
        if old == phase:
            return
        if old is not None:
            self._add(old, -1)
        self.phases[uid] = phase
        self._add(phase, 1)

    def remove(self, uid: str) -> None:
        old = self.phases.pop(uid, None)
        if old is not None:
            self._add(old, -1)

    def _add(self, phase: str, delta: int) -> None:
        self.counts[phase] += delta
        self.gauge.labels(phase).set(self.counts[phase])


class PendingApprovals:
    """Pending approvals per followed run, summed into ``agent_tree_operator_approvals_pending``."""

    def __init__(self, gauge: Gauge = APPROVALS_PENDING) -> None:
        self.gauge = gauge
        self.counts: dict[str, int] = {}
        gauge.set(0)

    def set(self, uid: str, count: int) -> None:
        if count:
            self.counts[uid] = count
        else:
            self.counts.pop(uid, None)
        self.gauge.set(sum(self.counts.values()))

    def drop(self, uid: str) -> None:
        self.set(uid, 0)


def serve(port: int) -> None:
    """Expose ``/metrics`` on ``port`` (0 = off)."""
    if port:
        start_http_server(port)
