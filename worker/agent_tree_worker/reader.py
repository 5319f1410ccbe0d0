"""Reading a run's history back: ``agent-tree history`` (PostgreSQL) and ``agent-tree logs -f``.

``logs -f`` uses the Redis stream as a wake-up and PostgreSQL as the record: on each batch of
stream entries it prints the steps PostgreSQL holds after the last one printed, so steps the
bounded stream no longer holds (or never got, while Redis was down) are still printed, in order.
With Redis down it polls PostgreSQL; with PostgreSQL down it prints the stream entries.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from agent_tree.contract import RUN_END, is_transient
from agent_tree.step_text import DeltaLine, history_header, history_table, render
from agent_tree_worker.store import RETRYABLE, TERMINAL, HistoryStore
from agent_tree_worker.stream import StepStream


class RunNotFound(LookupError):
    pass


async def resolve_run(ref: str, store: HistoryStore | None) -> str:
    """A workflow id from ``RUN``: a workflow id, or ``NAMESPACE/NAME`` (the AgentRun's latest run)."""
    if "/" in ref and not ref.startswith("agentrun."):
        if store is None:
            raise RunNotFound(f"{ref}: looking up NAMESPACE/NAME needs the history database (AGENT_TREE_DATABASE_URL)")
        namespace, _, name = ref.partition("/")
        row = await store.latest_run(namespace, name)
        if row is None:
            raise RunNotFound(f"no run of AgentRun {name!r} in namespace {namespace!r} in the history database")
        return row["workflow_id"]
    return ref


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


async def print_history(store: HistoryStore, ref: str, *, as_json: bool, out: TextIO = sys.stdout) -> int:
    workflow_id = await resolve_run(ref, store)
    run = await store.get_run(workflow_id)
    steps = await store.steps(workflow_id)
    if run is None and not steps:
        raise RunNotFound(f"no run {workflow_id!r} in the history database")
    if as_json:
        print(json.dumps({"run": _jsonable(run or {}), "steps": steps}, indent=2, default=str), file=out)
        return 0
    if run:
        took = (run["finished_at"] - run["started_at"]).total_seconds() if run["finished_at"] else None
        print("\n".join(history_header(run, took)), file=out)
    print("\n".join(history_table(steps)), file=out)
    return 0


async def follow_logs(
    ref: str,
    store: HistoryStore | None,
    stream: StepStream,
    *,
    follow: bool,
    as_json: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    poll_seconds: float = 0.5,
    deadline: float | None = None,
) -> str | None:
    """Print a run's steps; with ``follow`` keep printing until the run ends. Returns the final status.

    While following, live model text (``model_delta`` stream entries) is printed as it arrives
    (:class:`DeltaLine`); it is never in PostgreSQL, so a finished run's logs do not show it.
    """
    workflow_id = await resolve_run(ref, store)
    printed: set[tuple[int, ...]] = set()
    last: list[int] | None = None
    emit_line: Callable[[dict[str, Any]], str] = (lambda s: json.dumps(s, default=str)) if as_json else render
    deltas = DeltaLine(out, as_json)

    def emit(step: dict[str, Any]) -> None:
        nonlocal last
        key = tuple(step["ord"])
        if key in printed:
            return
        printed.add(key)
        if last is None or step["ord"] > last:
            last = step["ord"]
        deltas.end()
        print(emit_line(step), file=out, flush=True)

    pg_down: BaseException | None = None  # the last PostgreSQL error while it is unreachable
    noted = False  # the "showing the live stream only" note was printed for this outage

    async def from_store() -> bool:
        """Print new steps from PostgreSQL; False when it is unreachable."""
        nonlocal pg_down, noted
        try:
            for step in await store.steps(workflow_id, after=last):  # type: ignore[union-attr]
                emit(step)
        except RETRYABLE as exc:
            pg_down = exc
            return False
        pg_down, noted = None, False
        return True

    if not follow:
        if store is None:
            raise RunNotFound("reading a finished run needs the history database (AGENT_TREE_DATABASE_URL)")
        for step in await store.steps(workflow_id):  # unreachable: the error propagates (nothing else to read)
            emit(step)
        run = await store.get_run(workflow_id)
        return run["status"] if run else None
    if store is not None:
        await from_store()
    loop = asyncio.get_running_loop()
    stream_id, redis_ok, status = "0", bool(stream.url), None
    if not redis_ok:
        if pg_down is not None:
            raise pg_down  # no Redis configured and PostgreSQL unreachable: nothing to follow
        print("# no Redis configured: following PostgreSQL", file=err)
    try:
        while deadline is None or loop.time() < deadline:
            entries: list[dict[str, Any]] = []
            live_only = False  # the batch held model text only: nothing new in PostgreSQL to read
            if redis_ok:
                try:
                    async for entry_id, step in stream.follow(workflow_id, stream_id, block_ms=1000):
                        stream_id = entry_id
                        if is_transient(step):
                            deltas.add(step, last)
                            live_only = not entries and status is None
                        elif step["type"] == RUN_END:
                            status, live_only = step["data"].get("status"), False
                        else:
                            entries.append(step)
                            live_only = False
                except (RedisError, OSError) as exc:
                    if store is None or pg_down is not None:  # Redis was the only source left
                        if isinstance(exc, RedisError):
                            raise
                        raise RedisConnectionError(str(exc)) from exc
                    redis_ok = False
                    print(f"# Redis unavailable ({type(exc).__name__}); following PostgreSQL", file=err)
            else:
                await asyncio.sleep(poll_seconds)
            if live_only:
                continue
            if store is None or not await from_store():
                if not redis_ok:
                    raise pg_down  # type: ignore[misc]  # PostgreSQL was the only source left
                if store is not None and not noted:
                    print(
                        f"# PostgreSQL unavailable ({type(pg_down).__name__}); showing the live stream only", file=err
                    )
                    noted = True
                for step in sorted(entries, key=lambda s: s["ord"]):
                    emit(step)
            if status is None and store is not None and pg_down is None:
                try:
                    run = await store.get_run(workflow_id)
                except RETRYABLE:
                    run = None
                if run and run["status"] in TERMINAL:
                    status = run["status"]
                    await from_store()
            if status is not None:
                return status
        return None
    finally:
        deltas.end()
