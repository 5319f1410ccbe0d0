"""Every branch of the supervisor's pure state machine."""

from __future__ import annotations

import pytest

from agent_tree import policy


def handoff(agent: str, status: str, summary: str = "", payload: dict | None = None) -> dict:
    return {
        "from_agent": agent,
        "to_agent": "sup",
        "status": status,
        "summary": summary or f"{agent} {status}",
        "payload": payload or {},
    }


def run(children, replies, max_steps=10, plan=None, context=None):
    """Drive the policy with scripted replies; returns (routes taken, final decision, state)."""
    state = policy.start(children, max_steps, context, plan)
    routes = []
    while isinstance(d := policy.decide(state), policy.Route):
        routes.append((d.agent, d.context, d.step))
        state = policy.observe(state, replies[d.agent])
    return routes, d, state


def test_ok_from_first_child_finishes():
    routes, done, state = run(["a", "b"], {"a": handoff("a", "ok", "answer A", {"x": 1})})
    assert [r[0] for r in routes] == ["a"]
    assert done == policy.Finish("completed", "answer A", "a", {"x": 1})
    assert state.steps == 1


def test_needs_more_info_enriches_context_for_next_child():
    replies = {"a": handoff("a", "needs_more_info", "need id", {"invoice_id": "42"}), "b": handoff("b", "ok", "done")}
    routes, done, _ = run(["a", "b"], replies, context={"user": "u1"})
    assert routes[0][1] == {"user": "u1"}
    assert routes[1][1]["invoice_id"] == "42" and routes[1][1]["user"] == "u1"
    assert routes[1][1][policy.CONTEXT_HISTORY_KEY] == [{"from_agent": "a", "summary": "need id"}]
    assert done.status == "completed" and done.final_agent == "b"


def test_failed_routes_to_next_child_without_enriching():
    replies = {"a": handoff("a", "failed", "boom", {"junk": 1}), "b": handoff("b", "ok", "fine")}
    routes, done, _ = run(["a", "b"], replies)
    assert [r[0] for r in routes] == ["a", "b"]
    assert "junk" not in routes[1][1]
    assert done.answer == "fine"


def test_all_children_failed():
    replies = {"a": handoff("a", "failed", "no A"), "b": handoff("b", "needs_more_info", "no B")}
    _, done, state = run(["a", "b"], replies)
    assert done.status == "failed"
    assert done.answer == "all children failed or asked for more information; last (b): no B"
    assert done.final_agent == "b" and state.steps == 2


def test_max_steps_stops_the_loop():
    replies = {n: handoff(n, "needs_more_info") for n in "abc"}
    routes, done, state = run(["a", "b", "c"], replies, max_steps=2)
    assert [r[0] for r in routes] == ["a", "b"]
    assert done.status == "max_steps_reached"
    assert "max_steps=2" in done.answer and state.steps == 2


def test_no_children_fails_clearly():
    _, done, _ = run([], {})
    assert done.status == "failed" and "no children" in done.answer


def test_plan_route_reorders_but_never_hides_children():
    assert policy.route_order(["a", "b", "c"], {"route": ["c", "zz", "a", "c"]}) == ("c", "a", "b")
    assert policy.route_order(["a", "b"], {"strategy": "x"}) == ("a", "b")
    assert policy.route_order(["a", "b"], {"route": "b"}) == ("a", "b")


def test_max_steps_below_one_is_rejected():
    with pytest.raises(policy.PolicyError, match="max_steps"):
        policy.start(["a"], 0)


def test_state_round_trips_through_json_dicts():
    import json

    state = policy.start(["a", "b"], 5, {"k": 1}, {"route": ["b"]})
    state = policy.observe(state, handoff("b", "needs_more_info", payload={"z": 2}))
    again = policy.SupervisorState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state
    assert policy.decide(again) == policy.decide(state)


def test_decisions_are_deterministic():
    replies = {"a": handoff("a", "needs_more_info", payload={"p": 1}), "b": handoff("b", "ok")}
    assert run(["a", "b"], replies)[:2] == run(["a", "b"], replies)[:2]
