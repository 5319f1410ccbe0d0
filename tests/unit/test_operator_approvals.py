"""The operator's approval logic, pure: steps -> AgentRun status and Events, AgentApprovals, delivery."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

from agent_tree_operator import metrics
from agent_tree_operator.adapters.kube import KubeError
from agent_tree_operator.handlers.approvals import deliver
from agent_tree_operator.reconcile.approvals import (
    approval_manifest,
    arguments_text,
    decided_status,
    decision_of,
    delivered_status,
    needs_delivery,
    parse_request,
)
from agent_tree_operator.reconcile.runs import LiveRun, plan_write

from agent_tree import naming
from agent_tree.contract import APPROVAL_DECIDED, APPROVAL_REQUESTED
from agent_tree.contract.control import TIMEOUT_DECIDER, ApprovalDecision, Decider, DecisionAck
from agent_tree.spec import AgentRunStatus

REQUEST = {
    "id": "a-3-1",
    "agent": "refunds",
    "tool": "issue_refund",
    "arguments": {"invoice_id": "4821", "amount": 120},
    "requested_at": "2026-12-02T12:00:00Z",
    "expires_at": "2026-12-02T13:00:00Z",
    "on_timeout": "reject",
    "approvers": {"users": ["alice"], "groups": ["finance"]},
}
ALICE = {"username": "alice", "groups": ["finance", "system:authenticated"]}


def requested(**over):
    return {"type": APPROVAL_REQUESTED, "agent": "refunds", **REQUEST, **over}


def decided(decision="approve", by=ALICE, reason="ok", approval_id="a-3-1"):
    return {
        "type": APPROVAL_DECIDED,
        "agent": "refunds",
        "id": approval_id,
        "decision": decision,
        "decided_by": by,
        "reason": reason,
        "decided_at": "2026-12-02T12:05:00Z",
    }


def running_live() -> LiveRun:
    live = LiveRun.from_status({}, ref="ns1/refund-1")
    live.running("wf", "rev", "desk", "2026-12-02T12:00:00Z")
    return live


def status(live: LiveRun) -> dict:
    return live.status(answer_max=200, max_bytes=4096)


def condition(st: dict, type_: str) -> dict:
    return next(c for c in st["conditions"] if c["type"] == type_)


def test_a_requested_approval_makes_the_run_wait_and_says_how_to_decide():
    live = running_live()
    events = live.apply_event(requested(), "1-0")
    assert live.phase == "AwaitingApproval"
    st = status(live)
    AgentRunStatus.model_validate(st)  # what the operator writes fits the CRD's status model
    assert st["phase"] == "AwaitingApproval" and st["waiting"] == "approval: issue_refund"
    assert st["approvals"] == [
        {
            "id": "a-3-1",
            "agent": "refunds",
            "tool": "issue_refund",
            "arguments": '{"amount": 120, "invoice_id": "4821"}',  # sorted: stream and query agree
            "requestedAt": "2026-12-02T12:00:00Z",
            "expiresAt": "2026-12-02T13:00:00Z",
            "approval": naming.approval_name("refund-1", "a-3-1"),
        }
    ]
    reconciling = condition(st, "Reconciling")  # kstatus: InProgress while it waits
    assert reconciling["status"] == "True" and reconciling["reason"] == "AwaitingApproval"
    assert "agent-tree approve ns1/refund-1 a-3-1" in reconciling["message"]
    assert [e.reason for e in events] == ["ApprovalRequested"]
    assert "issue_refund" in events[0].message and "agent-tree approve ns1/refund-1 a-3-1" in events[0].message
    # the same stream entry again (a replay) changes nothing and posts nothing
    assert live.apply_event(requested(), "1-0") == []


def test_a_decision_lets_the_run_go_on_and_names_who_decided():
    live = running_live()
    live.apply_event(requested(), "1-0")
    events = live.apply_event(decided(reason="within policy"), "2-0")
    assert live.phase == "Running" and live.reason == "Running"
    st = status(live)
    assert st["approvals"] is None and st["waiting"] is None
    assert [e.reason for e in events] == ["ApprovalDecided"]
    assert "approved by alice" in events[0].message and "within policy" in events[0].message
    assert live.approvals.decided["a-3-1"]["decided_by"]["username"] == "alice"
    # a replayed request of a decided approval does not bring it back
    assert live.apply_event(requested(), "3-0") == [] and live.phase == "Running"


def test_a_timeout_decision_says_so():
    live = running_live()
    live.apply_event(requested(), "1-0")
    events = live.apply_event(decided("reject", {"username": TIMEOUT_DECIDER}, ""), "2-0")
    assert "rejected by system:timeout (onTimeout" in events[0].message
    st = decided_status(live.approvals.decided["a-3-1"])
    assert st["phase"] == "Rejected" and st["decidedBy"]["username"] == TIMEOUT_DECIDER
    assert "onTimeout applied" in st["message"] and "reason" not in st  # None values would delete fields


def test_phase_change_is_written_at_once_and_removed_approvals_are_nulled():
    live = running_live()
    written = status(live)
    live.apply_event(requested(), "1-0")
    plan = plan_write(written, status(live), final=False, now=10.0, last_write=9.9, interval=1.0)
    assert plan.patch is not None and plan.patch["phase"] == "AwaitingApproval" and plan.patch["approvals"]
    written.update(plan.patch)
    live.apply_event(decided(), "2-0")
    plan = plan_write(written, status(live), final=False, now=10.1, last_write=10.0, interval=1.0)
    assert plan.patch["phase"] == "Running" and plan.patch["approvals"] is None and plan.patch["waiting"] is None


def test_a_run_without_approvals_writes_no_approval_fields():
    live = running_live()
    assert "approvals" not in (plan_write({}, status(live), final=False, now=1, last_write=None, interval=1).patch)


def test_resumed_run_keeps_waiting_without_announcing_again():
    live = running_live()
    live.apply_event(requested(), "1-0")
    written = status(live)
    resumed = LiveRun.from_status(written, ref="ns1/refund-1")
    resumed.running("wf", "rev", None, "2026-12-02T12:10:00Z")
    assert resumed.phase == "AwaitingApproval"  # no flap through Running after an operator restart
    assert resumed.apply_event(requested(), "1-0") == []  # the stream replayed from its start
    assert resumed.approvals.requests["a-3-1"].tool == "issue_refund"  # full request: can re-create the object


def test_arguments_read_the_same_from_the_stream_and_the_query():
    live = running_live()
    live.apply_event(requested(arguments={"b": 1, "a": 2}), "1-0")
    from_stream = status(live)["approvals"]
    live.apply_progress({"approvals": [{**REQUEST, "arguments": {"a": 2, "b": 1}}]})
    assert status(live)["approvals"] == from_stream


def test_progress_query_list_replaces_the_pending_ones():
    live = running_live()
    live.apply_event(requested(), "1-0")
    live.apply_progress({"current_agent": "refunds", "approvals": [{**REQUEST, "id": "b-4"}]})
    assert list(live.approvals.pending) == ["b-4"] and live.phase == "AwaitingApproval"
    live.apply_progress({"current_agent": "refunds", "approvals": []})
    assert live.phase == "Running" and not live.approvals.pending


def test_finished_run_shows_no_pending_approvals():
    live = running_live()
    live.apply_event(requested(), "1-0")
    live.finish_with_error("Cancelled", "Cancelled", "cancelled", "2026-12-02T12:30:00Z")
    st = status(live)
    assert st["phase"] == "Cancelled" and st["approvals"] is None and st["waiting"] is None


def test_approval_manifest_is_owned_by_the_run_and_cuts_arguments():
    request = parse_request({**REQUEST, "arguments": {"note": "x" * 5000}})
    manifest = approval_manifest("ns1", "refund-1", "uid-1", request)
    meta = manifest["metadata"]
    assert meta["name"] == naming.approval_name("refund-1", "a-3-1") and meta["namespace"] == "ns1"
    assert meta["labels"][naming.LABEL_RUN] == "refund-1"
    assert meta["ownerReferences"][0] == {
        "apiVersion": "agenttree.io/v1alpha1",
        "kind": "AgentRun",
        "name": "refund-1",
        "uid": "uid-1",
        "controller": True,
    }
    req = manifest["spec"]["request"]
    assert "decision" not in manifest["spec"]  # the admission policy refuses a created decision
    assert len(req["arguments"].encode()) <= 2048 and req["arguments"].endswith("…")
    assert req["approvers"] == {"users": ["alice"], "groups": ["finance"]} and req["onTimeout"] == "reject"
    assert req["run"] == "refund-1" and req["runUID"] == "uid-1" and req["id"] == "a-3-1"


def test_names_are_valid_kubernetes_names_for_any_id():
    name = naming.approval_name("r" * 250, "3.1/ü")
    assert len(name) <= 253 and name == name.lower() and all(c.isalnum() or c == "-" for c in name)
    assert naming.approval_name("r" * 250, "3.1/ü") == name  # stable: re-creating is idempotent
    assert naming.approval_name("run", "a") != naming.approval_name("run", "A")
    assert len(naming.run_label("x" * 100)) <= 63 and len(naming.approval_id_label("y" * 100)) <= 63


def test_arguments_text_cuts_on_a_character_boundary():
    text = arguments_text({"k": "é" * 3000}, limit=101)
    assert len(text.encode()) <= 101 and text.endswith("…")
    assert arguments_text(None) == "" and arguments_text("plain") == "plain"


def test_delivery_needed_only_for_a_written_undelivered_decision():
    assert not needs_delivery({"request": {}}, {})
    assert needs_delivery({"decision": "approve"}, {"phase": "Pending"})
    assert not needs_delivery({"decision": "approve"}, {"delivered": True})
    assert not needs_delivery({"decision": "approve"}, {"phase": "Undeliverable"})


def test_decision_and_status_of_delivery():
    spec = {"request": {"id": "a-3-1", "run": "r", "runUID": "u"}, "decision": "reject", "decidedBy": ALICE}
    sent = decision_of(spec, "2026-12-02T12:05:00Z")
    assert sent == ApprovalDecision(
        id="a-3-1", decision="reject", decided_by=Decider(**ALICE), reason="", decided_at="2026-12-02T12:05:00Z"
    )
    ours = delivered_status(
        DecisionAck(id="a-3-1", decision="reject", decided_by=Decider(**ALICE), accepted=True), sent
    )
    assert ours["phase"] == "Rejected" and ours["delivered"] and ours["accepted"] and "message" not in ours
    first = DecisionAck(id="a-3-1", decision="approve", decided_by=Decider(username=TIMEOUT_DECIDER), accepted=False)
    st = delivered_status(first, sent)
    assert st["phase"] == "Approved" and st["accepted"] is False
    assert "approve by system:timeout" in st["message"] and "reject by alice was not taken" in st["message"]


def test_pending_approvals_gauge():
    gauge = metrics.PendingApprovals()
    gauge.set("a", 2)
    gauge.set("b", 1)
    assert gauge.gauge._value.get() == 3
    gauge.drop("a")
    gauge.set("b", 0)
    assert gauge.gauge._value.get() == 0 and gauge.counts == {}


async def test_delivery_stops_when_the_approval_was_deleted_meanwhile():
    """The run got the decision, but the AgentApproval is gone (its run was deleted): the delivery task
    ends instead of retrying its status write forever; another write error is retried."""
    ack = DecisionAck(id="a-3-1", decision="approve", decided_by=Decider(**ALICE), accepted=True)
    writes: list[int] = []

    async def decide(workflow_id, sent):
        return ack

    async def patch_status(plural, namespace, name, status):
        writes.append(len(writes))
        raise KubeError(503 if len(writes) == 1 else 404, "x", "PATCH", f"/{name}")

    ctx = SimpleNamespace(temporal=SimpleNamespace(decide=decide), kube=SimpleNamespace(patch_status=patch_status))
    body = {
        "metadata": {"namespace": "ns", "name": "r-a-3-1"},
        "spec": {"request": {"id": "a-3-1", "run": "r", "runUID": "u"}, "decision": "approve", "decidedBy": ALICE},
    }
    await asyncio.wait_for(deliver(ctx, body, logging.getLogger("test")), timeout=10)
    assert writes == [0, 1]  # the 503 was retried once, the 404 ended it
