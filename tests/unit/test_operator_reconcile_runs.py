"""The pure AgentRun summary: progress events and results folded into a small, coalesced status."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from agent_tree_operator import crdgen
from agent_tree_operator.reconcile.conditions import get
from agent_tree_operator.reconcile.run_plan import RunObserved, check_tree, plan_run
from agent_tree_operator.reconcile.runs import (
    Coalescer,
    LiveRun,
    bounded,
    format_duration,
    initial_status,
    plan_write,
    status_patch,
)
from platformlib import built_tool

ROOT = Path(__file__).resolve().parents[2]
NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:00:07Z"


def status(live: LiveRun, **kw) -> dict:
    return live.status(answer_max=kw.get("answer_max", 1024), max_bytes=kw.get("max_bytes", 4096))


def running() -> LiveRun:
    live = LiveRun()
    live.running("agentrun.ns.r.u", "rev1", "supervisor", NOW)
    return live


def test_pending_then_running():
    live = LiveRun()
    live.pending("TreeNotFound", "AgentTree 'invoice' not found in namespace 'ns' (spec.treeRef.name)")
    s = status(live)
    assert s["phase"] == "Pending"
    succeeded = get(s["conditions"], "Succeeded")
    assert succeeded["status"] == "Unknown" and succeeded["reason"] == "TreeNotFound"
    assert "spec.treeRef.name" in succeeded["message"]
    live.running("agentrun.ns.r.u", "rev1", "supervisor", NOW)
    s = status(live)
    assert (s["phase"], s["currentAgent"], s["treeRevision"], s["startedAt"], s["message"]) == (
        "Running",
        "supervisor",
        "rev1",
        NOW,
        None,
    )
    # DURATION stays empty until the run finishes (it read a frozen "0s" for the whole run before).
    assert s["duration"] is None


def test_events_move_the_current_agent_and_count_handoffs():
    live = running()
    events = []
    for i, event in enumerate(
        [
            {"type": "agent_start", "agent": "supervisor"},
            {"type": "agent_start", "agent": "triage"},
            {"type": "tool_start", "agent": "triage", "tool": "x"},
            {
                "type": "handoff",
                "agent": "triage",
                "to_agent": "supervisor",
                "status": "needs_more_info",
                "summary": "invoice #4821",
            },
            {"type": "agent_start", "agent": "invoice-specialist"},
        ]
    ):
        events += live.apply_event(event, f"1-{i}")
    assert live.current_agent == "invoice-specialist"
    assert live.steps == 1
    assert [(e.reason, e.message) for e in events] == [
        ("Handoff", "triage -> supervisor [needs_more_info]: invoice #4821")
    ]
    assert live.apply_event({"type": "handoff", "agent": "x"}, "1-3") == []  # replayed entry: ignored
    assert live.steps == 1


def test_progress_query_fallback():
    live = running()
    events = live.apply_progress(
        {"phase": "Running", "currentAgent": "triage", "steps": 2, "tokenUsage": 10, "plan": {"route": ["triage"]}}
    )
    assert (live.current_agent, live.steps, live.token_usage, live.plan) == ("triage", 2, 10, {"route": ["triage"]})
    assert [e.message for e in events] == ["supervisor -> triage"]
    assert live.apply_progress(None) == []
    assert live.apply_progress({"currentAgent": "triage", "steps": 1}) == []  # never goes backwards
    assert live.steps == 2


@pytest.mark.parametrize(
    ("result_status", "phase", "reason", "succeeded"),
    [
        ("completed", "Succeeded", "Completed", "True"),
        ("failed", "Failed", "AgentsFailed", "False"),
        ("max_steps_reached", "Failed", "MaxStepsReached", "False"),
        ("cancelled", "Cancelled", "Cancelled", "False"),
    ],
)
def test_final_state_from_the_workflow_result(result_status, phase, reason, succeeded):
    live = running()
    result = {
        "answer": "Invoice #4821 rejected due to missing PO number.",
        "status": result_status,
        "final_agent": "verifier",
        "payload": {"invoice_id": "4821"},
        "plan": {"route": ["triage"]},
        "steps": 3,
        "token_usage": 0,
    }
    event = live.finish_with_result(result, LATER)
    s = status(live)
    assert (s["phase"], s["currentAgent"], s["steps"], s["completedAt"], s["duration"]) == (
        phase,
        "verifier",
        3,
        LATER,
        "7s",
    )
    assert s["answer"] == result["answer"] and s["result"] == {"invoice_id": "4821"}
    assert get(s["conditions"], "Succeeded")["status"] == succeeded
    assert get(s["conditions"], "Succeeded")["reason"] == reason
    assert get(s["conditions"], "Failed")["status"] == ("False" if succeeded == "True" else "True")
    assert event.type == ("Normal" if phase == "Succeeded" else "Warning")
    assert live.final


def test_failures_without_result():
    live = running()
    live.finish_with_error("Failed", "Timeout", "the run exceeded spec.timeoutSeconds", LATER)
    s = status(live)
    assert s["phase"] == "Failed" and s["message"] == "the run exceeded spec.timeoutSeconds"
    assert get(s["conditions"], "Failed")["reason"] == "Timeout"


def test_a_run_stopped_by_a_budget_fails_with_reason_budget_exceeded():
    live = running()
    live.finish_with_result(
        {
            "status": "failed",
            "answer": "token budget exceeded: 500 tokens used, spec.budgets.maxTokens is 100",
            "reason": "BudgetExceeded",
            "steps": 2,
        },
        LATER,
    )
    s = status(live)
    assert s["phase"] == "Failed"
    assert get(s["conditions"], "Failed")["reason"] == "BudgetExceeded"
    assert "spec.budgets.maxTokens" in s["message"]
    # Without a reason (the agents failed) the reason stays AgentsFailed.
    other = running()
    other.finish_with_result({"status": "failed", "answer": "nobody could", "steps": 2}, LATER)
    assert get(status(other)["conditions"], "Failed")["reason"] == "AgentsFailed"


def test_status_stays_a_small_summary():
    live = running()
    live.finish_with_result(
        {"answer": "x" * 5000, "status": "completed", "payload": {"blob": "y" * 100_000}, "steps": 1}, LATER
    )
    s = status(live, answer_max=100, max_bytes=1024)
    assert len(s["answer"]) == 100 and s["answer"].endswith("…")
    assert s["result"] == {"truncated": True, "bytes": 100_012, "keys": ["blob"], "see": "agent-tree history"}
    assert len(json.dumps(s)) < 2048
    assert bounded([1, 2], 100) == {"value": [1, 2]}


def test_status_patch_only_when_something_changed():
    live = running()
    first = status_patch({}, status(live), now=NOW, generation=1)
    assert first["phase"] == "Running" and first["observedGeneration"] == 1
    assert "duration" not in first
    assert get(first["conditions"], "Succeeded")["lastTransitionTime"] == NOW
    written = dict(first)
    assert status_patch(written, status(live), now=LATER, generation=1) is None
    live.apply_event({"type": "agent_start", "agent": "triage"}, "1-1")
    assert status_patch(written, status(live), now=LATER, generation=1) == {"currentAgent": "triage"}
    # A stale "0s" written by an older operator alone is no reason to write; it goes with the next change.
    stale = {**written, "currentAgent": "triage", "duration": "0s"}
    assert status_patch(stale, status(live), now=LATER, generation=1) is None
    live.finish_with_result({"status": "completed", "answer": "done", "steps": 1}, LATER)
    final = status_patch(stale, status(live), now=LATER, generation=1)
    assert final["duration"] == "7s" and final["phase"] == "Succeeded"


def test_resume_from_a_written_status():
    live = running()
    live.apply_event({"type": "handoff", "agent": "triage"}, "1-0")
    again = LiveRun.from_status(status(live))
    assert (again.phase, again.current_agent, again.steps, again.workflow_id, again.tree_revision) == (
        "Running",
        "supervisor",
        1,
        "agentrun.ns.r.u",
        "rev1",
    )
    assert status_patch(status(live), status(again)) is None


def test_coalescer():
    c = Coalescer(1.0)
    assert c.wait_time(10.0) == 0
    c.wrote(10.0)
    assert c.wait_time(10.25) == pytest.approx(0.75)
    assert c.wait_time(11.5) == 0


# --- plan_write: the coalescing plan (pure) --------------------------------------------------------

CREATED = initial_status()  # what a brand-new run reads: the CRD's default status


def at(phase: str, agent: str = "supervisor", steps: int = 0) -> dict:
    live = running()
    live.current_agent, live.steps = agent, steps
    if phase == "Succeeded":
        live.finish_with_result({"status": "completed", "answer": "ok", "final_agent": agent, "steps": steps}, LATER)
    return status(live)


RUNNING, TRIAGE, DONE = at("Running"), at("Running", "triage", 1), at("Succeeded", "verifier", 3)


def pending(reason: str) -> dict:
    live = LiveRun()
    live.pending(reason, f"waiting: {reason}")
    return status(live)


PENDING, PENDING_DEGRADED = pending("TreeNotFound"), pending("TreeDegraded")


@pytest.mark.parametrize(
    ("case", "written", "desired", "final", "now", "last_write", "write", "due_in"),
    [
        ("first write when the run starts: at once", CREATED, RUNNING, False, 5.0, None, True, None),
        ("Pending (waited) -> Running: at once", PENDING, RUNNING, False, 5.1, 5.0, True, None),
        ("Pending reason changes inside the interval: waits", PENDING, PENDING_DEGRADED, False, 5.1, 5.0, False, 0.9),
        ("nothing changed: no write", RUNNING, RUNNING, False, 9.0, 5.0, False, None),
        ("nothing changed, even the final pass: no write", DONE, DONE, True, 5.1, 5.0, False, None),
        ("a change inside the interval waits", RUNNING, TRIAGE, False, 5.3, 5.0, False, 0.7),
        ("a change once the interval passed: at once", RUNNING, TRIAGE, False, 6.0, 5.0, True, None),
        ("the final write never waits for the interval", RUNNING, DONE, True, 5.1, 5.0, True, None),
        ("the final write after a held-back change: one write", RUNNING, DONE, True, 5.9, 5.0, True, None),
    ],
)
def test_plan_write_table(case, written, desired, final, now, last_write, write, due_in):
    plan = plan_write(written, desired, final=final, now=now, last_write=last_write, interval=1.0, generation=1)
    assert (plan.patch is not None) == write, case
    assert plan.due_in == (pytest.approx(due_in) if due_in is not None else None), case
    if write:
        assert {**written, **plan.patch}["phase"] == desired["phase"], case


def test_a_run_shorter_than_the_interval_writes_twice_and_its_end_is_not_delayed():
    """Replays a ~0.5 s run (interval 1 s) through plan_write, pass by pass, as the follower does."""
    written, last, writes = dict(CREATED), None, []
    timeline = [  # (monotonic time, summary, final)
        (0.00, RUNNING, False),
        (0.10, TRIAGE, False),
        (0.20, at("Running", "invoice-specialist", 2), False),
        (0.35, at("Running", "verifier", 2), False),
        (0.50, DONE, True),
    ]
    for now, desired, final in timeline:
        plan = plan_write(written, desired, final=final, now=now, last_write=last, interval=1.0, generation=1)
        if plan.patch is not None:
            written.update(plan.patch)
            last = now
            writes.append((now, written["phase"]))
    assert writes == [(0.0, "Running"), (0.5, "Succeeded")]
    assert written["currentAgent"] == "verifier" and written["steps"] == 3


def test_a_long_run_writes_at_most_once_per_interval_on_change():
    written, last, writes = dict(CREATED), None, 0
    agents = ["triage", "invoice-specialist", "verifier"]
    for tick in range(100):  # 10 s of progress every 0.1 s, interval 1 s
        now = tick / 10
        plan = plan_write(
            written, at("Running", agents[tick % 3], tick), final=False, now=now, last_write=last, interval=1.0
        )
        if plan.patch is not None:
            written.update(plan.patch)
            last = now
            writes += 1
    assert 9 <= writes <= 11  # one per interval, never one per step (100 steps)


# --- plan_run: observed -> what to do (pure) --------------------------------------------------------

TREE_OK = ("<spec>", "TreeResolved", "")
TREE_MISSING = (None, "TreeNotFound", "AgentTree 'invoice' not found (spec.treeRef.name)")
TREE_DEGRADED = (None, "TreeDegraded", "AgentTree 'invoice' is Degraded (WorkersRefused): ...")


@pytest.mark.parametrize(
    ("case", "observed", "action", "reason", "phase"),
    [
        ("tree ready: start at once", RunObserved(tree=TREE_OK, age=0.2), "start", "", None),
        ("tree missing: wait, saying why", RunObserved(tree=TREE_MISSING, age=1), "wait", "TreeNotFound", None),
        ("tree degraded: wait", RunObserved(tree=TREE_DEGRADED, age=1), "wait", "TreeDegraded", None),
        (
            "cancel annotation before the start: Cancelled",
            RunObserved(tree=TREE_MISSING, cancel_requested=True),
            "finish",
            "Cancelled",
            "Cancelled",
        ),
        (
            "pending past timeoutSeconds: Failed Timeout",
            RunObserved(tree=TREE_MISSING, age=61, timeout_seconds=60),
            "finish",
            "Timeout",
            "Failed",
        ),
        (
            "deadline passed even if the tree is ready now",
            RunObserved(tree=TREE_OK, age=61, timeout_seconds=60),
            "finish",
            "Timeout",
            "Failed",
        ),
        ("within timeoutSeconds: wait", RunObserved(tree=TREE_MISSING, age=59, timeout_seconds=60), "wait", "", None),
        ("started: follow", RunObserved(phase="Running", started=True), "follow", "", None),
        (
            "started + cancel annotation: cancel the workflow once",
            RunObserved(phase="Running", started=True, cancel_requested=True),
            "cancel",
            "CancelRequested",
            None,
        ),
        (
            "cancel already sent: follow",
            RunObserved(phase="Running", started=True, cancel_requested=True, cancel_sent=True),
            "follow",
            "",
            None,
        ),
        ("finished: nothing to do", RunObserved(phase="Succeeded", started=True), "done", "", None),
    ],
)
def test_plan_run_table(case, observed, action, reason, phase):
    plan = plan_run(observed)
    assert plan.action == action, case
    if reason:
        assert plan.reason == reason, case
    assert plan.phase == phase, case
    if action == "start":
        assert plan.spec == "<spec>"
    if action == "wait":
        assert plan.message == observed.tree[2]  # the reason a run waits is shown to the user
    if reason == "Timeout":
        assert "spec.timeoutSeconds=60" in plan.message


def test_check_tree():
    spec, reason, message = check_tree("ns", "invoice", None)
    assert spec is None and reason == "TreeNotFound" and "spec.treeRef.name" in message
    spec, reason, message = check_tree(
        "ns", "t", {"root": "a", "agents": [{"name": "a", "children": ["b"]}, {"name": "b", "children": ["a"]}]}
    )
    assert spec is None and reason == "TreeInvalid" and "spec.agents" in message
    spec, reason, _ = check_tree(
        "ns", "t", {"root": "a", "agents": [{"name": "a", "children": ["b"]}, {"name": "b", "entrypoint": "m:f"}]}
    )
    assert spec.root == "a" and reason == "TreeResolved"


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59, "59s"), (92, "1m32s"), (7380, "2h3m"), (97200, "1d3h")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_check_tree_waits_on_a_degraded_tree_and_quotes_its_reason():
    tree = {"root": "a", "agents": [{"name": "a", "entrypoint": "m:f"}]}
    cause = "spec.agents[0] (a): worker pods refused (FailedCreate): pods is forbidden: exceeded quota: q"
    degraded = {"conditions": [{"type": "Degraded", "status": "True", "reason": "WorkersRefused", "message": cause}]}
    spec, reason, message = check_tree("ns", "t", tree, degraded)
    assert spec is None and reason == "TreeDegraded"
    assert message.startswith("AgentTree 't' is Degraded (WorkersRefused): spec.agents[0] (a): worker pods refused")
    assert message.endswith("the run starts when the tree recovers")
    healthy = {"conditions": [{"type": "Degraded", "status": "False", "reason": "AsExpected", "message": ""}]}
    assert check_tree("ns", "t", tree, healthy)[1] == "TreeResolved"
    assert check_tree("ns", "t", tree, {})[1] == "TreeResolved"  # not reconciled yet: nothing says it is broken


def by_type(conditions: list[dict]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in conditions}


def test_conditions_for_kstatus_and_kubectl_wait_in_every_phase():
    pending = LiveRun()
    pending.pending("TreeDegraded", "AgentTree 't' is Degraded (WorkersRefused): ...")
    assert by_type(status(pending)["conditions"]) == {
        "Succeeded": ("Unknown", "TreeDegraded"),
        "Failed": ("False", "TreeDegraded"),
        "Reconciling": ("True", "TreeDegraded"),
        "Stalled": ("False", "TreeDegraded"),
    }
    assert get(status(pending)["conditions"], "Reconciling")["message"].startswith("AgentTree 't' is Degraded")
    live = running()
    assert by_type(status(live)["conditions"])["Reconciling"] == ("True", "Running")
    assert get(status(live)["conditions"], "Reconciling")["message"] == "workflow agentrun.ns.r.u is running"
    waiting = running()
    waiting.phase = waiting.reason = "AwaitingApproval"  # a phase a later issue adds: still in progress
    assert by_type(status(waiting)["conditions"])["Reconciling"] == ("True", "AwaitingApproval")
    done = running()
    done.finish_with_result({"status": "completed", "answer": "ok"}, LATER)
    assert by_type(status(done)["conditions"]) == {
        "Succeeded": ("True", "Completed"),
        "Failed": ("False", "Completed"),
        "Reconciling": ("False", "Completed"),
        "Stalled": ("False", "Completed"),
    }
    for phase, reason in (("Failed", "Timeout"), ("Cancelled", "Cancelled")):
        ended = running()
        ended.finish_with_error(phase, reason, f"the run ended: {reason}", LATER)
        conditions = status(ended)["conditions"]
        assert by_type(conditions) == {
            "Succeeded": ("False", reason),
            "Failed": ("True", reason),
            "Reconciling": ("False", reason),
            "Stalled": ("True", reason),
        }
        assert get(conditions, "Stalled")["message"] == f"the run ended: {reason}"


@pytest.fixture(scope="module")
def kstatus() -> str:
    """The real kstatus helper (hack/build-kstatus.sh: cli-utils from the Go module proxy, cached)."""
    return built_tool("build-kstatus.sh")


def test_the_real_kstatus_library_reads_every_phase_of_a_written_status(kstatus):
    """The statuses the operator writes (status_patch from nothing, as the first write), judged by
    sigs.k8s.io/cli-utils' status.Compute itself."""
    lives: dict[str, LiveRun] = {}
    lives["pending"] = LiveRun()
    lives["pending"].pending("TreeNotFound", "AgentTree 'invoice' not found in namespace 'ns' (spec.treeRef.name)")
    lives["running"] = running()
    lives["awaiting"] = running()
    lives["awaiting"].phase = lives["awaiting"].reason = "AwaitingApproval"
    lives["succeeded"] = running()
    lives["succeeded"].finish_with_result({"status": "completed", "answer": "ok"}, LATER)
    lives["failed"] = running()
    lives["failed"].finish_with_result({"status": "max_steps_reached", "answer": ""}, LATER)
    lives["cancelled"] = running()
    lives["cancelled"].finish_with_error("Cancelled", "Cancelled", "the workflow was cancelled", LATER)
    items = [
        {
            "apiVersion": "agenttree.io/v1alpha1",
            "kind": "AgentRun",
            "metadata": {"name": name, "namespace": "ns", "generation": 1},
            "status": status_patch({}, status(live), now=NOW, generation=1),
        }
        for name, live in lives.items()
    ]
    # Before the operator's first write: the CRD's default status (the API server fills it in).
    items.append({**items[0], "metadata": {"name": "created", "generation": 1}, "status": initial_status()})
    # A spec the operator has not observed yet (generation 2, status of generation 1) is in progress.
    items.append({**items[3], "metadata": {"name": "unobserved", "namespace": "ns", "generation": 2}})
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    proc = subprocess.run([kstatus], input=listing, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = {r["name"]: (r["status"], r["message"]) for r in map(json.loads, proc.stdout.splitlines())}
    assert {name: s for name, (s, _) in got.items()} == {
        "pending": "InProgress",
        "running": "InProgress",
        "awaiting": "InProgress",
        "succeeded": "Current",
        "failed": "Failed",
        "cancelled": "Failed",
        "unobserved": "InProgress",
        "created": "InProgress",
    }
    assert got["created"][1] == "waiting for the agent-tree operator to pick the run up"
    assert "spec.treeRef.name" in got["pending"][1]  # kstatus shows why it waits
    assert got["cancelled"][1] == "the workflow was cancelled"


def test_the_crd_defaults_a_new_runs_status_to_in_progress():
    """Without a default, a run has no conditions until the operator writes, and kstatus reads Current."""
    default = crdgen.agentrun_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert default["default"] == initial_status()
    assert initial_status()["phase"] == "Pending"
    assert get(initial_status()["conditions"], "Reconciling")["status"] == "True"
    assert get(initial_status()["conditions"], "Succeeded")["status"] == "Unknown"
    resumed = LiveRun.from_status(initial_status())
    assert (resumed.phase, resumed.final, resumed.workflow_id) == ("Pending", False, None)


def test_kstatus_helper_names_what_is_wrong_with_bad_input(kstatus):
    cases = {
        "kind: AgentRun\nmetadata: {name: x}\n": "document 1: apiVersion is missing",
        "apiVersion: v1\nkind: AgentRun\nmetadata: {}\n": "metadata.name is missing",
        "---\napiVersion: v1\nkind: X\nmetadata: {name: a}\n---\n[1, 2]\n": "document 2: not a YAML or JSON object",
        "": "holds no Kubernetes object",
    }
    for text, error in cases.items():
        proc = subprocess.run([kstatus, "-"], input=text, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and error in proc.stderr, (text, proc.stderr)
