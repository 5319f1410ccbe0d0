"""Worker metrics: step counting, model and tool call helpers, the /metrics server (fixed, auto and taken
ports) and the Temporal SDK bridge with a fake metric buffer. (tests/integration/test_durable_worker_metrics.py
runs them on a real worker; tests/e2e/test_autoscale.py scrapes worker pods.)"""

from __future__ import annotations

import socket
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import pytest
from agent_tree_worker import metrics
from agent_tree_worker.temporal_metrics import TemporalMetricsBridge, label_set, prometheus_name
from agent_tree_worker.tool_runs import execute_tool
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_GAUGE,
    BUFFERED_METRIC_KIND_HISTOGRAM,
)

from agent_tree import AgentNode
from agent_tree.settings import AUTO_PORT


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_record_steps_counts_turn_ends_and_handoffs_by_the_agent_they_are_about():
    turns = sample("agent_tree_worker_agent_turns_total", agent="triage", result="ok")
    handoffs = sample("agent_tree_worker_handoffs_total", agent="triage", to_agent="supervisor", result="ok")
    root = sample("agent_tree_worker_agent_turns_total", agent="supervisor", result="completed")
    metrics.record_steps(
        [
            {"type": "agent_start", "agent": "triage", "data": {"type": "agent_start", "agent": "triage"}},
            {"type": "agent_end", "agent": "triage", "data": {"type": "agent_end", "agent": "triage", "status": "ok"}},
            {
                "type": "handoff",
                "agent": "triage",
                "data": {"type": "handoff", "agent": "triage", "to_agent": "supervisor", "status": "ok"},
            },
            {"type": "tool_end", "agent": "triage", "data": {"type": "tool_end", "tool": "x", "status": "ok"}},
            {"type": "agent_end", "agent": "supervisor", "data": {"agent": "supervisor", "status": "completed"}},
        ]
    )
    assert sample("agent_tree_worker_agent_turns_total", agent="triage", result="ok") == turns + 1
    assert (
        sample("agent_tree_worker_handoffs_total", agent="triage", to_agent="supervisor", result="ok") == handoffs + 1
    )
    assert sample("agent_tree_worker_agent_turns_total", agent="supervisor", result="completed") == root + 1


def test_model_call_records_latency_result_and_tokens():
    ok = sample("agent_tree_worker_model_calls_total", agent="a", model="m", result="ok")
    err = sample("agent_tree_worker_model_calls_total", agent="a", model="m", result="error")
    prompt = sample("agent_tree_worker_model_tokens_total", agent="a", model="m", kind="prompt")
    with metrics.model_call("a", "m") as call:
        call.usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    with pytest.raises(RuntimeError), metrics.model_call("a", "m"):
        raise RuntimeError("endpoint down")
    assert sample("agent_tree_worker_model_calls_total", agent="a", model="m", result="ok") == ok + 1
    assert sample("agent_tree_worker_model_calls_total", agent="a", model="m", result="error") == err + 1
    assert sample("agent_tree_worker_model_tokens_total", agent="a", model="m", kind="prompt") == prompt + 11
    assert sample("agent_tree_worker_model_call_duration_seconds_count", agent="a", model="m") >= 2


async def test_tool_calls_are_recorded_by_tool_and_status():
    node = AgentNode("spec-agent", "d")

    def fine(x: int) -> dict:
        return {"x": x}

    def broken() -> dict:
        raise ValueError("nope")

    def not_json() -> Any:
        return object()

    for tool in (fine, broken, not_json):
        node.add_tool(tool)
    before = {
        (t, s): sample("agent_tree_worker_tool_calls_total", agent="spec-agent", tool=t, result=s)
        for t in ("fine", "broken", "not_json")
        for s in ("ok", "error")
    }
    assert (await execute_tool(node, "fine", {"x": 1}, 5)).status == "ok"
    assert (await execute_tool(node, "broken", {}, 5)).status == "error"
    assert (await execute_tool(node, "not_json", {}, 5)).status == "error"
    for (tool, status), expected in {("fine", "ok"): 1, ("broken", "error"): 1, ("not_json", "error"): 1}.items():
        got = sample("agent_tree_worker_tool_calls_total", agent="spec-agent", tool=tool, result=status)
        assert got == before[(tool, status)] + expected, (tool, status)
    assert sample("agent_tree_worker_tool_call_duration_seconds_count", agent="spec-agent", tool="fine") >= 1


def test_serve_auto_port_fixed_port_off_and_taken_port():
    registry = CollectorRegistry()
    assert metrics.serve(0, registry=registry) is None
    port = metrics.serve(AUTO_PORT, registry=registry, host="127.0.0.1")
    assert port and port > 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        assert metrics.serve(busy, registry=registry, host="127.0.0.1") is None  # logged, the worker goes on


# --- the Temporal bridge -------------------------------------------------------------------------------


@dataclass
class FakeMetric:
    name: str
    kind: int
    unit: str | None = None
    description: str | None = None


@dataclass
class FakeUpdate:
    metric: FakeMetric
    value: float
    attributes: dict[str, Any] = field(default_factory=dict)


class FakeBuffer:
    def __init__(self) -> None:
        self.updates: list[FakeUpdate] = []

    def retrieve_updates(self) -> list[FakeUpdate]:
        out, self.updates = self.updates, []
        return out


def test_names_and_labels():
    assert prometheus_name("temporal_request", BUFFERED_METRIC_KIND_COUNTER, None) == "temporal_request_total"
    assert prometheus_name("x_total", BUFFERED_METRIC_KIND_COUNTER, None) == "x_total"
    assert prometheus_name("temporal_request_latency", BUFFERED_METRIC_KIND_HISTOGRAM, "s") == (
        "temporal_request_latency_seconds"
    )
    assert prometheus_name("temporal_num_pollers", BUFFERED_METRIC_KIND_GAUGE, None) == "temporal_num_pollers"
    sdk = {"service_name": "temporal-core-sdk", "namespace": "default", "task_queue": "q", "eager": True}
    assert label_set("temporal_activity_task_received", sdk) == (
        ("eager", "true"),
        ("namespace", "default"),
        ("task_queue", "q"),
    )
    own = {"service_name": "s", "namespace": "default", "task_queue": "q", "workflow_type": "W", "agent": "billing"}
    assert label_set("agent_tree_worker_structured_output_repairs", own) == (("agent", "billing"),)


def test_bridge_accumulates_counters_keeps_last_gauges_and_buckets_histograms():
    buffer = FakeBuffer()
    bridge = TemporalMetricsBridge(buffer)
    registry = CollectorRegistry()
    registry.register(bridge)
    counter = FakeMetric("temporal_request", BUFFERED_METRIC_KIND_COUNTER, None, "Count of requests")
    gauge = FakeMetric("temporal_num_pollers", BUFFERED_METRIC_KIND_GAUGE)
    histogram = FakeMetric("temporal_request_latency", BUFFERED_METRIC_KIND_HISTOGRAM, "s")
    attrs = {"service_name": "temporal-core-sdk", "operation": "PollWorkflowTaskQueue"}
    buffer.updates = [
        FakeUpdate(counter, 1, attrs),
        FakeUpdate(counter, 2, attrs),
        FakeUpdate(counter, 5, {"operation": "StartWorkflowExecution"}),
        FakeUpdate(gauge, 3, {"poller_type": "workflow_task"}),
        FakeUpdate(gauge, 1, {"poller_type": "workflow_task"}),
        FakeUpdate(histogram, 0.004, attrs),
        FakeUpdate(histogram, 0.2, attrs),
        FakeUpdate(histogram, 999.0, attrs),
    ]
    bridge.drain()  # the background drain; a scrape drains again
    buffer.updates = [FakeUpdate(counter, 10, attrs)]
    text = generate_latest(registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    poll = (("operation", "PollWorkflowTaskQueue"),)
    assert samples[("temporal_request_total", poll)] == 13
    assert samples[("temporal_request_total", (("operation", "StartWorkflowExecution"),))] == 5
    assert samples[("temporal_num_pollers", (("poller_type", "workflow_task"),))] == 1
    assert samples[("temporal_request_latency_seconds_count", poll)] == 3
    assert samples[("temporal_request_latency_seconds_sum", poll)] == pytest.approx(999.204)
    assert samples[("temporal_request_latency_seconds_bucket", (("le", "0.005"), *poll))] == 1
    assert samples[("temporal_request_latency_seconds_bucket", (("le", "0.25"), *poll))] == 2
    assert samples[("temporal_request_latency_seconds_bucket", (("le", "+Inf"), *poll))] == 3
    assert "# HELP temporal_request_total Count of requests" in text


def test_bridge_before_the_runtime_exists_and_background_drain():
    class NotYet:
        def retrieve_updates(self):
            raise RuntimeError("Attempting to retrieve updates before runtime created")

    bridge = TemporalMetricsBridge(NotYet())
    bridge.drain()  # no error
    assert list(bridge.collect()) == []
    bridge.start()
    bridge.stop()
