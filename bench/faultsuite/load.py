"""Load through the operator: runs in batches, and a soak at a steady rate, with latencies, success rate,
resident memory of the operator, the workers and the REST API over time, and PostgreSQL rows and bytes
per run. Every run is also followed through ``agent-tree api`` (one SSE stream per run until ``end``,
and a runs list every 5 s: ``faultsuite.api_watch``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from faultsuite.api_watch import Watchers
from faultsuite.observe import FINAL, History, RunWatch, percentile
from faultsuite.stack import Stack, create_runs, poll


class Sampler:
    """Resident memory (MiB) of the operator, of all workers and of the API, every ``every`` seconds, in a task."""

    def __init__(self, stack: Stack, every: float = 2.0, api: Any = None) -> None:
        self.stack, self.every, self.api = stack, every, api
        self.samples: list[tuple[float, float, float, float]] = []
        self.began = time.monotonic()
        self.task: asyncio.Task | None = None

    async def _loop(self) -> None:
        while True:
            op = self.stack.operator.rss_kib() if self.stack.operator else 0
            api = self.api.rss_kib() if self.api else 0
            at = time.monotonic() - self.began
            self.samples.append((at, op / 1024, self.stack.worker_rss_kib() / 1024, api / 1024))
            await asyncio.sleep(self.every)

    def __enter__(self) -> Sampler:
        self.task = asyncio.get_running_loop().create_task(self._loop())
        return self

    def __exit__(self, *exc: Any) -> None:
        self.task.cancel()  # type: ignore[union-attr]

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {}
        first, last = self.samples[0], self.samples[-1]
        return {
            "operator_mib": {"first": round(first[1], 1), "last": round(last[1], 1),
                             "max": round(max(s[1] for s in self.samples), 1)},
            "workers_mib": {"first": round(first[2], 1), "last": round(last[2], 1),
                            "max": round(max(s[2] for s in self.samples), 1)},
            "api_mib": {"first": round(first[3], 1), "last": round(last[3], 1),
                        "max": round(max(s[3] for s in self.samples), 1)},
        }  # fmt: skip


def _latencies(watch: RunWatch, created: dict[str, float]) -> list[float]:
    out = []
    for name, at in created.items():
        final = watch.final_at(name)
        if final is not None:
            out.append(final - at)
    return out


async def _volume(stack: Stack, runs: int) -> dict[str, Any]:
    volume = await History(stack.postgres.url).volume()
    total = volume.get("runs_rows") or 1
    return {
        "tables": volume,
        "step_rows_per_run": round(volume.get("steps_rows", 0) / total, 1),
        "bytes_per_run": round(sum(v for k, v in volume.items() if k.endswith("_bytes")) / total),
        "runs_in_database": total,
    }


async def batches(stack: Stack, total: int, batch: int, within: float = 600, max_minutes: float = 0) -> dict[str, Any]:
    """``total`` AgentRuns through the operator, ``batch`` at a time (each batch waits for the previous);
    with ``max_minutes``, no batch starts after that time (the result says how many runs were made)."""
    stack.set_tool_seconds(0.05)
    watch = RunWatch(stack.kube.kubeconfig, stack.namespace).start()  # type: ignore[union-attr]
    created: dict[str, float] = {}
    began = time.monotonic()
    try:
        async with Watchers(stack) as api:
            with Sampler(stack, api=api.api) as sampler:
                while len(created) < total and not (max_minutes and time.monotonic() - began > max_minutes * 60):
                    at = time.monotonic()
                    names = create_runs(stack, min(batch, total - len(created)), "load")
                    created.update(dict.fromkeys(names, at))
                    api.follow(names)
                    with contextlib.suppress(TimeoutError):
                        await poll(
                            lambda n=names: all(watch.phases().get(x) in FINAL for x in n), "a batch", within, 0.3
                        )
                elapsed = time.monotonic() - began
                await api.settled(60)
            followed = api.summary()
        phases = watch.phases()
    finally:
        watch.stop()
    latencies = _latencies(watch, created)
    succeeded = sum(1 for n in created if phases.get(n) == "Succeeded")
    made = len(created)
    cut = f" (of {total}: cut at {max_minutes:g} min)" if made < total else ""
    return {
        "fault": f"load: {made} runs in batches of {batch}{cut}",
        "repetitions": 0,
        "runs": made,
        "completed": succeeded,
        "lost": made - succeeded,
        "duplicated_steps": 0,
        "duplicated_side_effects": 0,
        "max_recover_seconds": 0.0,
        "success_rate": round(succeeded / made, 4) if made else 0.0,
        "seconds": round(elapsed, 1),
        "runs_per_second": round(made / elapsed, 2) if elapsed else 0.0,
        "latency_seconds": {
            "p50": round(percentile(latencies, 50), 2),
            "p99": round(percentile(latencies, 99), 2),
            "max": round(max(latencies, default=0.0), 2),
        },
        "memory": sampler.summary(),
        "api": followed,
        "postgres": await _volume(stack, made),
    }


async def soak(stack: Stack, minutes: float, rate: float, within: float = 600) -> dict[str, Any]:
    """A steady ``rate`` of AgentRuns per second for ``minutes``; latency and memory per minute."""
    stack.set_tool_seconds(0.05)
    watch = RunWatch(stack.kube.kubeconfig, stack.namespace).start()  # type: ignore[union-attr]
    created: dict[str, float] = {}
    began = time.monotonic()
    try:
        async with Watchers(stack) as api:
            with Sampler(stack, every=5.0, api=api.api) as sampler:
                while time.monotonic() - began < minutes * 60:
                    names = create_runs(stack, 1, "soak")
                    created.update(dict.fromkeys(names, time.monotonic()))
                    api.follow(names)
                    next_at = began + len(created) / rate
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    await poll(
                        lambda: all(watch.phases().get(n) in FINAL for n in created), "the soak's runs", within, 1
                    )
                await api.settled(60)
            followed = api.summary()
        phases = watch.phases()
    finally:
        watch.stop()
    per_minute = []
    for minute in range(int(minutes + 0.999)):
        lo, hi = began + minute * 60, began + (minute + 1) * 60
        mine = {n: t for n, t in created.items() if lo <= t < hi}
        lat = _latencies(watch, mine)
        mem = [s for s in sampler.samples if minute * 60 <= s[0] < (minute + 1) * 60]
        per_minute.append({
            "minute": minute + 1, "runs": len(mine),
            "succeeded": sum(1 for n in mine if phases.get(n) == "Succeeded"),
            "p50": round(percentile(lat, 50), 2), "p99": round(percentile(lat, 99), 2),
            "operator_mib": round(max((s[1] for s in mem), default=0.0), 1),
            "workers_mib": round(max((s[2] for s in mem), default=0.0), 1),
            "api_mib": round(max((s[3] for s in mem), default=0.0), 1),
        })  # fmt: skip
    succeeded = sum(1 for n in created if phases.get(n) == "Succeeded")
    return {
        "fault": f"soak: {rate:g} runs/s for {minutes:g} min",
        "repetitions": 0,
        "runs": len(created),
        "completed": succeeded,
        "lost": len(created) - succeeded,
        "duplicated_steps": 0,
        "duplicated_side_effects": 0,
        "max_recover_seconds": 0.0,
        "success_rate": round(succeeded / len(created), 4) if created else 0.0,
        "per_minute": per_minute,
        "memory": sampler.summary(),
        "api": followed,
        "postgres": await _volume(stack, len(created)),
    }
