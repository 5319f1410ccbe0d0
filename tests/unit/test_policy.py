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


# --- the run's other stops: budgets, deadline, maxSteps (both executors call these) ---------------


def test_budget_exceeded_names_the_budget_in_the_durable_words():
    assert policy.budget_exceeded(100, 1, {"maxTokens": 100, "maxToolCalls": 1}) is None  # at the budget is fine
    assert (
        policy.budget_exceeded(101, 0, {"maxTokens": 100})
        == "token budget exceeded: 101 tokens used, spec.budgets.maxTokens is 100"
    )
    assert (
        policy.budget_exceeded(0, 2, {"maxToolCalls": 1})
        == "tool call budget exceeded: 2 calls, spec.budgets.maxToolCalls is 1"
    )
    # Tokens are checked first, as the durable executor always did.
    assert policy.budget_exceeded(5, 5, {"maxTokens": 1, "maxToolCalls": 1}).startswith("token budget")
    assert policy.budget_exceeded(10**6, 10**6, None) is None
    assert policy.budget_exceeded(10**6, 10**6, {}) is None


def test_every_budget_of_the_agentrun_spec_is_enforced():
    """A budget added to spec.Budgets must be decided here too (else a run would silently ignore it)."""
    from agent_tree.spec import Budgets

    assert set(Budgets.model_fields) == {*policy.BUDGET_FIELDS, "onExhausted"}
    used = policy.Usage(turns=2, tool_calls=2, tokens=2, cost_usd=2.0)
    priced = {"maxTokens": 10, "pricing": {"inputPerMillionTokens": 1, "outputPerMillionTokens": 1}}
    for name in policy.BUDGET_FIELDS:
        stops = [
            policy.before_turn(used, {name: 1}),
            policy.before_tool_call(used, {name: 1}),
            policy.before_model_call(used, {name: 1}, priced),
        ]
        assert any(s is not None and s.budget == name and f"spec.budgets.{name} is 1" in s.message for s in stops), name


def test_max_turns_is_checked_before_each_turn():
    assert policy.before_turn(policy.Usage(turns=2), {"maxTurns": 3}) is None
    stop = policy.before_turn(policy.Usage(turns=3), {"maxTurns": 3})
    assert stop == policy.Exhausted(
        "maxTurns",
        3,
        3,
        1,
        "budget exhausted: spec.budgets.maxTurns is 3; the run used 3 turns and the next agent turn needs 1 more",
    )
    assert policy.before_tool_call(policy.Usage(turns=9), {"maxTurns": 3}) is None  # turns only gate turns


def test_max_tool_calls_is_checked_before_each_tool_call():
    assert policy.before_tool_call(policy.Usage(tool_calls=1), {"maxToolCalls": 2}) is None
    stop = policy.before_tool_call(policy.Usage(tool_calls=2), {"maxToolCalls": 2})
    assert stop is not None and stop.budget == "maxToolCalls" and "the run used 2 tool calls" in stop.message


def test_max_tokens_reserves_the_calls_max_tokens():
    """A call is made only when used + its max_tokens fits: the run passes maxTokens by at most the
    prompt tokens of its last call."""
    model = {"maxTokens": 100}
    assert policy.before_model_call(policy.Usage(tokens=900), {"maxTokens": 1000}, model) is None
    stop = policy.before_model_call(policy.Usage(tokens=901), {"maxTokens": 1000}, model)
    assert stop is not None and stop.budget == "maxTokens" and stop.needed == 100
    # Unset model.maxTokens reserves the documented default.
    assert policy.reserved_tokens({}) == policy.DEFAULT_RESERVED_TOKENS == 4096
    assert policy.before_model_call(policy.Usage(), {"maxTokens": 4095}, {}) is not None
    # Tokens reported after the fact (a planner's own model call) stop the run before the next turn.
    assert policy.before_turn(policy.Usage(tokens=1001), {"maxTokens": 1000}).budget == "maxTokens"
    assert policy.before_turn(policy.Usage(tokens=1000), {"maxTokens": 1000}) is None


def test_max_cost_reserves_max_tokens_at_the_output_price():
    model = {"maxTokens": 1000, "pricing": {"inputPerMillionTokens": 1.0, "outputPerMillionTokens": 10.0}}
    assert policy.call_cost(model, 1_000_000, 0) == 1.0
    assert policy.call_cost(model, 0, 1000) == 0.01
    assert policy.before_model_call(policy.Usage(cost_usd=0.09), {"maxCostUSD": 0.1}, model) is None
    stop = policy.before_model_call(policy.Usage(cost_usd=0.0901), {"maxCostUSD": 0.1}, model)
    assert stop is not None and stop.budget == "maxCostUSD" and "spec.budgets.maxCostUSD is 0.1" in stop.message
    assert policy.before_turn(policy.Usage(cost_usd=0.2), {"maxCostUSD": 0.1}).budget == "maxCostUSD"


def test_run_budgets_win_over_the_trees_field_by_field():
    tree = {"maxTokens": 100, "maxToolCalls": 5, "onExhausted": "pause"}
    assert policy.effective_budgets(tree, {"maxTokens": 50, "maxTurns": None}) == {
        "maxTokens": 50,
        "maxToolCalls": 5,
        "onExhausted": "pause",
    }
    assert policy.on_exhausted({}) == "fail"


def test_a_raised_budget_fits_what_was_refused():
    stop = policy.before_model_call(policy.Usage(tokens=950), {"maxTokens": 1000}, {"maxTokens": 100})
    assert not policy.fits(stop, policy.Usage(tokens=950), {"maxTokens": 1049})
    assert policy.fits(stop, policy.Usage(tokens=950), {"maxTokens": 1050})
    assert policy.fits(stop, policy.Usage(tokens=950), {})  # budget removed
    message = policy.paused_message(stop, "ns/run")
    assert "agent-tree budget ns/run --max-tokens N" in message and "spec.budgets.maxTokens is 1000" in message


def test_over_budget_fails_the_run_only_when_it_would_route_again():
    state = policy.start(["a", "b"], 10)
    assert policy.over_budget(state, 10**6, 10**6, {"maxTokens": 1}) is None  # no turn yet
    failed = policy.observe(state, handoff("a", "failed", "no", {"k": 1}))
    assert policy.over_budget(failed, 500, 0, {"maxTokens": 100}) == policy.Finish(
        "failed",
        "token budget exceeded: 500 tokens used, spec.budgets.maxTokens is 100",
        "a",
        {"k": 1},
        policy.BUDGET_EXCEEDED,
    )
    assert policy.over_budget(failed, 100, 0, {"maxTokens": 100}) is None
    # An answer that cost too much is still the answer: decide() finishes the run.
    answered = policy.observe(state, handoff("a", "ok", "yes"))
    assert policy.over_budget(answered, 500, 0, {"maxTokens": 100}) is None
    # The last child failed: the run ends as decide() says, not with a budget message.
    last = policy.observe(policy.start(["a"], 10), handoff("a", "failed"))
    assert policy.over_budget(last, 500, 0, {"maxTokens": 100}) is None


def test_deadline_reached_before_a_turn():
    state = policy.start(["a", "b"], 10)
    assert policy.deadline_reached(99.9, 100.0, state) is None
    assert policy.deadline_reached(10**9, None, state) is None
    assert policy.deadline_reached(100.0, 100.0, state) == policy.Finish(
        "failed", "the run timed out before an agent answered", None, {}, policy.DEADLINE_EXCEEDED
    )
    after = policy.observe(state, handoff("a", "failed", payload={"k": 1}))
    assert policy.deadline_reached(101.0, 100.0, after) == policy.Finish(
        "failed", "the run timed out before an agent answered", "a", {}, policy.DEADLINE_EXCEEDED
    )


def test_max_steps_of_a_run():
    assert policy.max_steps(3, 7) == 3
    assert policy.max_steps(None, 7) == 7
    assert policy.max_steps(None, None) == policy.DEFAULT_MAX_STEPS == 10


def test_the_stop_reasons_are_the_agentrun_condition_reasons():
    # The operator writes them as the Failed condition's reason; kubectl and kstatus users read them.
    assert (policy.BUDGET_EXCEEDED, policy.DEADLINE_EXCEEDED) == ("BudgetExceeded", "DeadlineExceeded")
