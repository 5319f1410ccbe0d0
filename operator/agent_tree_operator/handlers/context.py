"""What every handler shares: configuration, clients, and small in-memory coordination.

One :class:`OperatorContext` is created per operator process and reaches the handlers through
kopf's ``memo`` (``memo.ctx``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from agent_tree_operator.adapters.history import History
from agent_tree_operator.adapters.kube import Kube
from agent_tree_operator.adapters.stream import StreamHub
from agent_tree_operator.adapters.temporal import Temporal
from agent_tree_operator.autoscaler import Autoscaler, RunActivity
from agent_tree_operator.config import OperatorConfig
from agent_tree_operator.metrics import PendingApprovals, RunPhases

Key = tuple[str, str]  # (namespace, name)


class TreeSignals:
    """Wakes the runs waiting for an AgentTree when that tree is created or changes."""

    def __init__(self) -> None:
        self._events: dict[Key, asyncio.Event] = {}

    def notify(self, key: Key) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

    async def wait(self, key: Key) -> None:
        """Return when the tree changes (callers bound the wait with ``asyncio.timeout``)."""
        await self._events.setdefault(key, asyncio.Event()).wait()


@dataclass
class TreeMemory:
    """What the last reconcile of a tree learned, reused by the status refreshes between reconciles."""

    uid: str | None = None
    status: dict[str, Any] | None = None  # the status last written (the watch may lag behind it)
    secrets: set[str] | None = None  # referenced Secrets found to exist


@dataclass
class OperatorContext:
    config: OperatorConfig
    kube: Kube
    temporal: Temporal
    hub: StreamHub
    signals: TreeSignals = field(default_factory=TreeSignals)
    trees: dict[Key, TreeMemory] = field(default_factory=lambda: defaultdict(TreeMemory))
    locks: dict[Key, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    followed: int = 0
    activity: RunActivity = field(default_factory=RunActivity)
    phases: RunPhases = field(default_factory=RunPhases)
    approvals: PendingApprovals = field(default_factory=PendingApprovals)
    deliveries: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # AgentApproval uid -> delivery
    autoscaler: Autoscaler | None = None
    history: History | None = None  # the run history (PostgreSQL): resolves spec.forkFrom

    def __post_init__(self) -> None:
        if self.autoscaler is None:
            self.autoscaler = Autoscaler(
                self.kube, self.temporal, self.activity, interval=self.config.autoscale_interval
            )
