"""Running agents in-process: one turn of an agent (:func:`run_turn`) and a supervisor's loop over its
children (:func:`supervise`). They call each other (a node without a behaviour but with children
supervises them), so they live in one module.

Every decision of the loop, and every stop (max steps, the deadline, the budgets), comes from
:mod:`agent_tree.policy`, which the durable workflow uses too: the same tree ends the same way.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from agent_tree import ledger, output_schema, policy, usage
from agent_tree.calls import error_message, maybe_await
from agent_tree.context import Agent, RunContext, ToolRunner
from agent_tree.hooks import OrchestratorHooks
from agent_tree.models import HandoffResult, HandoffTraces, SupervisorResult

# The embedded executor's clock for deadlines (seconds; monotonic, so a wall clock change cannot end a run).
clock = time.monotonic
# A turn started just before the deadline still gets this long (the durable executor's floor too).
MIN_TURN_SECONDS = 1.0


def coerce_handoff(ctx: RunContext, value: Any) -> HandoffResult:
    """Turn what a behaviour returned into a HandoffResult, or a ``failed`` one explaining why not."""
    if isinstance(value, HandoffResult):
        result = value
    elif isinstance(value, dict):
        try:
            result = HandoffResult.model_validate({"from_agent": ctx.node.name, **value})
        except ValidationError as exc:
            return ctx.failed(f"agent {ctx.node.name!r} returned an invalid HandoffResult: {exc}")
    else:
        return ctx.failed(
            f"agent {ctx.node.name!r} returned {type(value).__name__}; a behaviour must return a HandoffResult"
        )
    if (
        not result.traces.tool_calls
        and not result.traces.reasoning_steps
        and ctx.traces.tool_calls + ctx.traces.reasoning_steps
    ):
        result = result.model_copy(update={"traces": ctx.traces.model_copy(deep=True)})
    return result


async def run_turn(
    node: Agent,
    input: str,
    context: dict[str, Any] | None = None,
    *,
    hooks: OrchestratorHooks | None = None,
    plan: dict[str, Any] | None = None,
    step: int = 0,
    tool_runner: ToolRunner | None = None,
    max_steps: int = 10,
    deadline: float | None = None,
) -> HandoffResult:
    """Run one turn of ``node`` and return its HandoffResult. Never raises for agent errors.

    A node with no behaviour but with children supervises them (a nested supervisor), under the same
    ``max_steps`` and ``deadline`` (a :data:`clock` time) as the run.
    """
    ctx = RunContext(
        node,
        input,
        context,
        plan=plan,
        step=step,
        hooks=hooks,
        tool_runner=tool_runner,
        max_steps=max_steps,
        deadline=deadline,
    )
    if node.behaviour is None:
        if node.children:
            sub = await supervise(
                node,
                input,
                ctx.context,
                hooks=ctx.hooks,
                max_steps=max_steps,
                tool_runner=tool_runner,
                deadline=deadline,
            )
            return supervisor_handoff(ctx, sub)
        return ctx.failed(
            f"agent {node.name!r} has no behaviour: give it one with node.set_behaviour(fn), "
            "an 'entrypoint' or a 'model' in the manifest"
        )
    try:
        value = await maybe_await(node.behaviour(ctx))
    except Exception as exc:
        return ctx.failed(f"agent {node.name!r} raised {error_message(exc)}")
    result = coerce_handoff(ctx, value)
    if getattr(node.behaviour, "checks_own_output", False):
        return result  # a model agent checks (and repairs) its reply itself; a model supervisor only routes
    return check_output(node, result)


def check_output(node: Agent, result: HandoffResult) -> HandoffResult:
    """``result`` as a failed turn naming every violation when its payload misses ``node.output_schema``."""
    failure = output_schema.payload_violation(node.name, node.output_schema, result.status, result.payload)
    return result if failure is None else result.model_copy(update=failure)


def supervisor_handoff(ctx: RunContext, sub: SupervisorResult, routing_tokens: int = 0) -> HandoffResult:
    """The handoff of a nested supervisor: its answer, with its children's tool calls and tokens."""
    handoffs = [h.model_dump() for h in sub.handoffs]
    ctx.traces = HandoffTraces.model_validate(
        usage.supervisor_traces(handoffs, sub.token_usage + routing_tokens), strict=False
    )
    return ctx.handoff("ok" if sub.status == "completed" else "failed", sub.answer, sub.payload)


def finish_result(state: policy.SupervisorState, decision: policy.Finish) -> SupervisorResult:
    """The supervisor's result for the policy's final decision."""
    handoffs = [HandoffResult.model_validate(h, strict=False) for h in state.handoffs]
    return SupervisorResult(
        answer=decision.answer,
        status=decision.status,
        plan=state.plan,
        final_agent=decision.final_agent,
        payload=decision.payload,
        steps=state.steps,
        handoffs=handoffs,
        context={k: v for k, v in state.context.items() if k != policy.CONTEXT_HISTORY_KEY},
        token_usage=sum(h.traces.token_usage for h in handoffs),
        reason=decision.reason,
    )


async def supervise(
    node: Agent,
    user_input: str,
    context: dict[str, Any] | None = None,
    *,
    hooks: OrchestratorHooks | None = None,
    max_steps: int = 10,
    plan: dict[str, Any] | None = None,
    tool_runner: ToolRunner | None = None,
    deadline: float | None = None,
    run_ledger: ledger.Ledger | None = None,
) -> SupervisorResult:
    """Run the supervisor loop of ``node`` over its children.

    Args:
        deadline: a :data:`clock` time; no child turn starts after it, and a turn running at it is
            stopped (``policy.deadline_reached``).
        run_ledger: the run's budget ledger, given to the ROOT's loop only: a budget exhausted anywhere
            below (:class:`~agent_tree.ledger.BudgetStop`, before a turn, tool call or model call)
            ends the run here with ``policy.budget_stop``. Nested loops count on the current ledger.
    """
    hooks = hooks or OrchestratorHooks()
    children = {child.name: child for child in node.children}
    state = policy.start(list(children), max_steps, context, plan)
    while isinstance(decision := policy.decide(state), policy.Route):
        if stop := policy.deadline_reached(clock(), deadline, state):
            decision = stop
            break
        child = children[decision.agent]
        try:
            ledger.check_turn()
            await hooks.fire("on_node_start", child, user_input)
            handoff = await _bounded_turn(
                child,
                run_turn(
                    child,
                    user_input,
                    decision.context,
                    hooks=hooks,
                    plan=state.plan,
                    step=decision.step,
                    tool_runner=tool_runner,
                    max_steps=max_steps,
                    deadline=deadline,
                ),
                deadline,
            )
        except ledger.BudgetStop as stop:
            if run_ledger is None:
                raise  # a nested loop: the root's loop ends the run
            decision = budget_finish(state, stop.exhausted, run_ledger)
            break
        handoff = handoff.model_copy(update={"to_agent": node.name})
        await hooks.fire("on_node_end", child, handoff)
        await hooks.fire("on_handoff", handoff)
        state = policy.observe(state, handoff)
    return finish_result(state, decision)


def budget_finish(
    state: policy.SupervisorState | None, exhausted: policy.Exhausted, run_ledger: ledger.Ledger
) -> policy.Finish:
    """An embedded run stopped by a budget: it fails (``pause`` too: nobody could raise the budget)."""
    stop = policy.budget_stop(state, exhausted)
    if policy.on_exhausted(run_ledger.budgets) == "pause":
        stop = replace(stop, answer=policy.embedded_pause_note(exhausted))
    return stop


async def _bounded_turn(child: Agent, turn: Any, deadline: float | None) -> HandoffResult:
    """``turn``, stopped when the deadline passes (as the durable executor's turn timeout does).

    A nested supervisor is not stopped from outside: it bounds its own children's turns and ends
    with the policy's timeout answer itself.
    """
    if deadline is None or (child.behaviour is None and child.children):
        return await turn
    try:
        return await asyncio.wait_for(turn, max(MIN_TURN_SECONDS, deadline - clock()))
    except TimeoutError:
        return RunContext(child, "").failed(f"the turn of agent {child.name!r} did not complete: the run timed out")
