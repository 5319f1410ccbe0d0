"""Retry and fork on the worker side: recording every call's result, and answering a fork's calls
from its source's records (docs/run-control.md, "Retry and fork").

Every model call, tool call and planner call is recorded in ``recorded_calls`` under the ord of the
step that records its outcome (its *key*, see :func:`agent_tree.contract.control.reused`). A forked
run's ``runs`` row names its source and the ord of the last reused step; a call of the fork whose key
is at or before that ord gets the source's recorded result at the same key, and nothing is called.
The workflow is deterministic, so up to that step the fork issues the same calls at the same keys.
Steps the fork writes up to that ord carry ``data.reused = true``.
"""

from __future__ import annotations

from typing import Any

from temporalio.exceptions import ApplicationError

from agent_tree.contract import Step, spec_revision
from agent_tree.contract.control import reused
from agent_tree_worker.store import HistoryStore

CACHE_MAX = 10_000  # runs whose fork status a worker process remembers (a run's never changes)


class Forks:
    """The fork side of one worker process's activities (a :class:`HistoryStore`, or None: no history)."""

    def __init__(self, store: HistoryStore | None) -> None:
        self.store = store
        self._sources: dict[str, tuple[str, list[int]] | None] = {}
        self._specs: set[str] = set()

    async def source(self, run_id: str) -> tuple[str, list[int]] | None:
        """(source workflow id, last reused ord) of a forked run; None for any other run."""
        if self.store is None:
            return None
        if run_id not in self._sources:
            if len(self._sources) >= CACHE_MAX:
                self._sources.clear()
            # The run row is written by the run's first activity (start_run), before any call.
            self._sources[run_id] = await self.store.fork_of(run_id)
        return self._sources[run_id]

    async def mark(self, run_id: str, steps: list[Step]) -> list[Step]:
        """``steps`` with ``data.reused = true`` on those a fork took from its source."""
        source = await self.source(run_id) if steps else None
        if source is None:
            return steps
        return [{**s, "data": {**s["data"], "reused": True}} if reused(s["ord"], source[1]) else s for s in steps]

    async def reuse(self, run_id: str, key: list[int] | None, kind: str, what: str) -> tuple[bool, Any]:
        """``(True, result)`` when this call of a fork is answered from its source, else ``(False, None)``.

        Raises:
            ApplicationError: (non-retryable) the source has no record for the call: it ran before
                calls were recorded, or the fork took another path (another input or tree).
        """
        source = await self.source(run_id) if key is not None else None
        if source is None or not reused(key, source[1]):  # type: ignore[arg-type]
            return False, None
        row = await self.store.recorded_call(source[0], key)  # type: ignore[union-attr, arg-type]
        if row is None or row["kind"] != kind or (kind == "tool" and row["result"].get("tool_name") != what):
            found = "nothing" if row is None else f"a {row['kind']} call ({row['result'].get('tool_name', '')})"
            raise ApplicationError(
                f"fork of {source[0]}: the source recorded {found} at step ord {key} where this run calls "
                f"{kind} {what!r}; the runs differ before spec.forkFrom.step (another input, context or tree): "
                "fork from an earlier step",
                type="ForkDiverged",
                non_retryable=True,
            )
        return True, row["result"]

    async def record(self, run_id: str, key: list[int] | None, kind: str, result: Any) -> None:
        if self.store is not None and key is not None:
            await self.store.record_call(run_id, key, kind, result)

    async def remember_spec(self, spec: dict[str, Any]) -> None:
        """Store the tree spec a run is pinned to (once per revision and process): a fork reads it."""
        if self.store is None:
            return
        revision = spec_revision(spec)
        if revision not in self._specs:
            await self.store.put_tree_spec(revision, spec)
            self._specs.add(revision)
