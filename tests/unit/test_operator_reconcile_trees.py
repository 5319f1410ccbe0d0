"""The pure AgentTree reconciler: what to apply, what to delete, which status to write."""

from __future__ import annotations

import copy
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from agent_tree_operator.config import OperatorConfig
from agent_tree_operator.reconcile.conditions import get
from agent_tree_operator.reconcile.trees import (
    DeploymentCondition,
    ObservedDeployment,
    ObservedPod,
    mark_apply_failed,
    parse_spec,
    plan_tree,
    spec_revision,
    status_changed,
)
from platformlib import built_tool

from agent_tree import naming

ROOT = Path(__file__).resolve().parents[2]
CONFIG = OperatorConfig()
NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"


def invoice_spec() -> dict:
    return yaml.safe_load((ROOT / "examples" / "invoice" / "agenttree.yaml").read_text())["spec"]


def plan(spec=None, observed=(), old=None, now=NOW, secrets=None, generation=1, pods=()):
    return plan_tree(
        namespace="team",
        name="invoice",
        uid="uid-1",
        generation=generation,
        raw_spec=spec if spec is not None else invoice_spec(),
        observed=list(observed),
        old_status=old,
        config=CONFIG,
        now=now,
        existing_secrets=secrets,
        pods=pods,
    )


def ready(agent: str, replicas: int, owner: str | None = "uid-1", ready_count: int | None = None) -> ObservedDeployment:
    return ObservedDeployment(
        name=naming.deployment_name("invoice", agent),
        agent=agent,
        owner_uid=owner,
        replicas=replicas,
        ready=replicas if ready_count is None else ready_count,
        updated=replicas,
        generation=1,
        observed_generation=1,
    )


ALL_READY = [ready("supervisor", 1), ready("triage", 1), ready("invoice-specialist", 2), ready("verifier", 1)]


def test_new_tree_applies_one_deployment_per_agent_and_is_not_ready_yet():
    p = plan()
    assert [d["metadata"]["name"] for d in p.apply] == [
        "invoice-supervisor",
        "invoice-triage",
        "invoice-invoice-specialist",
        "invoice-verifier",
    ]
    assert p.delete == [] and p.retry is None and p.valid
    status = p.status
    assert status["ready"] == "0/4"
    assert status["revision"] == spec_revision(parse_spec(invoice_spec())[0])
    assert status["observedGeneration"] == 1
    assert next(a["taskQueue"] for a in status["agents"]) == "agent-tree.team.invoice.supervisor"
    cond = get(status["conditions"], "Ready")
    assert cond["status"] == "False" and cond["reason"] == "AgentsNotReady"
    assert "spec.agents[2] (invoice-specialist): 0/2 workers ready" in cond["message"]
    assert get(status["conditions"], "Progressing")["status"] == "True"
    assert get(status["conditions"], "Degraded")["status"] == "False"


def test_all_workers_ready_makes_the_tree_ready():
    status = plan(observed=ALL_READY).status
    assert status["ready"] == "4/4"
    assert get(status["conditions"], "Ready")["status"] == "True"
    assert get(status["conditions"], "Progressing")["reason"] == "Reconciled"
    assert [a["readyReplicas"] for a in status["agents"]] == [1, 1, 2, 1]


def test_partially_ready_names_the_agent_at_fault():
    observed = [*ALL_READY[:2], ready("invoice-specialist", 2, ready_count=1), ALL_READY[3]]
    status = plan(observed=observed).status
    assert status["ready"] == "3/4"
    assert get(status["conditions"], "Ready")["message"] == "spec.agents[2] (invoice-specialist): 1/2 workers ready"


def test_removed_agent_is_deleted_only_when_this_tree_owns_it():
    stale = ObservedDeployment(name="invoice-old-agent", agent="old-agent", owner_uid="uid-1")
    foreign = ObservedDeployment(name="invoice-not-mine", agent="not-mine", owner_uid="someone-else")
    p = plan(observed=[*ALL_READY, stale, foreign])
    assert p.delete == ["invoice-old-agent"]


def test_invalid_tree_applies_nothing_and_reports_the_field():
    spec = invoice_spec()
    spec["agents"].append({"name": "lonely", "entrypoint": "m:f"})
    good = plan(observed=ALL_READY).status
    p = plan(spec=spec, old=good, generation=2)
    assert not p.valid and p.apply == [] and p.delete == []
    degraded = get(p.status["conditions"], "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "InvalidSpec"
    assert degraded["message"].startswith("spec.agents[4]: agent 'lonely' is not reachable from root 'supervisor'")
    assert get(p.status["conditions"], "Ready")["status"] == "False"
    assert p.status["revision"] == good["revision"]  # the last valid revision keeps running
    assert p.status["observedGeneration"] == 2


def test_cycle_is_reported_as_a_condition():
    spec = {
        "root": "sup",
        "agents": [
            {"name": "sup", "children": ["c"]},
            {"name": "c", "entrypoint": "m:f"},
            {"name": "a", "children": ["b"]},
            {"name": "b", "children": ["a"]},
        ],
    }
    degraded = get(plan(spec=spec).status["conditions"], "Degraded")
    assert "spec.agents: cycle a -> b -> a" in degraded["message"]


def test_missing_secret_is_retried_and_named():
    spec = invoice_spec()
    spec["agents"][1] = {
        "name": "triage",
        "model": {"name": "gpt-4o-mini", "apiKeySecretRef": {"name": "openai", "key": "api-key"}},
    }
    p = plan(spec=spec, observed=ALL_READY, secrets=set())
    assert p.retry and "spec.agents[1].model.apiKeySecretRef: Secret 'openai' not found in namespace 'team'" in p.retry
    degraded = get(p.status["conditions"], "Degraded")
    assert degraded["reason"] == "SecretNotFound" and degraded["status"] == "True"
    assert len(p.apply) == 4  # the other agents keep running
    healed = plan(spec=spec, observed=ALL_READY, secrets={"openai"})
    assert healed.retry is None and get(healed.status["conditions"], "Degraded")["status"] == "False"


def test_transition_times_survive_and_identical_status_is_not_rewritten():
    first = plan(observed=ALL_READY).status
    second = plan(observed=ALL_READY, old=first, now=LATER).status
    assert not status_changed(first, second)
    assert get(second["conditions"], "Ready")["lastTransitionTime"] == NOW
    third = plan(observed=ALL_READY[:3], old=second, now=LATER).status
    assert status_changed(second, third)
    assert get(third["conditions"], "Ready")["lastTransitionTime"] == LATER


def test_revision_is_stable_and_changes_with_the_spec():
    a, b = parse_spec(invoice_spec())[0], parse_spec(copy.deepcopy(invoice_spec()))[0]
    assert spec_revision(a) == spec_revision(b)
    changed = invoice_spec()
    changed["maxSteps"] = 7
    assert spec_revision(parse_spec(changed)[0]) != spec_revision(a)


def test_observed_deployment_from_object():
    obj = {
        "metadata": {
            "name": "invoice-triage",
            "generation": 3,
            "labels": {naming.LABEL_AGENT: "triage"},
            "ownerReferences": [{"kind": "AgentTree", "uid": "u", "controller": True}],
        },
        "spec": {"replicas": 2},
        "status": {"readyReplicas": 1, "updatedReplicas": 2, "observedGeneration": 3},
    }
    assert ObservedDeployment.from_object(obj) == ObservedDeployment("invoice-triage", "triage", "u", 2, 1, 2, 3, 3)
    assert ObservedDeployment.from_object({"metadata": {"name": "x"}}).ready == 0


# --- failures of the worker Deployments, and the kstatus conditions (issue 10) ----------------------

QUOTA = 'pods "invoice-triage-5d8f7c9b6-x2x4q" is forbidden: exceeded quota: zero, requested: pods=1, used: pods=0, limited: pods=0'
DEADLINE = 'ReplicaSet "invoice-verifier-6c5b8d7f4" has timed out progressing.'


def failing(agent: str, replicas: int, *conditions: DeploymentCondition, ready_count: int = 0) -> ObservedDeployment:
    return replace(ready(agent, replicas, ready_count=ready_count), conditions=conditions)


REFUSED = DeploymentCondition("ReplicaFailure", "True", "FailedCreate", QUOTA)
STUCK = DeploymentCondition("Progressing", "False", "ProgressDeadlineExceeded", DEADLINE)


def stalled(status: dict) -> tuple[str, str]:
    """(Reconciling, Stalled) statuses: what kstatus reads first (Reconciling=True InProgress, Stalled=True Failed)."""
    return get(status["conditions"], "Reconciling")["status"], get(status["conditions"], "Stalled")["status"]


def test_refused_worker_pods_degrade_the_tree_naming_the_agent_and_quoting_the_refusal():
    observed = [ALL_READY[0], failing("triage", 1, REFUSED), *ALL_READY[2:]]
    status = plan(observed=observed).status
    degraded = get(status["conditions"], "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "WorkersRefused"
    assert degraded["message"] == f"spec.agents[1] (triage): worker pods refused (FailedCreate): {QUOTA}"
    ready_cond = get(status["conditions"], "Ready")
    assert ready_cond["status"] == "False" and ready_cond["reason"] == "AgentsNotReady"
    assert ready_cond["message"] == "spec.agents[1] (triage): 0/1 workers ready"
    assert status["ready"] == "3/4"  # the Agents column agrees with Ready
    stall = get(status["conditions"], "Stalled")
    assert (stall["status"], stall["reason"], stall["message"]) == ("True", "WorkersRefused", degraded["message"])
    assert stalled(status) == ("False", "True")


def test_refused_pods_count_the_agent_out_even_while_older_pods_serve():
    # A rollout refused by a quota while the previous ReplicaSet's pod is still ready.
    observed = [ALL_READY[0], failing("triage", 1, REFUSED, ready_count=1), *ALL_READY[2:]]
    status = plan(observed=observed).status
    assert status["ready"] == "3/4"
    assert get(status["conditions"], "Ready")["status"] == "False"
    assert next(a for a in status["agents"] if a["name"] == "triage")["readyReplicas"] == 1  # the truth per agent


def test_progress_deadline_exceeded_is_workers_stuck_and_a_refusal_is_named_first():
    stuck = plan(observed=[*ALL_READY[:3], failing("verifier", 1, STUCK)]).status
    degraded = get(stuck["conditions"], "Degraded")
    assert degraded["reason"] == "WorkersStuck"
    assert degraded["message"] == f"spec.agents[3] (verifier): rollout stuck (ProgressDeadlineExceeded): {DEADLINE}"
    assert stalled(stuck) == ("False", "True")
    both = plan(observed=[ALL_READY[0], failing("triage", 1, REFUSED), ALL_READY[2], failing("verifier", 1, STUCK)])
    degraded = get(both.status["conditions"], "Degraded")
    assert degraded["reason"] == "WorkersRefused"
    assert degraded["message"].split("; ") == [
        f"spec.agents[1] (triage): worker pods refused (FailedCreate): {QUOTA}",
        f"spec.agents[3] (verifier): rollout stuck (ProgressDeadlineExceeded): {DEADLINE}",
    ]


def test_healthy_deployment_conditions_are_not_failures():
    fine = (
        DeploymentCondition("Available", "True", "MinimumReplicasAvailable"),
        DeploymentCondition("Progressing", "True", "NewReplicaSetAvailable"),
        DeploymentCondition("ReplicaFailure", "False", "Resolved"),
        DeploymentCondition("Progressing", "False", "SomethingElse"),
    )
    status = plan(observed=[replace(d, conditions=fine) for d in ALL_READY]).status
    assert get(status["conditions"], "Degraded")["status"] == "False"
    assert stalled(status) == ("False", "False")


def test_clearing_the_cause_clears_degraded_and_stalled():
    refused = plan(observed=[ALL_READY[0], failing("triage", 1, REFUSED), *ALL_READY[2:]]).status
    healed = plan(observed=ALL_READY, old=refused, now=LATER).status
    assert status_changed(refused, healed)
    for type_ in ("Degraded", "Stalled"):
        cond = get(healed["conditions"], type_)
        assert cond["status"] == "False" and cond["lastTransitionTime"] == LATER, cond
    assert get(healed["conditions"], "Ready")["status"] == "True" and healed["ready"] == "4/4"


def tree_states() -> dict[str, tuple[dict, int]]:
    """name -> (status the operator writes, metadata.generation) for every state of a tree."""
    spec = invoice_spec()
    spec["root"] = "nobody"
    secret = invoice_spec()
    secret["agents"][1] = {"name": "triage", "model": {"name": "m", "apiKeySecretRef": {"name": "openai", "key": "k"}}}
    applied = plan(observed=ALL_READY).status
    mark_apply_failed(applied, "spec.agents[1] (triage): Deployment invoice-triage rejected by the API server: x")
    return {
        "new": (plan().status, 1),
        "starting": (plan(observed=[*ALL_READY[:3], ready("verifier", 1, ready_count=0)]).status, 1),
        # old pods serve while the new ones roll out: Ready, yet not done
        "rolling": (plan(observed=[*ALL_READY[:3], replace(ALL_READY[3], generation=2)]).status, 1),
        "secret-missing": (plan(spec=secret, observed=ALL_READY, secrets=set()).status, 1),
        "ready": (plan(observed=ALL_READY).status, 1),
        "edited": (plan(observed=ALL_READY).status, 2),  # an edit the operator has not seen yet
        "invalid": (plan(spec=spec).status, 1),
        "refused": (plan(observed=[ALL_READY[0], failing("triage", 1, REFUSED), *ALL_READY[2:]]).status, 1),
        "stuck": (plan(observed=[*ALL_READY[:3], failing("verifier", 1, STUCK)]).status, 1),
        "apply-failed": (applied, 1),
        "failing": (plan(observed=ALL_READY, pods=[ObservedPod.from_object(crash_looping_pod())]).status, 1),
    }


@pytest.fixture(scope="module")
def kstatus() -> str:
    """The real kstatus helper (hack/build-kstatus.sh: cli-utils from the Go module proxy, cached)."""
    return built_tool("build-kstatus.sh")


def test_the_real_kstatus_library_reads_every_state_of_a_tree(kstatus):
    """The statuses plan_tree writes, judged by sigs.k8s.io/cli-utils' status.Compute itself."""
    items = [
        {
            "apiVersion": "agenttree.io/v1alpha1",
            "kind": "AgentTree",
            "metadata": {"name": name, "namespace": "team", "generation": generation},
            "status": status,
        }
        for name, (status, generation) in tree_states().items()
    ]
    proc = subprocess.run(
        [kstatus], input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = {r["name"]: (r["status"], r["message"]) for r in map(json.loads, proc.stdout.splitlines())}
    assert {name: s for name, (s, _) in got.items()} == {
        "new": "InProgress",
        "starting": "InProgress",
        "rolling": "InProgress",
        "secret-missing": "InProgress",  # heals by itself when the Secret appears: the operator retries
        "ready": "Current",
        "edited": "InProgress",
        "invalid": "Failed",
        "refused": "Failed",
        "stuck": "Failed",
        "apply-failed": "Failed",
        "failing": "Failed",
    }
    assert got["refused"][1].startswith("spec.agents[1] (triage): worker pods refused (FailedCreate): pods ")
    assert got["invalid"][1].startswith("spec.root: no agent named 'nobody'")
    assert got["starting"][1] == "spec.agents[3] (verifier): 0/1 workers ready"


def test_conditions_of_every_state():
    states = tree_states()
    reasons = {
        name: {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
        for name, (status, _) in states.items()
    }
    assert [c["type"] for c in states["ready"][0]["conditions"]] == [
        "Ready", "Progressing", "Degraded", "Reconciling", "Stalled"]  # fmt: skip
    assert reasons["ready"]["Reconciling"] == ("False", "Reconciled")
    assert reasons["starting"]["Reconciling"] == ("True", "AgentsNotReady")
    assert reasons["rolling"]["Ready"] == ("True", "AllAgentsReady")
    assert reasons["rolling"]["Reconciling"] == ("True", "RollingOut")
    assert reasons["secret-missing"]["Reconciling"] == ("True", "SecretNotFound")
    for name, reason in (("invalid", "InvalidSpec"), ("refused", "WorkersRefused"), ("stuck", "WorkersStuck"),
                         ("apply-failed", "ApplyFailed"), ("failing", "WorkersFailing")):  # fmt: skip
        assert reasons[name]["Stalled"] == ("True", reason), name
        assert reasons[name]["Degraded"] == ("True", reason), name
        assert reasons[name]["Reconciling"] == ("False", "Stalled"), name
        assert reasons[name]["Ready"][0] == "False", name


def test_missing_secret_is_in_progress_not_failed():
    spec = invoice_spec()
    spec["agents"][1] = {"name": "triage", "model": {"name": "m", "apiKeySecretRef": {"name": "openai", "key": "k"}}}
    status = plan(spec=spec, observed=ALL_READY, secrets=set()).status
    assert get(status["conditions"], "Degraded")["reason"] == "SecretNotFound"
    assert get(status["conditions"], "Reconciling")["reason"] == "SecretNotFound"
    assert stalled(status) == ("True", "False")  # heals by itself when the Secret appears: the operator retries


def test_apply_failed_stalls_the_tree():
    status = plan(observed=ALL_READY).status
    mark_apply_failed(status, "spec.agents[1] (triage): Deployment invoice-triage rejected by the API server: x")
    assert get(status["conditions"], "Degraded")["reason"] == "ApplyFailed"
    assert get(status["conditions"], "Ready")["status"] == "False"
    assert stalled(status) == ("False", "True")


def test_observed_deployment_carries_its_conditions():
    obj = {
        "metadata": {"name": "invoice-triage", "labels": {naming.LABEL_AGENT: "triage"}},
        "status": {
            "conditions": [
                {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "message": "m"},
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": QUOTA},
            ]
        },
    }
    observed = ObservedDeployment.from_object(obj)
    assert observed.conditions[1] == REFUSED
    assert observed.problem() == ("WorkersRefused", f"worker pods refused (FailedCreate): {QUOTA}")


def crash_looping_pod(agent: str = "invoice-specialist", name: str = "invoice-invoice-specialist-7f9c-abcde") -> dict:
    return {
        "metadata": {"name": name, "labels": {naming.LABEL_AGENT: agent}},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "worker",
                    "ready": False,
                    "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
                }
            ],
        },
    }


def test_failing_worker_pods_degrade_the_tree_naming_the_agent_and_quoting_the_kubelet():
    pod = ObservedPod.from_object(crash_looping_pod())
    assert pod == ObservedPod(
        "invoice-invoice-specialist-7f9c-abcde", "invoice-specialist", "CrashLoopBackOff",
        "last exit 1 (Error); back-off 40s restarting",
    )  # fmt: skip
    # One of two pods crash-loops; the other is ready.
    observed = [*ALL_READY[:2], ready("invoice-specialist", 2, ready_count=1), ALL_READY[3]]
    status = plan(observed=observed, pods=[pod]).status
    degraded = get(status["conditions"], "Degraded")
    assert degraded["reason"] == "WorkersFailing"
    assert degraded["message"] == (
        "spec.agents[2] (invoice-specialist): worker pod invoice-invoice-specialist-7f9c-abcde CrashLoopBackOff: "
        "last exit 1 (Error); back-off 40s restarting"
    )
    assert stalled(status) == ("False", "True")
    assert status["ready"] == "3/4" and get(status["conditions"], "Ready")["status"] == "False"
    # The pod restarts fine: nothing failing left in the index.
    assert plan(observed=ALL_READY, pods=[]).status["ready"] == "4/4"


def test_only_waiting_reasons_that_need_a_fix_count():
    def pod_waiting(reason: str | None, message: str = "") -> dict:
        obj = crash_looping_pod()
        cs = obj["status"]["containerStatuses"][0]
        cs.pop("lastState")
        cs["state"] = {"waiting": {"reason": reason, "message": message}} if reason else {"running": {}}
        return obj

    for reason in ("ContainerCreating", "PodInitializing", None):
        assert ObservedPod.from_object(pod_waiting(reason)) is None, reason
    pulled = ObservedPod.from_object(pod_waiting("ImagePullBackOff", 'Back-off pulling image "nope:1"'))
    assert (pulled.reason, pulled.message) == ("ImagePullBackOff", 'Back-off pulling image "nope:1"')
    assert ObservedPod.from_object({"metadata": {"name": "x"}}) is None
    # A Deployment-level refusal wins over a pod's reason for the same agent.
    status = plan(observed=[*ALL_READY[:2], failing("invoice-specialist", 2, REFUSED), ALL_READY[3]], pods=[pulled])
    assert get(status.status["conditions"], "Degraded")["reason"] == "WorkersRefused"


def test_a_cost_budget_without_pricing_is_a_degraded_condition_naming_the_field():
    spec = invoice_spec()
    spec["budgets"] = {"maxCostUSD": 1.0}
    spec["agents"].append({"name": "llm", "model": {"name": "m"}})
    spec["agents"][0].setdefault("children", []).append("llm")
    degraded = get(plan(spec=spec).status["conditions"], "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "InvalidSpec"
    assert "spec.budgets.maxCostUSD: agent 'llm' has no model.pricing (agents[4].model.pricing)" in degraded["message"]
