"""Helpers of the durable-runs integration tests: workers (in-process and as processes), runs, polling."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agent_tree_worker.activities import Activities
from agent_tree_worker.config import WorkerConfig
from agent_tree_worker.main import build_worker
from agent_tree_worker.store import HistoryStore
from agent_tree_worker.stream import StepStream
from services import REPO
from temporalio.client import Client

from agent_tree import naming
from agent_tree.compiler import compile_tree
from agent_tree.contract import run_input
from agent_tree.contract.temporal import start_run
from agent_tree.events import event_hooks
from agent_tree.spec import AgentTreeSpec

HERE = Path(__file__).resolve().parent
EXAMPLE = REPO / "examples" / "invoice"
API_KEY = "sk-test-agent-tree"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def in_process_workers(
    client: Client, queues: list[str], database_url: str | None, redis_url: str | None
) -> AsyncIterator[list[Any]]:
    """One in-process worker per queue (same code as ``agent-tree worker``), stopped on exit."""
    for path in (str(HERE), str(EXAMPLE)):
        if path not in sys.path:
            sys.path.insert(0, path)
    store = HistoryStore(database_url) if database_url else None
    stream = StepStream(redis_url)
    workers = []
    for queue in queues:
        config = WorkerConfig.load(task_queue=queue, env={})
        workers.append(build_worker(client, config, Activities(store, stream, identity=f"test@{queue}"), "test"))
    async with contextlib.AsyncExitStack() as stack:
        for w in workers:
            await stack.enter_async_context(w)
        yield workers
    await stream.close()
    if store is not None:
        await store.close()


class WorkerProcess:
    """``agent-tree worker --tree NS/NAME --agent NAME`` as a subprocess (its log in ``log``)."""

    def __init__(self, namespace: str, tree: str, agent: str, env: dict[str, str], log_dir: Path) -> None:
        self.argv = [
            str(Path(sys.executable).parent / "agent-tree"),
            "worker",
            "--tree",
            f"{namespace}/{tree}",
            "--agent",
            agent,
        ]
        self.env = env
        self.agent = agent
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.log_dir / f"worker-{self.agent}-{self.starts}.log"

    def start(self) -> WorkerProcess:
        self.starts += 1
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        return self

    async def ready(self, within: float = 90) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:  # type: ignore[union-attr]
                raise AssertionError(f"worker {self.agent} exited {self.proc.returncode}:\n{self.log.read_text()}")  # type: ignore[union-attr]
            if b"agent-tree worker ready" in self.log.read_bytes():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"worker {self.agent} not ready after {within}s:\n{self.log.read_text()}")

    def kill(self) -> None:
        """kill -9: no graceful shutdown, no chance to report anything."""
        self.proc.kill()  # type: ignore[union-attr]
        self.proc.wait(10)  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def worker_env(temporal_address: str, database_url: str | None, redis_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_TREE_")}
    for key in ("TEMPORAL_ADDRESS", "DATABASE_URL", "REDIS_URL"):
        env.pop(key, None)
    env.update(
        AGENT_TREE_TEMPORAL_ADDRESS=temporal_address,
        AGENT_TREE_GRACEFUL_SHUTDOWN_SECONDS="5",
        # This checkout's packages, also when the venv's editable install points at another one.
        PYTHONPATH=os.pathsep.join([str(HERE), str(EXAMPLE), str(REPO), str(REPO / "worker"), str(REPO / "operator")]),
        AGENT_TREE_LOG_LEVEL="INFO",
    )
    if database_url:
        env["AGENT_TREE_DATABASE_URL"] = database_url
    if redis_url:
        env["AGENT_TREE_REDIS_URL"] = redis_url
    env.update(extra)
    return env


async def wait_for(predicate, what: str, within: float = 60, interval: float = 0.1) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


def tree_spec(doc: dict[str, Any]) -> AgentTreeSpec:
    return AgentTreeSpec.model_validate(doc)


async def run_durable(
    client: Client,
    spec: AgentTreeSpec,
    *,
    namespace: str,
    tree: str,
    user_input: str,
    database_url: str | None,
    redis_url: str | None,
    within: float = 90,
    **run_kw: Any,
) -> tuple[Any, dict[str, Any]]:
    """Run ``spec`` durably with one in-process worker per agent; returns (handle, result)."""
    queues = [naming.task_queue(namespace, tree, a.name) for a in spec.agents]
    async with in_process_workers(client, queues, database_url, redis_url):
        inp = run_input(namespace, tree, spec, name=unique("run"), uid=uuid.uuid4().hex[:8], input=user_input, **run_kw)
        handle = await start_run(client, inp)
        result = await asyncio.wait_for(handle.result(), within)
    return handle, result


async def run_embedded(spec: AgentTreeSpec, user_input: str) -> tuple[Any, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []

    async def sink(event: dict[str, Any]) -> None:
        events.append(event)

    result = await compile_tree(spec).orchestrator(hooks=event_hooks(sink)).run(user_input)
    return result, json.loads(json.dumps(events, default=str))
