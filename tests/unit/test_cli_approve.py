"""``agent-tree approve`` / ``reject``: choosing the approval and the messages, without a cluster."""

from __future__ import annotations

import pytest
from agent_tree_operator.commands.deciding import split_target

from agent_tree.cli import main
from agent_tree.run_requests import Refused, already_decided, choose


def approval(approval_id: str, tool: str = "issue_refund", decision=None, status=None) -> dict:
    spec = {"request": {"id": approval_id, "tool": tool, "run": "r1", "agent": "refunds", "runUID": "u"}}
    if decision:
        spec["decision"] = decision
        spec["decidedBy"] = {"username": "alice"}
    return {"metadata": {"name": f"r1-{approval_id}"}, "spec": spec, "status": status or {"phase": "Pending"}}


RUNNING = {"metadata": {"name": "r1", "uid": "u"}, "status": {"phase": "AwaitingApproval"}}
DONE = {"metadata": {"name": "r1", "uid": "u"}, "status": {"phase": "Succeeded"}}


def test_target_is_namespace_slash_run():
    assert split_target("billing/refund-7") == ("billing", "refund-7")
    for bad in ("refund-7", "/r", "ns/", "a/b/c"):
        with pytest.raises(Refused, match="expected NAMESPACE/RUN"):
            split_target(bad)


def test_the_one_pending_approval_needs_no_id():
    one = approval("a1")
    assert choose("ns", "r1", RUNNING, [approval("a0", decision="approve"), one], None) is one


def test_an_unknown_id_lists_the_pending_ones():
    with pytest.raises(Refused, match=r"has no approval 'a9'; pending: a1 \(issue_refund\), a2 \(wire\)"):
        choose("ns", "r1", RUNNING, [approval("a1"), approval("a2", "wire")], "a9")


def test_several_pending_need_an_id():
    with pytest.raises(Refused, match="waits for 2 approvals; name one: a1"):
        choose("ns", "r1", RUNNING, [approval("a1"), approval("a2")], None)


def test_a_finished_run_has_nothing_to_decide():
    with pytest.raises(Refused, match="is Succeeded: nothing waits"):
        choose("ns", "r1", DONE, [approval("a1", decision="approve")], None)
    with pytest.raises(Refused, match="is Succeeded and has no approval 'a9'"):
        choose("ns", "r1", DONE, [], "a9")


def test_same_decision_twice_is_idempotent_and_the_other_one_is_refused():
    decided = approval("a1", decision="approve")
    assert "already approved by alice; nothing to do" in already_decided(decided, "approve")
    with pytest.raises(Refused, match="already approved by alice; a decision never changes"):
        already_decided(decided, "reject")
    assert already_decided(approval("a1"), "approve") is None


def test_a_timeout_decision_in_status_counts_as_decided():
    timed_out = approval(
        "a1", status={"phase": "Rejected", "decision": "reject", "decidedBy": {"username": "system:timeout"}}
    )
    assert "already rejected by system:timeout" in already_decided(timed_out, "reject")
    with pytest.raises(Refused, match="already rejected by system:timeout"):
        already_decided(timed_out, "approve")


def test_an_undeliverable_approval_says_why():
    ended = approval("a1", status={"phase": "Undeliverable", "message": "the run ended (Cancelled) before a decision"})
    with pytest.raises(Refused, match="cannot be decided: the run ended"):
        already_decided(ended, "approve")


def test_bad_target_exits_2(capsys):
    assert main(["approve", "no-slash"]) == 2
    assert "expected NAMESPACE/RUN" in capsys.readouterr().err
