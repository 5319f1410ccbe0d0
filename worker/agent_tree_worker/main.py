"""One worker process = one agent's task queue (``agent-tree worker``).

It needs no Kubernetes access: the tree spec travels in each workflow's input. At start it
applies the history migrations (under an advisory lock), then polls its queue until SIGTERM,
when it stops polling and lets running activities finish for ``graceful_shutdown_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from agent_tree.contract.temporal import connect
from agent_tree_worker import metrics
from agent_tree_worker.activities import Activities
from agent_tree_worker.config import WorkerConfig
from agent_tree_worker.executor import AgentWorkflow
from agent_tree_worker.store import HistoryStore
from agent_tree_worker.stream import StepStream
from agent_tree_worker.workflows import AgentRunWorkflow

log = logging.getLogger("agent_tree_worker")
T = TypeVar("T")
PASSTHROUGH = ("agent_tree", "agent_tree_worker", "pydantic", "pydantic_core", "jsonschema", "yaml")


async def with_retries(what: str, fn: Callable[[], Awaitable[T]], seconds: float = 60.0) -> T:
    """``fn()`` retried with backoff for up to ``seconds`` (services may start after the worker).

    The last error propagates unchanged, so ``agent-tree worker`` can name the service it could not reach.
    """
    deadline = time.monotonic() + seconds
    delay = 0.2
    while True:
        try:
            return await fn()
        except Exception as exc:
            if time.monotonic() + delay > deadline:
                log.error("%s failed for %gs: %s: %s", what, seconds, type(exc).__name__, exc)
                raise
            log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)


def build_worker(client: Client, config: WorkerConfig, activities: Activities, identity: str) -> Worker:
    return Worker(
        client,
        task_queue=config.task_queue,
        workflows=[AgentRunWorkflow, AgentWorkflow],
        activities=activities.all(),
        identity=identity,
        graceful_shutdown_timeout=timedelta(seconds=config.graceful_shutdown_seconds),
        max_concurrent_activities=config.max_concurrent_activities,
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
        ),
    )


async def run_worker(config: WorkerConfig, stop: asyncio.Event | None = None) -> None:
    """Serve ``config.task_queue`` until ``stop`` is set (or SIGTERM/SIGINT)."""
    for path in reversed(config.paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    settings = config.settings
    identity = f"{socket.gethostname()}/{os.getpid()}@{config.task_queue}"
    store = HistoryStore(settings.database_url) if settings.database_url else None
    if store is None:
        log.warning("AGENT_TREE_DATABASE_URL is unset: no history, and tool calls are not journaled")
    elif config.migrate:
        applied = await with_retries("applying history migrations", store.migrate)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
    stream = StepStream(settings.redis_url, maxlen=config.stream_maxlen)
    # Metrics: ours and the Temporal SDK's (bridged into the same registry) on one port.
    runtime = metrics.temporal_runtime() if settings.metrics_port else None
    port = metrics.serve(settings.metrics_port)
    if port is not None:
        print(f"agent-tree worker: metrics on port {port}", flush=True)
    client = await with_retries(
        f"connecting to Temporal at {settings.temporal_address}",
        lambda: connect(settings.temporal_address, settings.temporal_namespace, runtime=runtime),
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    worker = build_worker(client, config, Activities(store, stream, identity=identity), identity)
    try:
        async with worker:
            print(f"agent-tree worker ready: task queue {config.task_queue}", flush=True)
            await stop.wait()
            log.info("stopping: draining activities for up to %ss", config.graceful_shutdown_seconds)
    finally:
        await stream.close()
        if store is not None:
            await store.close()


def main(config: WorkerConfig) -> int:
    logging.basicConfig(
        level=os.environ.get("AGENT_TREE_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(run_worker(config))
    return 0
