"""The backlog autoscaler: sets ``replicas`` of the worker Deployments of agents with ``worker.autoscale``.

Observe / decide / act, for every tree with autoscaled agents, in ONE background task of the operator
(trees are registered from their watch events, ``handlers/autoscale.py``; a kopf daemon or timer per
tree would put a finalizer on every autoscaled tree, so deleting one would need the operator up):

- **observe**: every ``AGENT_TREE_AUTOSCALE_INTERVAL_SECONDS``, each autoscaled agent's task queue
  backlog (``DescribeTaskQueue`` with stats, workflow + activity tasks) and the runs whose current
  agent it is (:class:`RunActivity`, fed by the run followers);
- **decide**: :func:`agent_tree_operator.reconcile.autoscale.desired_replicas` (pure);
- **act**: server-side apply of ``spec.replicas`` alone, under the field manager
  ``agent-tree-autoscaler`` (the tree reconcile leaves the field out for autoscaled agents), only
  when the value changes.

Pre-warm, without waiting for a poll: a new run scales its root agent from zero when it starts, and
a run whose stream announces a child's turn (``agent_start``) scales that child from zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent_tree import naming
from agent_tree.spec import AgentTreeSpec
from agent_tree.spec_workers import AutoscaleSpec
from agent_tree_operator import metrics
from agent_tree_operator.reconcile.autoscale import (
    Observation,
    desired_replicas,
    observed_agents,
    prewarm_replicas,
)
from agent_tree_operator.reconcile.trees import parse_spec

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, tree)


class RunActivity:
    """Which agent every active run is at, counted per agent and per tree (O(1) reads).

    It also remembers when a run last left each agent and each tree (``clock`` seconds): the
    autoscaler polls every few seconds, and a turn that ends between two polls must count as busy
    until it ended, not until the last poll that saw it (else ``scaleDownDelaySeconds`` would be
    shortened by up to one poll interval).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._runs: dict[str, tuple[str, str, str | None]] = {}
        self._agents: Counter[tuple[str, str, str]] = Counter()
        self._trees: Counter[Key] = Counter()
        self._left_agent: dict[tuple[str, str, str], float] = {}
        self._left_tree: dict[Key, float] = {}

    def set(self, uid: str, namespace: str, tree: str, agent: str | None) -> None:
        """Run ``uid`` (of ``namespace/tree``) is now at ``agent`` (None: started, no agent yet)."""
        new = (namespace, tree, agent)
        if self._runs.get(uid) == new:
            return
        self.drop(uid)
        self._runs[uid] = new
        self._trees[(namespace, tree)] += 1
        if agent:
            self._agents[new] += 1  # type: ignore[index]

    def drop(self, uid: str) -> None:
        old = self._runs.pop(uid, None)
        if old is None:
            return
        now = self.clock()
        self._trees[old[:2]] -= 1
        self._left_tree[old[:2]] = now
        if old[2]:
            self._agents[old] -= 1  # type: ignore[index]
            self._left_agent[old] = now  # type: ignore[index]

    def in_progress(self, namespace: str, tree: str, agent: str) -> int:
        return self._agents[(namespace, tree, agent)]

    def active(self, namespace: str, tree: str) -> int:
        return self._trees[(namespace, tree)]

    def last_left(self, namespace: str, tree: str, agent: str | None = None) -> float | None:
        """When a run last left ``agent`` (or, without one, the tree); None when none has."""
        if agent is None:
            return self._left_tree.get((namespace, tree))
        return self._left_agent.get((namespace, tree, agent))

    def forget_tree(self, namespace: str, tree: str) -> None:
        self._left_tree.pop((namespace, tree), None)
        for key in [k for k in self._left_agent if k[:2] == (namespace, tree)]:
            del self._left_agent[key]


@dataclass
class AgentState:
    last_busy: float | None = None


@dataclass
class TreeScaler:
    """The autoscaled agents of one tree and what the autoscaler remembers about them.

    ``agents`` holds every agent with ``autoscale``; those in ``external`` (``externalScaling: true``)
    are observed and exported, never scaled.
    """

    namespace: str
    name: str
    root: str
    agents: dict[str, AutoscaleSpec]
    external: set[str] = field(default_factory=set)
    states: dict[str, AgentState] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    digest: str = ""

    def deployment(self, agent: str) -> str:
        return naming.deployment_name(self.name, agent)


class Autoscaler:
    """One per operator process; shared by the tree daemons, the Deployment watch and the run followers."""

    def __init__(
        self,
        kube: Any,
        temporal: Any,
        activity: RunActivity,
        *,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.temporal = temporal
        self.activity = activity
        self.interval = interval
        self.clock = clock
        self.trees: dict[Key, TreeScaler] = {}
        # (namespace, Deployment) -> (replicas, generation) from the watch and from our own writes
        self.replicas: dict[Key, tuple[int | None, int]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.Task[None] | None = None

    # --- what the other parts tell us ----------------------------------------------------------
    def register(self, namespace: str, tree: str, spec: AgentTreeSpec) -> TreeScaler | None:
        """(Re)register a tree's autoscaled agents; None (and forgotten) when it has none."""
        key = (namespace, tree)
        observed = observed_agents(spec)
        agents = {name: auto for name, (auto, _external) in observed.items()}
        external = {name for name, (_auto, ext) in observed.items() if ext}
        current = self.trees.get(key)
        if not agents:
            self.unregister(namespace, tree)
            return None
        if current is None:
            current = self.trees[key] = TreeScaler(namespace, tree, spec.root, agents, external)
        else:
            for gone in set(current.agents) - set(agents):
                metrics.forget_agent(namespace, tree, gone)
                current.states.pop(gone, None)
            current.agents, current.external, current.root = agents, external, spec.root
        return current

    def update_tree(self, namespace: str, tree: str, raw_spec: Mapping[str, Any] | None) -> None:
        """A tree's watch event: (re)register its autoscaled agents; None (deleted) forgets it.

        An invalid spec keeps the last valid registration (the tree's last valid revision keeps running).
        """
        if raw_spec is None:
            self.unregister(namespace, tree)
            return
        digest = json.dumps(raw_spec, sort_keys=True, default=str)
        current = self.trees.get((namespace, tree))
        if current is not None and current.digest == digest:
            return
        parsed, _errors = parse_spec(raw_spec)
        if parsed is None:
            return
        scaler = self.register(namespace, tree, parsed)
        if scaler is not None:
            scaler.digest = digest

    def unregister(self, namespace: str, tree: str) -> None:
        scaler = self.trees.pop((namespace, tree), None)
        self.activity.forget_tree(namespace, tree)
        if scaler is not None:
            for agent in scaler.agents:
                metrics.forget_agent(namespace, tree, agent)

    def observe_deployment(self, namespace: str, name: str, replicas: int | None, generation: int) -> None:
        """A Deployment watch event; an event older than our last write (lower generation) is ignored."""
        key = (namespace, name)
        known = self.replicas.get(key)
        if known is None or generation >= known[1]:
            self.replicas[key] = (replicas, generation)

    def forget_deployment(self, namespace: str, name: str) -> None:
        self.replicas.pop((namespace, name), None)

    # --- acting -------------------------------------------------------------------------------------
    async def current(self, namespace: str, deployment: str) -> int | None:
        """The Deployment's ``spec.replicas`` (the watch's view, else a GET); None when it does not exist."""
        known = self.replicas.get((namespace, deployment))
        if known is not None:
            return known[0]
        obj = await self.kube.get_deployment(namespace, deployment)
        if obj is None:
            return None
        replicas = (obj.get("spec") or {}).get("replicas")
        self.observe_deployment(namespace, deployment, replicas, (obj.get("metadata") or {}).get("generation") or 0)
        return replicas

    async def _scale(self, scaler: TreeScaler, agent: str, current: int, replicas: int, reason: str) -> None:
        deployment = scaler.deployment(agent)
        result = await self.kube.scale_deployment(scaler.namespace, deployment, replicas)
        generation = ((result or {}).get("metadata") or {}).get("generation") or 0
        self.observe_deployment(scaler.namespace, deployment, replicas, generation)
        metrics.SCALES.labels(reason).inc()
        log.info("autoscaler: %s/%s %d -> %d replicas (%s)", scaler.namespace, deployment, current, replicas, reason)

    async def tick(self, namespace: str, tree: str) -> None:
        """One poll of every autoscaled agent of a tree: observe, decide, scale when it changes."""
        scaler = self.trees.get((namespace, tree))
        if scaler is None:
            return
        agents = list(scaler.agents)
        backlogs = await asyncio.gather(
            *(self.temporal.backlog(naming.task_queue(namespace, tree, a)) for a in agents), return_exceptions=True
        )
        for agent, backlog in zip(agents, backlogs, strict=True):
            if isinstance(backlog, BaseException):
                metrics.DESCRIBE_ERRORS.inc()
                log.warning(
                    "autoscaler: cannot describe the task queue of %s/%s/%s: %s", namespace, tree, agent, backlog
                )
                continue
            await self._decide(scaler, agent, backlog.count, backlog.age_seconds)

    async def _decide(self, scaler: TreeScaler, agent: str, backlog: int, age: float) -> None:
        spec = scaler.agents.get(agent)
        if spec is None:
            return
        ns, tree = scaler.namespace, scaler.name
        observed = Observation(
            backlog=backlog,
            in_progress=self.activity.in_progress(ns, tree, agent),
            hold=agent == scaler.root and self.activity.active(ns, tree) > 0,
        )
        async with scaler.lock:
            state = scaler.states.setdefault(agent, AgentState())
            now = self.clock()
            if state.last_busy is None or observed.busy:
                # First sight counts as busy: after an operator restart, wait one delay before scaling down.
                state.last_busy = now
            # Work that ended between two polls counts until it ended (the root: until its tree's
            # last run ended), so the delay is measured from the end of the work, not from a poll.
            left = self.activity.last_left(ns, tree, agent)
            if agent == scaler.root:
                left = max(left or 0.0, self.activity.last_left(ns, tree) or 0.0) or None
            if left is not None and left > state.last_busy:
                state.last_busy = left
            current = await self.current(ns, scaler.deployment(agent))
            if current is None:
                return  # not created yet: the tree reconcile makes it
            desired = desired_replicas(observed.work, current, spec, state.last_busy, now)
            labels = (ns, tree, agent)
            metrics.BACKLOG.labels(*labels).set(backlog)
            metrics.BACKLOG_AGE.labels(*labels).set(age)
            metrics.IN_PROGRESS.labels(*labels).set(observed.in_progress)
            metrics.DESIRED.labels(*labels).set(desired)
            if desired != current and agent not in scaler.external:
                await self._scale(scaler, agent, current, desired, "backlog" if desired > current else "idle")

    async def prewarm(self, namespace: str, tree: str, agent: str | None) -> bool:
        """Scale ``agent`` from zero now because work for it is on its way. Never raises.

        Returns:
            True when it wrote replicas.
        """
        scaler = self.trees.get((namespace, tree))
        if scaler is None or agent is None or agent not in scaler.agents or agent in scaler.external:
            return False
        try:
            async with scaler.lock:
                state = scaler.states.setdefault(agent, AgentState())
                state.last_busy = self.clock()
                current = await self.current(namespace, scaler.deployment(agent))
                if current is None:
                    return False
                wanted = prewarm_replicas(current, scaler.agents[agent])
                if wanted == current:
                    return False
                await self._scale(scaler, agent, current, wanted, "prewarm")
                return True
        except Exception as exc:  # best effort: the next poll scales it anyway
            log.warning("autoscaler: pre-warming %s/%s/%s failed: %s", namespace, tree, agent, exc)
            return False

    def prewarm_soon(self, namespace: str, tree: str, agent: str | None) -> None:
        """:meth:`prewarm` in the background (for synchronous callers such as a stream step)."""
        scaler = self.trees.get((namespace, tree))
        if scaler is None or agent not in scaler.agents or agent in scaler.external:
            return
        task = asyncio.ensure_future(self.prewarm(namespace, tree, agent))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the loop -----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.create_task(self.run(), name="agent-tree-autoscaler")

    async def close(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop
            self._loop = None

    async def run(self) -> None:
        """Poll and scale every registered tree every ``interval`` seconds, until cancelled."""
        while True:
            keys = list(self.trees)
            results = await asyncio.gather(*(self.tick(ns, tree) for ns, tree in keys), return_exceptions=True)
            for (ns, tree), result in zip(keys, results, strict=True):
                if isinstance(result, Exception):  # the API server or Temporal away: next tick
                    log.warning("autoscaler: tick of %s/%s failed: %s", ns, tree, result)
            await asyncio.sleep(self.interval)
