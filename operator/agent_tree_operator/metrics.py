"""Prometheus metrics of the operator (served on ``AGENT_TREE_METRICS_PORT`` when it is not 0).

A minimal set for now: what the operator writes to the API server (the scarce resource), how many
runs it follows and how reconciles end. A later issue extends these.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, start_http_server

STATUS_PATCHES = Counter(
    "agent_tree_operator_status_patches_total", "Status patches written, by resource plural.", ["resource"]
)
API_WRITES = Counter(
    "agent_tree_operator_api_writes_total", "Kubernetes API writes by the operator.", ["resource", "verb"]
)
RECONCILES = Counter("agent_tree_operator_reconciles_total", "AgentTree reconciles by outcome.", ["outcome"])
RUNS_STARTED = Counter("agent_tree_operator_runs_started_total", "Workflows started for AgentRuns.")
RUNS_FINISHED = Counter("agent_tree_operator_runs_finished_total", "AgentRuns finished, by phase.", ["phase"])
RUNS_FOLLOWED = Gauge("agent_tree_operator_runs_followed", "AgentRuns currently followed by a daemon.")


def serve(port: int) -> None:
    """Expose ``/metrics`` on ``port`` (0 = off)."""
    if port:
        start_http_server(port)
