"""The pure AgentRun summary: progress events and results folded into a small, coalesced status."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from agent_tree_operator.reconcile.conditions import get
from agent_tree_operator.reconcile.runs import (
    Coalescer,
    LiveRun,
    bounded,
    check_tree,
    format_duration,
    status_patch,
)

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:00:07Z"


def status(live: LiveRun, **kw) -> dict:
    return live.status(
        answer_max=kw.get("answer_max", 1024),
        max_bytes=kw.get("max_bytes", 4096),
        now=dt.datetime(2026, 1, 1, 0, 0, 3, tzinfo=dt.UTC),
    )


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
    assert s["duration"] == "3s"


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
    assert get(first["conditions"], "Succeeded")["lastTransitionTime"] == NOW
    written = dict(first)
    # Only the duration moved: no write.
    later = live.status(answer_max=1024, max_bytes=4096, now=dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.UTC))
    assert status_patch(written, later, now=LATER, generation=1) is None
    live.apply_event({"type": "agent_start", "agent": "triage"}, "1-1")
    moved = live.status(answer_max=1024, max_bytes=4096, now=dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.UTC))
    assert status_patch(written, moved, now=LATER, generation=1) == {"currentAgent": "triage", "duration": "1m0s"}


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
