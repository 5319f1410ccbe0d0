"""Backlog-driven worker scaling, pure: (observed work, current replicas, spec, time) -> replicas.

The autoscaler (``agent_tree_operator.autoscaler``) observes, for every agent with
``worker.autoscale``, the tasks waiting in its Temporal task queues and the runs whose current agent
it is, and calls :func:`desired_replicas`. The rules:

- **Up at once**: ``ceil(work / targetBacklogPerReplica)``, clamped to ``[minReplicas, maxReplicas]``,
  whenever that is above the current count. Waiting work never waits for a delay.
- **Down only when idle**: while any work waits or runs, replicas never go down (a turn in progress
  is invisible in the backlog: its task was already dispatched). After ``scaleDownDelaySeconds``
  without work, replicas go to ``minReplicas`` (zero when min is 0).
- Replicas outside ``[min, max]`` (a spec edit, a human ``kubectl scale``) are brought inside.

``work`` is the larger of the two signals, not their sum: a queued turn shows in both (its task in
the backlog, its run already pointing at the agent), and a running one only in the second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent_tree.spec import AgentTreeSpec
from agent_tree.spec_workers import AutoscaleSpec


@dataclass(frozen=True)
class Observation:
    """What one poll saw of an agent's load."""

    backlog: int = 0  # tasks waiting in its workflow + activity task queues
    in_progress: int = 0  # runs whose current agent is this agent
    hold: bool = False  # keep the workers even without load (the root while its tree has active runs)

    @property
    def work(self) -> int:
        return max(self.backlog, self.in_progress)

    @property
    def busy(self) -> bool:
        return self.work > 0 or self.hold


def desired_replicas(backlog: int, current: int, spec: AutoscaleSpec, last_busy: float | None, now: float) -> int:
    """The replica count an autoscaled agent should run.

    Args:
        backlog: outstanding work of the agent (tasks waiting, or turns in progress: see
            :attr:`Observation.work`).
        current: replicas the Deployment has now.
        spec: the agent's effective ``worker.autoscale``.
        last_busy: when the agent last had work (monotonic seconds), None when never seen busy.
        now: the current time on the same clock.

    Returns:
        The replicas to set (equal to ``current`` when nothing should change).
    """
    low, high = spec.minReplicas, spec.maxReplicas
    wanted = min(high, max(low, math.ceil(max(0, backlog) / spec.targetBacklogPerReplica)))
    kept = min(high, max(low, current))
    if wanted >= kept:
        return wanted
    idle = backlog <= 0 and (last_busy is None or now - last_busy >= spec.scaleDownDelaySeconds)
    return wanted if idle else kept


def prewarm_replicas(current: int, spec: AutoscaleSpec) -> int:
    """Replicas for an agent about to get work (a new run's root, a queued child turn): at least one."""
    return max(current, max(1, spec.minReplicas))


def observed_agents(spec: AgentTreeSpec) -> dict[str, tuple[AutoscaleSpec, bool]]:
    """Agent name -> (effective autoscale spec, scaled externally) for every agent with ``autoscale``.

    ``externalScaling: true`` (an HPA or KEDA owns replicas) wins over ``autoscale``: the operator
    never writes those agents' replicas, but still observes their backlog and exports it
    (``agent_tree_autoscaler_backlog``), e.g. for a KEDA Prometheus trigger.
    """
    out = {}
    for agent in spec.agents:
        worker = spec.worker_for(agent.name)
        if worker.autoscale is not None:
            out[agent.name] = (worker.autoscale, worker.externalScaling)
    return out


def autoscaled_agents(spec: AgentTreeSpec) -> dict[str, AutoscaleSpec]:
    """Agent name -> its effective autoscale spec, for the agents whose replicas the operator writes."""
    return {name: auto for name, (auto, external) in observed_agents(spec).items() if not external}
