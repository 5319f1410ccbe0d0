"""Prometheus metrics of a worker, served on ``AGENT_TREE_METRICS_PORT`` (0 = off, ``auto`` = any free port).

What is counted where (docs/observability.md has the full list and the cardinality):

- **agent turns and handoffs**: from the steps the worker records (``agent_end`` and ``handoff``),
  after they were written (``Activities.write``). Steps are recorded by whichever worker's activity
  writes them, so sum over all workers; labels name the agent the step is about. An activity retried
  after it wrote its steps counts them again (at-least-once, like every activity).
- **model calls**: latency, result and tokens, in the ``model_call`` activity;
- **tool calls**: latency and result (``error`` = the tool failed, timed out or returned non-JSON),
  where a tool actually runs (a call answered from the journal after a retry is not run again, and
  not counted again);
- **structured-output repairs and failures**: in the workflow (the repair decision is taken there),
  through ``workflow.metric_meter()``, which skips replays; exposed by the Temporal bridge
  (:mod:`agent_tree_worker.temporal_metrics`) under the same ``agent_tree_worker_`` prefix;
- the Temporal SDK's own ``temporal_*`` metrics, through the same bridge.

Labels are bounded by the tree spec: agent names (<= 50 per tree), tool names (<= 64 per agent), the
spec's model name, and small enums (result, kind). Never a run id. The outcome label is ``result``
on every metric that has one (the operator's too), whatever the step's own field is called.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server

from agent_tree.contract import AGENT_END, HANDOFF
from agent_tree.settings import AUTO_PORT

log = logging.getLogger(__name__)

MODEL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
TOOL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

AGENT_TURNS = Counter(
    "agent_tree_worker_agent_turns_total",
    "Agent turns ended (agent_end steps recorded), by agent and result (the turn's status: ok, "
    "needs_more_info, failed; for a root agent the run's: completed, failed, max_steps_reached, cancelled).",
    ["agent", "result"],
)
HANDOFFS = Counter(
    "agent_tree_worker_handoffs_total",
    "Handoffs recorded (an agent handing its result back to its supervisor), by agent, supervisor and result.",
    ["agent", "to_agent", "result"],
)
MODEL_CALLS = Counter(
    "agent_tree_worker_model_calls_total",
    "Chat Completions calls, by agent, model and result.",
    ["agent", "model", "result"],
)
MODEL_SECONDS = Histogram(
    "agent_tree_worker_model_call_duration_seconds",
    "Latency of Chat Completions calls (successful or not).",
    ["agent", "model"],
    buckets=MODEL_BUCKETS,
)
MODEL_TOKENS = Counter(
    "agent_tree_worker_model_tokens_total", "Tokens reported by the model endpoint.", ["agent", "model", "kind"]
)
TOOL_CALLS = Counter(
    "agent_tree_worker_tool_calls_total",
    "Tool calls run, by agent, tool and result (ok, error: failed, timed out or returned non-JSON).",
    ["agent", "tool", "result"],
)
TOOL_SECONDS = Histogram(
    "agent_tree_worker_tool_call_duration_seconds", "Latency of tool calls.", ["agent", "tool"], buckets=TOOL_BUCKETS
)

# Recorded by workflows through workflow.metric_meter() (replay-safe), exported by the Temporal bridge.
REPAIRS = "agent_tree_worker_structured_output_repairs"
REPAIR_FAILURES = "agent_tree_worker_structured_output_failures"
BUDGET_STOPS = "agent_tree_worker_budget_exhausted"
"""Runs a budget stopped (``action=fail``) or paused (``action=pause``), by ``budget`` (maxTokens, ...)."""


def record_steps(steps: Iterable[Mapping[str, Any]]) -> None:
    """Count the turns and handoffs among steps that were just written."""
    for step in steps:
        kind = step.get("type")
        if kind not in (AGENT_END, HANDOFF):
            continue
        data = step.get("data") if isinstance(step.get("data"), Mapping) else {}
        agent = str(data.get("agent") or step.get("agent") or "")
        status = str(data.get("status") or "unknown")
        if kind == AGENT_END:
            AGENT_TURNS.labels(agent, status).inc()
        else:
            HANDOFFS.labels(agent, str(data.get("to_agent") or ""), status).inc()


@dataclass
class ModelCall:
    """What :func:`model_call` records; set :attr:`usage` from the response."""

    agent: str
    model: str
    usage: Mapping[str, Any] = field(default_factory=dict)


@contextmanager
def model_call(agent: str, model: str) -> Iterator[ModelCall]:
    """Time one model call; counts it as ``error`` when the block raises, and adds the reported tokens."""
    call = ModelCall(agent, model)
    began = time.perf_counter()
    result = "error"
    try:
        yield call
        result = "ok"
    finally:
        MODEL_SECONDS.labels(agent, model).observe(time.perf_counter() - began)
        MODEL_CALLS.labels(agent, model, result).inc()
        for kind in ("prompt", "completion"):
            tokens = int(call.usage.get(f"{kind}_tokens") or 0)
            if tokens > 0:
                MODEL_TOKENS.labels(agent, model, kind).inc(tokens)


def record_tool(agent: str, tool: str, status: str, seconds: float) -> None:
    TOOL_CALLS.labels(agent, tool, "ok" if status == "ok" else "error").inc()
    TOOL_SECONDS.labels(agent, tool).observe(max(0.0, seconds))


_runtime: Any = None


def temporal_runtime() -> Any:
    """The process's Temporal Runtime with its metrics bridged into this registry (created once)."""
    global _runtime
    if _runtime is None:
        from agent_tree_worker.temporal_metrics import runtime_with_metrics

        runtime, bridge = runtime_with_metrics()
        REGISTRY.register(bridge)
        bridge.start()
        _runtime = runtime
    return _runtime


def serve(port: int, registry: CollectorRegistry = REGISTRY, host: str = "0.0.0.0") -> int | None:
    """Serve ``/metrics``; returns the bound port, or None when off or the port is taken.

    ``AUTO_PORT`` binds any free port (pods that share one host network, like the local platform's pod
    runner; the port is logged). A port in use is logged as an error and the worker runs on without
    metrics: metrics must never stop a worker from serving its queue.
    """
    if not port:
        return None
    wanted = 0 if port == AUTO_PORT else port
    try:
        server, _thread = start_http_server(wanted, addr=host, registry=registry)
    except OSError as exc:
        log.error("metrics: cannot listen on port %s (%s); this worker serves no metrics", wanted, exc)
        return None
    return int(server.server_address[1])
