"""The processes of bench_api.py's live part: the step publisher, the SSE clients, the direct Redis readers.

Each role runs as its own process (``python bench/bench_api_live.py ROLE CONFIG.json OUT.json``),
prints ``ready`` on stdout when it is set up, and writes its measurements to OUT.json:

- ``publish``: writes the runs' history rows (``HistoryStore.start_run``), prints ``ready``, waits for
  ``go`` on stdin, then for each run writes ``steps`` steps at ``rate`` steps/s the way a worker does
  (``HistoryStore.write_steps`` = one PostgreSQL transaction, then ``StepStream.publish`` = XADD), each
  step carrying its send time (``data.sent``, taken just before the write), and ends each run with
  ``finish_run`` and the stream's end marker. No model is called: these steps are synthetic.
- ``clients``: one asyncio httpx client per SSE stream (``GET .../runs/{name}/events``), ``ready``
  when every stream got its ``snapshot``; for each client: the event ids in arrival order, whether it
  got ``end``, and per step the delivery lag (arrival time - ``data.sent``).
- ``xread``: the baseline, the smallest program doing the same delivery: one direct Redis ``XREAD
  BLOCK`` loop per run, the same lag per entry.

``clients`` and ``xread`` also report their own CPU seconds and event-loop delay (a 10 ms ticker),
so the report can show that the measuring side was not the bottleneck.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TYPES = ("agent_start", "tool_start", "tool_end", "reasoning", "agent_end")
TEXT = "Checking invoice #4821 against the purchase order, the vendor's terms and policy AP-4. " * 2


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LoopMonitor:
    """How late a 10 ms ticker wakes: the event loop's scheduling delay (a busy client shows here)."""

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.delays: list[float] = []
        self.task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.period)
            self.delays.append(time.perf_counter() - before - self.period)

    def start(self) -> None:
        self.task = asyncio.create_task(self._tick())

    def stop(self) -> dict[str, float]:
        if self.task is not None:
            self.task.cancel()
        d = sorted(self.delays) or [0.0]
        return {"p50_ms": d[len(d) // 2] * 1000, "p99_ms": d[int(len(d) * 0.99)] * 1000, "max_ms": d[-1] * 1000}


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def stdin_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


# --- publish ------------------------------------------------------------------------------------------


async def publish(cfg: dict[str, Any]) -> dict[str, Any]:
    from agent_tree_worker.store import HistoryStore
    from agent_tree_worker.stream import StepStream

    store = HistoryStore(cfg["database_url"], max_size=10)
    stream = StepStream(cfg["redis_url"])
    now = datetime.now(UTC)
    for run in cfg["runs"]:
        record = {
            "workflow_id": run["workflow_id"], "run_id": "bench", "namespace": cfg["namespace"], "name": run["name"],
            "uid": run["uid"], "tree": "bch-tree", "revision": "bench", "root": "supervisor",
            "input": "Why was invoice #4821 rejected?", "context": {}, "started_at": now,
        }  # fmt: skip
        await store.start_run(record, "bench")
    say("ready")
    await stdin_line()
    steps, rate = cfg["steps"], cfg["rate"]
    late: list[float] = []
    write_s: list[float] = []
    t0 = time.monotonic() + 0.05

    async def one(k: int, run: dict[str, Any]) -> None:
        wf = run["workflow_id"]
        offset = k / (len(cfg["runs"]) * rate)  # spread the runs' ticks over one period
        for i in range(1, steps + 1):
            target = t0 + offset + (i - 1) / rate
            pause = target - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            late.append(max(0.0, -pause))
            sent = time.time()
            step = {
                "ord": [i],
                "type": TYPES[(i - 1) % len(TYPES)],
                "agent": "supervisor",
                "data": {"sent": sent, "i": i, "text": TEXT},
                "ts": datetime.fromtimestamp(sent, UTC).isoformat(),
            }
            began = time.perf_counter()
            stored = await store.write_steps(wf, [step])
            await stream.publish(wf, stored)
            write_s.append(time.perf_counter() - began)
        result = {"status": "completed", "answer": f"{steps} steps", "steps": steps, "token_usage": 0}
        await store.finish_run(wf, result, "bench")
        await stream.publish(wf, [], final={"status": "completed", "answer": result["answer"]})

    began = time.monotonic()
    await asyncio.gather(*(one(k, run) for k, run in enumerate(cfg["runs"])))
    took = time.monotonic() - began
    await store.close()
    await stream.close()
    late.sort()
    write_s.sort()
    return {
        "steps_written": len(write_s),
        "seconds": took,
        "steps_per_s": len(write_s) / took,
        "schedule_late_p99_ms": late[int(len(late) * 0.99)] * 1000,
        "write_p50_ms": write_s[len(write_s) // 2] * 1000,
        "write_p99_ms": write_s[int(len(write_s) * 0.99)] * 1000,
    }


async def finish(tasks: list[asyncio.Task], states: list[dict[str, Any]], deadline_s: float) -> None:
    """Wait for every stream up to the deadline; one still open then is a failed client (not a crash)."""
    _done, pending = await asyncio.wait(tasks, timeout=deadline_s)
    for task in pending:
        task.cancel()
    for task, state in zip(tasks, states, strict=True):
        if task in pending:
            state["error"] = state["error"] or f"no end within the deadline ({deadline_s:.0f}s)"


# --- clients --------------------------------------------------------------------------------------------


async def follow(http: Any, url: str, token: str, state: dict[str, Any], connected: asyncio.Event) -> None:
    """One SSE client: every event id in order of arrival, and each step's lag."""
    ids: list[str] = state["ids"]
    lags: list[float] = state["lags"]
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    buf = b""
    try:
        async with http.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                state["error"] = f"HTTP {response.status_code}: {(await response.aread())[:300]!r}"
                return
            async for chunk in response.aiter_raw():
                now = time.time()
                buf += chunk
                *frames, buf = buf.split(b"\n\n")
                for raw in frames:
                    event = event_id = data = None
                    for line in raw.split(b"\n"):
                        if line.startswith(b"event: "):
                            event = line[7:].decode()
                        elif line.startswith(b"id: "):
                            event_id = line[4:].decode()
                        elif line.startswith(b"data: "):
                            data = line[6:]
                    if event == "snapshot":
                        state["snapshot"] = True
                        connected.set()
                    elif event == "end":
                        state["end"] = json.loads(data or b"{}")
                        return
                    elif event == "reconnect":
                        state["reconnects"] += 1
                        state["error"] = "told to reconnect (fell behind)"
                        return
                    elif event_id is not None:
                        ids.append(event_id)
                        step = json.loads(data or b"{}")
                        lags.append(now - step["data"]["sent"])
    except Exception as exc:
        state["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        connected.set()


async def clients(cfg: dict[str, Any]) -> dict[str, Any]:
    import httpx

    monitor = LoopMonitor()
    monitor.start()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    timeout = httpx.Timeout(connect=60.0, read=120.0, write=30.0, pool=None)
    states, tasks, events = [], [], []
    async with httpx.AsyncClient(base_url=cfg["api_url"], limits=limits, timeout=timeout) as http:
        connect_began = time.monotonic()
        for name in cfg["follow"]:
            state = {"run": name, "ids": [], "lags": [], "end": None, "error": None, "snapshot": False, "reconnects": 0}
            url = f"/api/v1/namespaces/{cfg['namespace']}/runs/{name}/events"
            connected = asyncio.Event()
            states.append(state)
            events.append(connected)
            tasks.append(asyncio.create_task(follow(http, url, cfg["token"], state, connected)))
            if len(tasks) % 50 == 0:
                await asyncio.sleep(0)  # let the first connections proceed
        for e in events:
            await e.wait()
        connect_s = time.monotonic() - connect_began
        cpu_before, began = cpu_seconds(), time.monotonic()
        say("ready")
        await finish(tasks, states, cfg["deadline_s"])
        wall = time.monotonic() - began
        cpu = cpu_seconds() - cpu_before
    return {"clients": states, "connect_s": connect_s, "cpu_s": cpu, "wall_s": wall, "loop_delay": monitor.stop()}


# --- xread (the baseline) -----------------------------------------------------------------------------


async def xread(cfg: dict[str, Any]) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from agent_tree.contract import RUN_END, decode_step, ord_str
    from agent_tree.naming import stream_key

    monitor = LoopMonitor()
    monitor.start()
    redis = aioredis.Redis.from_url(cfg["redis_url"])
    await redis.ping()

    async def reader(run: dict[str, Any], state: dict[str, Any]) -> None:
        key, last = stream_key(run["workflow_id"]), "0-0"
        own = aioredis.Redis.from_url(cfg["redis_url"])  # one connection per reader, as one per client
        try:
            while state["end"] is None:
                reply = await own.xread({key: last}, block=1000, count=1000)
                now = time.time()
                for _key, entries in reply or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        step = decode_step(fields)
                        if step["type"] == RUN_END:
                            state["end"] = step["data"]
                            break
                        state["ids"].append(ord_str(step["ord"]))
                        state["lags"].append(now - step["data"]["sent"])
        finally:
            await own.aclose()

    cpu_before, began = cpu_seconds(), time.monotonic()
    states = [{"run": run["name"], "ids": [], "lags": [], "end": None, "error": None} for run in cfg["runs"]]
    tasks = [asyncio.create_task(reader(run, state)) for run, state in zip(cfg["runs"], states, strict=True)]
    say("ready")
    await finish(tasks, states, cfg["deadline_s"])
    wall, cpu = time.monotonic() - began, cpu_seconds() - cpu_before
    await redis.aclose()
    return {"clients": states, "cpu_s": cpu, "wall_s": wall, "loop_delay": monitor.stop()}


ROLES = {"publish": publish, "clients": clients, "xread": xread}

if __name__ == "__main__":
    role, config, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    result = asyncio.run(ROLES[role](json.loads(config.read_text())))
    out.write_text(json.dumps(result))
