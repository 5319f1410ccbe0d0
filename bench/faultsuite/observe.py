"""What the scenarios measure: side effects, duplicated steps, workflow executions, AgentRun status
histories (a watch), resident memory, PostgreSQL volume. Every check reads the real parts."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch

from agent_tree.contract import APPROVAL_DECIDED, APPROVAL_REQUESTED, TOOL_END, TOOL_START

GROUP, VERSION = "agenttree.io", "v1alpha1"
FINAL = {"Succeeded", "Failed", "Cancelled"}
RANK = {"": 0, "Pending": 0, "Running": 1, "AwaitingApproval": 1, "Succeeded": 2, "Failed": 2, "Cancelled": 2}
DEDUP_TYPES = (TOOL_START, TOOL_END, APPROVAL_REQUESTED, APPROVAL_DECIDED)


def effects(root: Path) -> Counter:
    """(key, step) -> completed executions of the counting tool (effects.log)."""
    log = root / "effects.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter(tuple(line.split()[:2]) for line in lines if line.strip())


def side_effects(root: Path, expected: dict[str, list[str]]) -> dict[str, int]:
    """Compare executions with distinct calls for the runs' keys (``expected``: key -> steps it calls)."""
    seen = effects(root)
    mine = {k: n for k, n in seen.items() if k[0] in expected}
    calls = sum(len(v) for v in expected.values())
    distinct = len(mine)
    executions = sum(mine.values())
    return {
        "calls": calls,
        "executions": executions,
        "duplicated": executions - distinct,
        "missing": sum(1 for key, steps in expected.items() for s in steps if (key, s) not in mine),
    }


class History:
    """Direct reads of the history database (asyncpg)."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        conn = await asyncpg.connect(self.url, timeout=5)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    async def step_count(self, run_ids: list[str]) -> int:
        try:
            rows = await self._fetch("SELECT count(*) AS n FROM steps WHERE run_id = ANY($1)", run_ids)
        except (OSError, asyncpg.PostgresError):
            return -1  # PostgreSQL is down: no progress can be seen
        return rows[0]["n"]

    async def steps(self, run_id: str) -> list[dict[str, Any]]:
        rows = await self._fetch("SELECT ord, type, data FROM steps WHERE run_id = $1 ORDER BY ord", run_id)
        return [{"ord": r["ord"], "type": r["type"], "data": json.loads(r["data"])} for r in rows]

    async def duplicates(self, run_ids: list[str]) -> tuple[int, dict[str, int]]:
        """Steps recorded twice under different ords (same type and content), and each run's step count."""
        duplicated, counts = 0, {}
        for run_id in run_ids:
            steps = await self.steps(run_id)
            counts[run_id] = len(steps)
            seen = Counter(
                (s["type"], json.dumps(s["data"], sort_keys=True)) for s in steps if s["type"] in DEDUP_TYPES
            )
            duplicated += sum(n - 1 for n in seen.values() if n > 1)
        return duplicated, counts

    async def run_rows(self, run_ids: list[str]) -> dict[str, str]:
        rows = await self._fetch("SELECT workflow_id, status FROM runs WHERE workflow_id = ANY($1)", run_ids)
        return {r["workflow_id"]: r["status"] for r in rows}

    async def volume(self) -> dict[str, int]:
        """Rows and bytes of the history tables (with indexes and TOAST)."""
        out = {}
        for table in ("runs", "steps", "tool_calls", "blobs", "audit"):
            try:
                rows = await self._fetch(f"SELECT count(*) AS n, pg_total_relation_size('{table}') AS b FROM {table}")
            except asyncpg.PostgresError:
                continue
            out[f"{table}_rows"], out[f"{table}_bytes"] = rows[0]["n"], rows[0]["b"]
        return out


async def executions_per_workflow(client: Any, workflow_ids: list[str]) -> dict[str, int]:
    """How many executions Temporal holds for each workflow id (more than one: the run was started twice)."""
    out = {}
    for wid in workflow_ids:
        out[wid] = len([w async for w in client.list_workflows(f'WorkflowId = "{wid}"')])
    return out


class RunWatch:
    """Watches the AgentRuns of a namespace in a thread and keeps every (time, phase, steps) seen per run.

    Survives an API server restart (it lists again and watches from there), so a status written while
    the operator or the API server restarts is still seen.
    """

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.api = k8s.CustomObjectsApi(k8s_config.new_client_from_config(config_file=str(kubeconfig)))
        self.namespace = namespace
        self.seen: dict[str, list[tuple[float, str, int, str]]] = {}
        self.created: dict[str, float] = {}
        self.objects: dict[str, dict[str, Any]] = {}
        self.changes = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> RunWatch:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(40)

    def _record(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        entry = (
            time.monotonic(),
            status.get("phase") or "",
            int(status.get("steps") or 0),
            obj["metadata"]["resourceVersion"],
        )
        with self.lock:
            history = self.seen.setdefault(name, [])
            if not history or history[-1][3] != entry[3]:
                history.append(entry)
                self.changes += 1
            self.objects[name] = obj

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                listing = self.api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "agentruns")
                for obj in listing["items"]:
                    self._record(obj)
                w = k8s_watch.Watch()
                for event in w.stream(
                    self.api.list_namespaced_custom_object, GROUP, VERSION, self.namespace, "agentruns",
                    resource_version=listing["metadata"]["resourceVersion"], timeout_seconds=5,
                ):  # fmt: skip
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._record(event["object"])
                    if self.stopping.is_set():
                        w.stop()
            except Exception:  # the API server restarts under us: list and watch again
                self.stopping.wait(0.3)

    def phases(self) -> dict[str, str]:
        with self.lock:
            return {name: h[-1][1] for name, h in self.seen.items()}

    def regressions(self) -> list[str]:
        """Each status write that went backwards: the phase to an earlier stage, or fewer steps."""
        found = []
        with self.lock:
            for name, history in self.seen.items():
                for (_, p1, s1, _), (_, p2, s2, rv) in itertools.pairwise(history):
                    if RANK.get(p2, 0) < RANK.get(p1, 0) or (s2 < s1 and p2 not in ("", "Pending")):
                        found.append(f"{name}: {p1}/{s1} steps -> {p2}/{s2} steps (resourceVersion {rv})")
        return found

    def final_at(self, name: str) -> float | None:
        with self.lock:
            return next((t for t, phase, _, _ in self.seen.get(name, []) if phase in FINAL), None)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]
