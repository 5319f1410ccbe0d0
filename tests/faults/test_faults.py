"""The reduced fault suite (bench/faults.py --size reduced, scenario by scenario): load through the
operator, workers killed mid tool call / mid model call / while awaiting approval, the operator killed
with runs in flight, and one restart of PostgreSQL, Redis, the Temporal dev server and the kube-apiserver.
Each asserts: no run lost, no side effect run twice, no step recorded twice, everything converged.
"""

from __future__ import annotations

import math

import pytest
from faultsuite import load, operator_faults, workers
from faultsuite.stack import Stack
from faultsuite.suite import SIZES

pytestmark = pytest.mark.faults
SIZE = SIZES["reduced"]


def assert_nothing_lost_or_repeated(result: dict) -> None:
    assert result["completed"] == result["runs"] and result["lost"] == 0, result
    assert result["duplicated_steps"] == 0, result
    assert result["duplicated_side_effects"] == 0, result
    assert math.isfinite(result["max_recover_seconds"]), result


async def test_load_through_the_operator_completes_every_run(stack: Stack) -> None:
    result = await load.batches(stack, SIZE.load_runs, SIZE.load_batch)
    assert result["success_rate"] == 1.0, result
    assert result["postgres"]["step_rows_per_run"] > 0 and result["postgres"]["bytes_per_run"] > 0, result
    assert result["memory"]["operator_mib"]["max"] > 0 and result["memory"]["workers_mib"]["max"] > 0, result
    assert_nothing_lost_or_repeated(result)
    # Every run was also followed through `agent-tree api` to its end, each step once and in order.
    api = result["api"]
    assert api["followed"] == result["runs"] and api["ended_completed"] == result["runs"], api
    assert api["out_of_order_or_repeated"] == 0 and api["events"] >= result["runs"], api
    assert api["list_requests"] > 0 and not api["list_errors"], api
    assert result["memory"]["api_mib"]["max"] > 0, result


async def test_worker_kills_mid_tool_model_and_approval_lose_and_repeat_nothing(stack: Stack) -> None:
    result = await workers.worker_kills(stack, SIZE.worker_kills, SIZE.worker_runs)
    assert result["repetitions"] == SIZE.worker_kills, result
    assert sorted(k["point"] for k in result["kills"]) == ["approval", "model", "tool"], result["kills"]
    assert result["side_effects"]["missing"] == 0, result
    assert_nothing_lost_or_repeated(result)
    # a killed worker's activity is retried after its heartbeat timeout (8 s), not its 150 s start-to-close
    assert result["max_recover_seconds"] < 90, result["kills"]


async def test_operator_kills_converge_without_double_starts_or_regressions(stack: Stack) -> None:
    result = await operator_faults.operator_kills(stack, SIZE.operator_kills, SIZE.operator_runs)
    assert result["repetitions"] == SIZE.operator_kills, result
    assert result["started_twice"] == 0, result
    assert result["status_regressions"] == [], result
    assert_nothing_lost_or_repeated(result)


@pytest.mark.parametrize("service", operator_faults.SERVICES)
async def test_service_restart_mid_run_loses_no_run_and_no_row(stack: Stack, service: str) -> None:
    result = await operator_faults.service_restarts(stack, service, getattr(SIZE, service), SIZE.service_runs)
    assert result["repetitions"] == 1 and result["rows_lost"] == 0 and result["started_twice"] == 0, result
    assert result["status_regressions"] == [], result
    assert_nothing_lost_or_repeated(result)
