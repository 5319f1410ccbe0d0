"""The scenarios in order, at a size (reduced: the test command; medium; full: the issue's numbers)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faultsuite import load, operator_faults, workers
from faultsuite.stack import Stack


@dataclass(frozen=True)
class Size:
    worker_kills: int
    worker_runs: int
    operator_kills: int
    operator_runs: int
    postgres: int
    redis: int
    temporal: int
    apiserver: int
    service_runs: int
    load_runs: int
    load_batch: int
    load_max_minutes: float
    soak_minutes: float
    soak_rate: float


SIZES = {
    "reduced": Size(3, 4, 2, 4, 1, 1, 1, 1, 2, 30, 10, 0, 0, 0),
    "medium": Size(10, 10, 5, 10, 2, 2, 1, 1, 4, 300, 50, 0, 5, 0.5),
    "full": Size(20, 20, 10, 20, 5, 5, 3, 3, 5, 2000, 100, 0, 30, 1.0),
}
SCENARIOS = ("workers", "operator", "services", "load", "soak")


async def run(
    root: Path, size: Size, only: tuple[str, ...] = SCENARIOS, say=print, progress=lambda _results: None
) -> list[dict[str, Any]]:
    """Every scenario of ``only`` on one private stack (started here, stopped at the end even on failure);
    ``progress(results)`` after each scenario (the CLI writes its report then, so a cut run keeps its part)."""
    results: list[dict[str, Any]] = []

    def done(result: dict[str, Any], began: float) -> None:
        result["scenario_seconds"] = round(time.monotonic() - began, 1)
        results.append(result)
        progress(results)
        say(f"{result['fault']}: {result['completed']}/{result['runs']} completed, {result['lost']} lost, "
            f"max recover {result['max_recover_seconds']} s ({result['scenario_seconds']} s)")  # fmt: skip

    async with Stack(root, kube=True) as stack:
        # the faults first (the table that must exist), then load and the soak
        if "workers" in only and size.worker_kills:
            began = time.monotonic()
            done(await workers.worker_kills(stack, size.worker_kills, size.worker_runs), began)
        if "operator" in only and size.operator_kills:
            began = time.monotonic()
            done(await operator_faults.operator_kills(stack, size.operator_kills, size.operator_runs), began)
        if "services" in only:
            for service in operator_faults.SERVICES:
                reps = getattr(size, service)
                if reps:
                    began = time.monotonic()
                    done(await operator_faults.service_restarts(stack, service, reps, size.service_runs), began)
        if "load" in only and size.load_runs:
            began = time.monotonic()
            done(await load.batches(stack, size.load_runs, size.load_batch, max_minutes=size.load_max_minutes), began)
        if "soak" in only and size.soak_minutes:
            began = time.monotonic()
            done(await load.soak(stack, size.soak_minutes, size.soak_rate), began)
    return results
