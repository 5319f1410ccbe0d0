"""The pure AgentTree reconciler: what to apply, what to delete, which status to write."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from agent_tree_operator.config import OperatorConfig
from agent_tree_operator.reconcile.conditions import get
from agent_tree_operator.reconcile.trees import ObservedDeployment, parse_spec, plan_tree, spec_revision, status_changed

from agent_tree import naming

ROOT = Path(__file__).resolve().parents[2]
CONFIG = OperatorConfig()
NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"


def invoice_spec() -> dict:
    return yaml.safe_load((ROOT / "examples" / "invoice" / "agenttree.yaml").read_text())["spec"]


def plan(spec=None, observed=(), old=None, now=NOW, secrets=None, generation=1):
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
