"""The backlog autoscaler: the pure decision, the per-tree loop with fake Kubernetes/Temporal clients,
pre-warm, externalScaling, and the run-activity bookkeeping. (tests/e2e/test_autoscale.py runs the
same code against the real platform.)"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest
import yaml
from agent_tree_operator import metrics
from agent_tree_operator.adapters.temporal import Backlog
from agent_tree_operator.autoscaler import Autoscaler, RunActivity
from agent_tree_operator.config import OperatorConfig
from agent_tree_operator.reconcile.autoscale import (
    Observation,
    autoscaled_agents,
    desired_replicas,
    prewarm_replicas,
)
from agent_tree_operator.resources.deployments import worker_deployment
from prometheus_client import REGISTRY

from agent_tree import naming
from agent_tree.spec import AgentTreeSpec
from agent_tree.spec_workers import AutoscaleSpec

ROOT = Path(__file__).resolve().parents[2]
NS, TREE = "team", "invoice"
SPEC = AutoscaleSpec(minReplicas=0, maxReplicas=4, targetBacklogPerReplica=5, scaleDownDelaySeconds=60)


# --- the pure decision -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backlog", "current", "last_busy", "now", "expected", "why"),
    [
        (0, 0, None, 100.0, 0, "idle at zero stays at zero"),
        (1, 0, None, 100.0, 1, "one waiting task wakes one worker"),
        (5, 0, 99.0, 100.0, 1, "exactly one replica's worth"),
        (6, 1, 99.0, 100.0, 2, "just over one replica's worth"),
        (30, 0, None, 100.0, 4, "capped at maxReplicas"),
        (30, 2, 99.0, 100.0, 4, "scales up at once, no delay"),
        (3, 4, 99.0, 100.0, 4, "work waiting: never down"),
        (0, 4, 99.0, 100.0, 4, "idle, but not for scaleDownDelaySeconds yet"),
        (0, 4, 40.0, 100.0, 0, "idle for exactly the delay: down to min"),
        (0, 4, 10.0, 100.0, 0, "idle for longer than the delay"),
        (0, 4, None, 100.0, 0, "never seen busy counts as idle"),
        (0, 9, 99.0, 100.0, 4, "above max (max lowered): brought inside at once"),
    ],
)
def test_desired_replicas(backlog, current, last_busy, now, expected, why):
    assert desired_replicas(backlog, current, SPEC, last_busy, now) == expected, why


def test_min_replicas_is_a_floor_and_zero_delay_scales_down_at_once():
    spec = AutoscaleSpec(minReplicas=2, maxReplicas=10, targetBacklogPerReplica=1, scaleDownDelaySeconds=0)
    assert desired_replicas(0, 0, spec, None, 0.0) == 2  # below min: up to min
    assert desired_replicas(0, 7, spec, 5.0, 5.0) == 2  # delay 0: down as soon as idle
    assert desired_replicas(7, 2, spec, 5.0, 5.0) == 7  # one task per replica
    assert desired_replicas(50, 2, spec, 5.0, 5.0) == 10


def test_observation_work_is_the_larger_signal_not_the_sum():
    assert Observation(backlog=30, in_progress=30).work == 30  # queued turns show in both signals
    assert Observation(backlog=0, in_progress=12).work == 12  # running turns only in one
    assert not Observation().busy and Observation(hold=True).busy and Observation(backlog=1).busy


def test_prewarm_replicas():
    assert prewarm_replicas(0, SPEC) == 1
    assert prewarm_replicas(0, AutoscaleSpec(minReplicas=3, maxReplicas=5)) == 3
    assert prewarm_replicas(2, SPEC) == 2  # already warm: unchanged


def tree_spec(edit=None) -> AgentTreeSpec:
    doc = yaml.safe_load((ROOT / "examples" / "invoice" / "agenttree.yaml").read_text())
    spec = copy.deepcopy(doc["spec"])
    spec["agents"][2]["worker"] = {"autoscale": {"minReplicas": 0, "maxReplicas": 4, "scaleDownDelaySeconds": 5}}
    if edit:
        edit(spec)
    return AgentTreeSpec.model_validate(spec)


def test_autoscaled_agents_and_external_scaling():
    assert set(autoscaled_agents(tree_spec())) == {"invoice-specialist"}

    def external(spec):
        spec["agents"][2]["worker"]["externalScaling"] = True

    assert autoscaled_agents(tree_spec(external)) == {}  # HPA/KEDA owns replicas: never written

    def tree_wide(spec):
        spec["worker"] = {"autoscale": {"maxReplicas": 2}}
        del spec["agents"][2]["worker"]

    assert set(autoscaled_agents(tree_spec(tree_wide))) == {"supervisor", "triage", "invoice-specialist", "verifier"}


def test_autoscaled_and_external_deployments_leave_replicas_out():
    def external(spec):
        spec["agents"][3]["worker"] = {"externalScaling": True}

    spec = tree_spec(external)
    for agent in ("invoice-specialist", "verifier"):
        dep = worker_deployment(namespace=NS, tree=TREE, tree_uid="u", agent=agent, spec=spec, config=OperatorConfig())
        assert "replicas" not in dep["spec"]
    dep = worker_deployment(namespace=NS, tree=TREE, tree_uid="u", agent="triage", spec=spec, config=OperatorConfig())
    assert dep["spec"]["replicas"] == 1


# --- run activity ------------------------------------------------------------------------------------


def test_run_activity_counts_runs_per_agent_and_tree():
    act = RunActivity()
    act.set("r1", NS, TREE, "supervisor")
    act.set("r2", NS, TREE, "triage")
    act.set("r2", NS, TREE, "triage")  # idempotent
    act.set("r3", NS, "other", "triage")
    assert act.active(NS, TREE) == 2 and act.in_progress(NS, TREE, "triage") == 1
    act.set("r2", NS, TREE, "invoice-specialist")
    assert act.in_progress(NS, TREE, "triage") == 0 and act.in_progress(NS, TREE, "invoice-specialist") == 1
    act.drop("r2")
    act.drop("r2")
    assert act.active(NS, TREE) == 1 and act.in_progress(NS, TREE, "invoice-specialist") == 0
    act.set("r4", NS, TREE, None)  # started, no agent yet: counts for the tree only
    assert act.active(NS, TREE) == 2


def test_run_phases_gauge():
    phases = metrics.RunPhases()
    phases.set("a", None)
    phases.set("b", "Running")
    phases.set("b", "Succeeded")
    phases.set("c", "Succeeded")
    phases.set("d", "AwaitingApproval")  # a phase of its own, not folded into Pending
    assert phases.counts == {
        "Pending": 1,
        "Running": 0,
        "AwaitingApproval": 1,
        "Paused": 0,
        "Succeeded": 2,
        "Failed": 0,
        "Cancelled": 0,
    }
    assert REGISTRY.get_sample_value("agent_tree_operator_runs", {"phase": "Succeeded"}) == 2
    phases.remove("b")
    phases.remove("zzz")
    assert REGISTRY.get_sample_value("agent_tree_operator_runs", {"phase": "Succeeded"}) == 1


# --- the autoscaler with fake clients -------------------------------------------------------------------


class FakeKube:
    def __init__(self, replicas: dict[str, int]) -> None:
        self.replicas = dict(replicas)
        self.generation = dict.fromkeys(replicas, 1)
        self.scaled: list[tuple[str, int]] = []
        self.gets = 0

    async def get_deployment(self, namespace, name):
        self.gets += 1
        if name not in self.replicas:
            return None
        return {"metadata": {"generation": self.generation[name]}, "spec": {"replicas": self.replicas[name]}}

    async def scale_deployment(self, namespace, name, replicas):
        assert namespace == NS
        self.scaled.append((name, replicas))
        self.replicas[name] = replicas
        self.generation[name] += 1
        return {"metadata": {"generation": self.generation[name]}, "spec": {"replicas": replicas}}


class FakeTemporal:
    def __init__(self) -> None:
        self.backlogs: dict[str, int] = {}
        self.fail = False

    async def backlog(self, queue):
        if self.fail:
            raise RuntimeError("Temporal is away")
        return Backlog(self.backlogs.get(queue, 0), 1.5 if self.backlogs.get(queue) else 0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


SPECIALIST = naming.deployment_name(TREE, "invoice-specialist")
QUEUE = naming.task_queue(NS, TREE, "invoice-specialist")


def scaler(replicas: int = 1, spec: AgentTreeSpec | None = None):
    kube = FakeKube({SPECIALIST: replicas, "invoice-supervisor": 1})
    temporal = FakeTemporal()
    clock = Clock()
    auto = Autoscaler(kube, temporal, RunActivity(clock=clock), clock=clock)
    auto.register(NS, TREE, spec or tree_spec())
    return auto, kube, temporal, clock


async def test_poll_scales_up_on_backlog_and_down_to_zero_after_the_delay():
    auto, kube, temporal, clock = scaler(replicas=1)
    await auto.tick(NS, TREE)
    assert kube.scaled == []  # first sight counts as busy: no scale-down right after a restart
    clock.now += 5
    await auto.tick(NS, TREE)
    assert kube.scaled == [(SPECIALIST, 0)]  # idle for scaleDownDelaySeconds=5
    temporal.backlogs[QUEUE] = 12
    clock.now += 1
    await auto.tick(NS, TREE)
    assert kube.scaled[-1] == (SPECIALIST, 3)  # ceil(12 / 5)
    labels = {"namespace": NS, "tree": TREE, "agent": "invoice-specialist"}
    assert REGISTRY.get_sample_value("agent_tree_autoscaler_backlog", labels) == 12
    assert REGISTRY.get_sample_value("agent_tree_autoscaler_desired_replicas", labels) == 3
    temporal.backlogs[QUEUE] = 40
    clock.now += 1
    await auto.tick(NS, TREE)
    assert kube.scaled[-1] == (SPECIALIST, 4)  # maxReplicas
    writes = len(kube.scaled)
    await auto.tick(NS, TREE)
    assert len(kube.scaled) == writes  # unchanged: no write
    temporal.backlogs[QUEUE] = 0
    clock.now += 4.9
    await auto.tick(NS, TREE)
    assert len(kube.scaled) == writes  # not idle long enough
    clock.now += 0.2
    await auto.tick(NS, TREE)
    assert kube.scaled[-1] == (SPECIALIST, 0)
    assert kube.gets == 1  # replicas afterwards come from our own writes (and the Deployment watch)


async def test_a_run_in_progress_on_the_agent_keeps_its_workers():
    auto, kube, _temporal, clock = scaler(replicas=2)
    auto.activity.set("r1", NS, TREE, "invoice-specialist")  # a long tool call: no backlog, still busy
    for _ in range(5):
        clock.now += 10
        await auto.tick(NS, TREE)
    assert kube.scaled == []
    auto.activity.drop("r1")
    clock.now += 10
    await auto.tick(NS, TREE)
    assert kube.scaled == [(SPECIALIST, 0)]


async def test_the_delay_counts_from_when_the_work_ended_not_from_the_last_poll_that_saw_it():
    auto, kube, _temporal, clock = scaler(replicas=2)
    auto.activity.set("r1", NS, TREE, "invoice-specialist")
    await auto.tick(NS, TREE)  # a poll sees the turn
    clock.now += 1.9
    auto.activity.set("r1", NS, TREE, "verifier")  # the turn ends between two polls
    clock.now += 3.2
    await auto.tick(NS, TREE)  # 5.1 s after the poll that saw it, 3.2 s after it ended
    assert kube.scaled == []
    clock.now += 1.7
    await auto.tick(NS, TREE)  # 4.9 s after it ended
    assert kube.scaled == []
    clock.now += 0.2
    await auto.tick(NS, TREE)
    assert kube.scaled == [(SPECIALIST, 0)]


async def test_the_roots_delay_counts_from_when_its_trees_last_run_ended():
    def root_autoscaled(spec):
        spec["agents"][0]["worker"] = {"autoscale": {"minReplicas": 0, "maxReplicas": 2, "scaleDownDelaySeconds": 5}}

    auto, kube, _temporal, clock = scaler(spec=tree_spec(root_autoscaled))
    auto.activity.set("r1", NS, TREE, "triage")
    await auto.tick(NS, TREE)
    clock.now += 4
    auto.activity.drop("r1")  # the run finished at triage, never at the root itself
    clock.now += 2
    await auto.tick(NS, TREE)  # 6 s after the poll that held it, 2 s after the run ended
    assert ("invoice-supervisor", 0) not in kube.scaled
    clock.now += 3.1
    await auto.tick(NS, TREE)
    assert ("invoice-supervisor", 0) in kube.scaled


async def test_root_is_held_while_its_tree_has_active_runs():
    def root_autoscaled(spec):
        spec["agents"][0]["worker"] = {"autoscale": {"minReplicas": 0, "maxReplicas": 2, "scaleDownDelaySeconds": 1}}

    auto, kube, _temporal, clock = scaler(spec=tree_spec(root_autoscaled))
    auto.activity.set("r1", NS, TREE, "triage")  # the run is at triage; its workflow lives on the root's queue
    clock.now += 1
    await auto.tick(NS, TREE)
    clock.now += 30
    await auto.tick(NS, TREE)
    assert ("invoice-supervisor", 0) not in kube.scaled
    auto.activity.drop("r1")
    clock.now += 30
    await auto.tick(NS, TREE)
    assert ("invoice-supervisor", 0) in kube.scaled


async def test_prewarm_scales_from_zero_at_once_and_only_autoscaled_agents():
    auto, kube, _temporal, clock = scaler(replicas=0)
    assert await auto.prewarm(NS, TREE, "invoice-specialist") is True
    assert kube.scaled == [(SPECIALIST, 1)]
    assert await auto.prewarm(NS, TREE, "invoice-specialist") is False  # already warm
    assert await auto.prewarm(NS, TREE, "triage") is False  # fixed replicas: not ours
    assert await auto.prewarm(NS, "unknown-tree", "triage") is False
    # The pre-warm counts as busy: the next poll does not take the worker away before the delay.
    clock.now += 1
    await auto.tick(NS, TREE)
    assert kube.scaled == [(SPECIALIST, 1)]
    prewarms = REGISTRY.get_sample_value("agent_tree_autoscaler_scale_total", {"reason": "prewarm"})
    assert prewarms and prewarms >= 1


async def test_prewarm_soon_runs_in_the_background_and_never_raises():
    auto, kube, _temporal, _clock = scaler(replicas=0)

    async def broken(*_a):
        raise RuntimeError("API server away")

    auto.prewarm_soon(NS, TREE, "invoice-specialist")
    await asyncio.sleep(0)
    await asyncio.gather(*auto._tasks)
    assert kube.scaled == [(SPECIALIST, 1)]
    kube.scale_deployment = broken  # type: ignore[method-assign]
    auto.replicas.clear()
    kube.replicas[SPECIALIST] = 0
    assert await auto.prewarm(NS, TREE, "invoice-specialist") is False


async def test_external_scaling_is_never_written():
    def external(spec):
        spec["agents"][2]["worker"] = {"autoscale": {"minReplicas": 0, "maxReplicas": 4}, "externalScaling": True}

    auto, kube, temporal, _clock = scaler(replicas=0, spec=tree_spec(external))
    assert auto.trees[(NS, TREE)].external == {"invoice-specialist"}  # observed, not scaled
    temporal.backlogs[QUEUE] = 50
    await auto.tick(NS, TREE)
    assert await auto.prewarm(NS, TREE, "invoice-specialist") is False
    auto.prewarm_soon(NS, TREE, "invoice-specialist")
    assert kube.scaled == [] and not auto._tasks
    labels = {"namespace": NS, "tree": TREE, "agent": "invoice-specialist"}
    assert REGISTRY.get_sample_value("agent_tree_autoscaler_backlog", labels) == 50  # e.g. for a KEDA trigger
    assert REGISTRY.get_sample_value("agent_tree_autoscaler_desired_replicas", labels) == 4  # what it would set


async def test_the_deployment_watch_wins_over_stale_events_and_missing_deployments_are_skipped():
    auto, kube, temporal, _clock = scaler(replicas=0)
    auto.observe_deployment(NS, SPECIALIST, 3, 5)  # someone scaled it (generation 5)
    auto.observe_deployment(NS, SPECIALIST, 0, 4)  # a stale event from before: ignored
    assert await auto.current(NS, SPECIALIST) == 3
    auto.forget_deployment(NS, SPECIALIST)
    del kube.replicas[SPECIALIST]
    temporal.backlogs[QUEUE] = 10
    await auto.tick(NS, TREE)
    assert kube.scaled == []  # the tree reconcile has not created it yet


async def test_describe_errors_skip_the_tick():
    auto, kube, temporal, clock = scaler(replicas=4)
    temporal.fail = True
    before = REGISTRY.get_sample_value("agent_tree_autoscaler_describe_errors_total") or 0
    clock.now += 100
    await auto.tick(NS, TREE)
    assert kube.scaled == []  # no information: no decision
    assert REGISTRY.get_sample_value("agent_tree_autoscaler_describe_errors_total") == before + 1


async def test_the_loop_follows_tree_events_and_spec_edits_and_forgets_deleted_trees():
    auto, kube, temporal, _clock = scaler(replicas=0)
    auto.trees.clear()
    raw = tree_spec().model_dump(mode="json", exclude_none=True)
    auto.interval = 0.01
    temporal.backlogs[QUEUE] = 7
    auto.update_tree(NS, TREE, raw)  # a watch event
    auto.start()
    try:
        for _ in range(500):
            if kube.scaled:
                break
            await asyncio.sleep(0.01)
        assert kube.scaled[0] == (SPECIALIST, 2)  # ceil(7 / 5)
        edited = copy.deepcopy(raw)
        edited["agents"][2]["worker"]["autoscale"]["targetBacklogPerReplica"] = 1  # 7 tasks, 1 per replica
        auto.update_tree(NS, TREE, edited)
        for _ in range(500):
            if kube.scaled[-1] == (SPECIALIST, 4):
                break
            await asyncio.sleep(0.01)
        assert kube.scaled[-1] == (SPECIALIST, 4)
        invalid = copy.deepcopy(edited)
        invalid["root"] = "nobody"
        auto.update_tree(NS, TREE, invalid)  # an invalid edit keeps the last valid registration
        assert auto.trees[(NS, TREE)].agents["invoice-specialist"].targetBacklogPerReplica == 1
        auto.update_tree(NS, TREE, None)  # deleted
        assert auto.trees == {}
        labels = {"namespace": NS, "tree": TREE, "agent": "invoice-specialist"}
        assert REGISTRY.get_sample_value("agent_tree_autoscaler_backlog", labels) is None  # series dropped
        not_autoscaled = copy.deepcopy(raw)
        del not_autoscaled["agents"][2]["worker"]
        auto.update_tree(NS, TREE, not_autoscaled)
        assert auto.trees == {}
    finally:
        await auto.close()
    assert auto._loop is None


def test_tree_and_run_event_handlers():
    from types import SimpleNamespace

    from agent_tree_operator.handlers.autoscale import autoscale_tree, run_phase

    raw = tree_spec().model_dump(mode="json", exclude_none=True)
    auto, _kube, _temporal, _clock = scaler()
    auto.trees.clear()
    memo = SimpleNamespace(ctx=SimpleNamespace(autoscaler=auto, phases=metrics.RunPhases()))
    asyncio.run(autoscale_tree(namespace=NS, name=TREE, type=None, spec=raw, memo=memo))
    assert set(auto.trees[(NS, TREE)].agents) == {"invoice-specialist"}
    asyncio.run(autoscale_tree(namespace=NS, name=TREE, type="DELETED", spec=raw, memo=memo))
    assert auto.trees == {}

    asyncio.run(run_phase(uid="u1", type="ADDED", status={}, memo=memo))
    asyncio.run(run_phase(uid="u2", type="MODIFIED", status={"phase": "Running"}, memo=memo))
    assert memo.ctx.phases.counts["Pending"] == 1 and memo.ctx.phases.counts["Running"] == 1
    asyncio.run(run_phase(uid="u2", type="DELETED", status={"phase": "Running"}, memo=memo))
    assert memo.ctx.phases.counts["Running"] == 0
