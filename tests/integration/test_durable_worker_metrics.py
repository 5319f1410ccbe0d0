"""Worker metrics on real Temporal, PostgreSQL and Redis: a model agent with a tool and an outputSchema
(one reply repaired, then one that stays invalid) run by in-process workers whose Temporal client uses
the metrics runtime; /metrics is scraped over HTTP and the counters moved by exactly what ran, the
Temporal SDK's own metrics included."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from agent_tree_worker import metrics
from durable_support import run_durable, tree_spec, unique
from fake_openai import FakeOpenAI
from prometheus_client.parser import text_string_to_metric_families

from agent_tree.contract.temporal import connect
from agent_tree.settings import AUTO_PORT

pytestmark = pytest.mark.integration

SCHEMA = {"type": "object", "required": ["decision"], "properties": {"decision": {"enum": ["approved", "rejected"]}}}


def tree(base_url: str, model: str) -> Any:
    return tree_spec(
        {
            "root": "desk",
            "agents": [
                {"name": "desk", "children": ["billing"]},
                {
                    "name": "billing",
                    "description": "Answers invoice questions.",
                    "outputSchema": SCHEMA,
                    "model": {"name": model, "baseUrl": base_url, "maxRepairs": 1},
                    "tools": [{"name": "lookup", "entrypoint": "durable_agents:lookup"}],
                },
            ],
        }
    )


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


async def test_worker_metrics_count_exactly_what_ran(
    temporal_address: str, database_url: str, redis_url: str, fake_openai: FakeOpenAI
) -> None:
    client = await connect(temporal_address, runtime=metrics.temporal_runtime())
    port = metrics.serve(AUTO_PORT, host="127.0.0.1")
    assert port
    model = unique("metrics-model")
    lookup = {"tool_calls": [("lookup", {"invoice_id": "4821"})]}
    fake_openai.scripts[model] = [
        lookup,
        {"content": json.dumps({"decision": "lost"})},  # breaks the schema: repaired
        {"content": json.dumps({"decision": "rejected"})},
    ]
    before = scrape(port)
    _handle, result = await run_durable(
        client,
        tree(fake_openai.base_url, model),
        namespace=unique("metrics"),
        tree="ap",
        user_input="Why was invoice #4821 rejected?",
        database_url=database_url,
        redis_url=redis_url,
    )
    assert result["status"] == "completed", result
    after = scrape(port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("agent_tree_worker_model_calls_total", agent="billing", model=model, result="ok") == 3
    assert delta("agent_tree_worker_model_call_duration_seconds_count", agent="billing", model=model) == 3
    assert delta("agent_tree_worker_model_tokens_total", agent="billing", model=model, kind="prompt") == 3 * 11
    assert delta("agent_tree_worker_model_tokens_total", agent="billing", model=model, kind="completion") == 3 * 7
    assert delta("agent_tree_worker_tool_calls_total", agent="billing", tool="lookup", result="ok") == 1
    assert delta("agent_tree_worker_tool_call_duration_seconds_count", agent="billing", tool="lookup") == 1
    assert delta("agent_tree_worker_handoffs_total", agent="billing", to_agent="desk", result="ok") == 1
    assert delta("agent_tree_worker_agent_turns_total", agent="billing", result="ok") == 1
    assert delta("agent_tree_worker_agent_turns_total", agent="desk", result="completed") == 1
    # Recorded in the workflow (replay-safe meter), exported through the Temporal bridge.
    assert delta("agent_tree_worker_structured_output_repairs_total", agent="billing") == 1
    assert delta("agent_tree_worker_structured_output_failures_total", agent="billing") == 0
    # The SDK's own metrics, same endpoint. Engine v2: ONE workflow per run (billing's turn ran as
    # activities on billing's task queue, not as a child workflow).
    assert delta("temporal_workflow_completed_total") == 1
    assert value(after, "temporal_workflow_task_execution_latency_seconds_count") > 0
    assert not [k for k in after if k[0].startswith("temporal_") and ("service_name", "temporal-core-sdk") in k[1]]

    # A reply that stays invalid after the one repair: a failure, counted once.
    failing = unique("metrics-model")
    fake_openai.scripts[failing] = [{"content": "no JSON here"}, {"content": json.dumps({"decision": 1})}]
    before = scrape(port)
    _handle, result = await run_durable(
        client,
        tree(fake_openai.base_url, failing),
        namespace=unique("metrics"),
        tree="ap",
        user_input="Why?",
        database_url=database_url,
        redis_url=redis_url,
    )
    assert result["status"] == "failed", result
    after = scrape(port)
    assert delta("agent_tree_worker_structured_output_repairs_total", agent="billing") == 1
    assert delta("agent_tree_worker_structured_output_failures_total", agent="billing") == 1
    assert delta("agent_tree_worker_handoffs_total", agent="billing", result="failed") == 1
    assert delta("agent_tree_worker_agent_turns_total", agent="desk", result="failed") == 1
