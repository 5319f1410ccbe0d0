"""The executor of a durable run's turns: supervision, child turns, and model agents' chat loops.

:class:`Executor` (on :class:`~agent_tree_worker.dispatch.ActivityDispatch`) runs the policy loop of a
supervisor, each child's turn on that child's task queue (engine v2: inline; engine v1: the child
workflow :class:`AgentWorkflow`), and a model agent's chat loop with its model and tool calls as
activities. The patch ids that keep older runs' histories replaying live here. Workflow code:
replay-safe, no I/O.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from agent_tree import approvals as approval_policy
    from agent_tree import naming, policy, usage
    from agent_tree.contract import (
        AGENT_END,
        AGENT_START,
        HANDOFF,
        MODEL_USAGE,
        REASONING,
        TOOL_END,
        TOOL_START,
        TURN_WORKFLOW,
    )
    from agent_tree.contract.control import ApprovalDecision
    from agent_tree.ledger import BudgetStop
    from agent_tree.providers import openai_chat as chat
    from agent_tree_worker import inputs as t
    from agent_tree_worker.approvals import TOOL_APPROVALS
    from agent_tree_worker.metrics import REPAIR_FAILURES, REPAIRS

from agent_tree_worker.dispatch import (
    HEARTBEAT,
    ActivityDispatch,
    Recorder,
    failed_handoff,
    failure_cause,
    model_call_heartbeat,
    no_traces,
    unless_cancelled,
)

# Patch id (workflow.patched) of recording a turn's steps before the child turn starts; histories of
# runs started before it replay without the extra local activity.
RECORD_BEFORE_TURN = "record-steps-before-child-turn"
# Patch id of engine v2: an agent's turn runs inside the run's workflow, its activities dispatched on
# that agent's task queue, instead of as a child AgentWorkflow. Runs started by engine v1 replay (and
# go on) with child workflows; see docs/durable-runs.md, "Engine generations".
ONE_WORKFLOW_PER_RUN = "one-workflow-per-run"
# Patch id of continuing as new between two of the root's turns once the history is long (only a run
# that reaches the length records the marker, so shorter histories replay unchanged).
CONTINUE_AS_NEW = "continue-as-new-between-root-turns"
# Patch id of stopping a model agent's turn at the run's deadline, between its model and tool calls (a
# tool call cut by the deadline was followed by a model call that could still answer, so the run
# Succeeded after its timeout; the e2e secrets test caught it). Asked only past the deadline.
TURN_DEADLINE = "model-turn-stops-at-deadline"
# Attempts of a model agent's tool call: 3 reported a call as failed to the model after three worker
# kills in the fault suite; 10 ride out a crash-looping worker for about a minute, and a call that
# fails for another reason every time (a payload the history cannot store) still ends, as an error.
TOOL_RETRY = RetryPolicy(
    maximum_attempts=10, initial_interval=timedelta(seconds=0.5), maximum_interval=timedelta(seconds=10)
)
CONTINUE_AFTER_EVENTS = 10_000
"""History length at which a run continues as new before its next root turn (RunInput can lower it)."""


class ContinueAsNew(Exception):
    """Raised by the root's policy loop at a turn boundary: the run goes on in a new workflow run."""

    def __init__(self, state: policy.SupervisorState) -> None:
        super().__init__("continue as new")
        self.state = state


class Executor(ActivityDispatch):
    """What both workflows share: child turns on the children's queues, model and tool activities."""

    # --- supervision -------------------------------------------------------------------------

    async def supervise(
        self,
        node: str,
        user_input: str,
        context: dict[str, Any],
        plan: dict[str, Any] | None,
        max_steps: int,
        *,
        budgets: dict[str, Any] | None = None,
        progress: dict[str, Any] | None = None,
        resume: policy.SupervisorState | None = None,
        continue_after: int | None = None,
    ) -> tuple[policy.SupervisorState, policy.Finish]:
        """The policy loop of ``node`` over its children; every decision comes from agent_tree.policy.

        The root's loop (``continue_after`` set) raises :class:`ContinueAsNew` before a turn once the
        history has ``continue_after`` events; the new run calls it again with ``resume``.
        """
        state = resume or policy.start(self.agents[node].get("children") or [], max_steps, context, plan)
        turns = 0  # in this workflow run: a continued run takes a turn before it may continue again
        while isinstance(decision := policy.decide(state), policy.Route):
            if (late := policy.deadline_reached(workflow.now().timestamp(), self.deadline, state)) is not None:
                return state, late
            if (
                continue_after is not None
                and turns > 0
                and workflow.info().get_current_history_length() >= continue_after
                and workflow.patched(CONTINUE_AS_NEW)
            ):
                raise ContinueAsNew(state)
            try:
                if self.gate is not None:
                    await self.gate.turn()
                if progress is not None:
                    progress["current_agent"] = decision.agent
                self.rec.emit(AGENT_START, decision.agent, agent=decision.agent, input=user_input)
                handoff = await self.child_turn(
                    decision.agent,
                    user_input,
                    decision.context,
                    plan=state.plan,
                    step=decision.step,
                    max_steps=max_steps,
                    to_agent=node,
                )
            except BudgetStop as stop:
                if continue_after is None:
                    raise  # a nested supervisor: the root's loop ends the run
                return state, policy.budget_stop(state, stop.exhausted)
            handoff = {**handoff, "to_agent": node}
            self.rec.emit(
                AGENT_END, decision.agent, agent=decision.agent, status=handoff["status"], summary=handoff["summary"]
            )
            self.rec.emit(
                HANDOFF,
                decision.agent,
                agent=handoff["from_agent"],
                to_agent=node,
                status=handoff["status"],
                summary=handoff["summary"],
                payload=handoff["payload"],
                **({"usage": self.gate.used.to_dict()} if self.gate is not None else {}),
            )
            state = policy.observe(state, handoff)
            turns += 1
            traces = handoff.get("traces") or {}
            self.tokens += int(traces.get("token_usage") or 0)
            self.tool_calls += len(traces.get("tool_calls") or [])
            if progress is not None:
                progress.update(steps=state.steps, token_usage=self.tokens)
            # Without a gate (a run started before the ledger), budgets are checked after each turn.
            after = budgets if self.gate is None else None
            if (over := policy.over_budget(state, self.tokens, self.tool_calls, after)) is not None:
                return state, over
        return state, decision

    async def child_turn(
        self,
        agent: str,
        user_input: str,
        context: dict[str, Any],
        *,
        plan: dict[str, Any] | None = None,
        step: int = 0,
        max_steps: int = 10,
        to_agent: str = "supervisor",
        as_tool: bool = False,
    ) -> dict[str, Any]:
        """Run ``agent``'s turn, its activities on that agent's own task queue; returns its handoff."""
        ord_ = self.rec.next_ord()
        steps = self.rec.take()
        if steps and workflow.patched(RECORD_BEFORE_TURN):
            # Write the agent_start (and the previous turn's end) from THIS worker before the child is
            # queued: followers see the turn at once, and the operator can pre-warm a child agent whose
            # workers are scaled to zero (its own worker would only write them once it runs).
            await self.record_now(steps)
            steps = []
        turn = t.TurnInput(
            run_id=self.run_id,
            namespace=self.namespace,
            tree=self.tree,
            spec=self.spec,
            agent=agent,
            input=user_input,
            context=context,
            ord=ord_,
            plan=plan,
            step=step,
            max_steps=max_steps,
            to_agent=to_agent,
            as_tool=as_tool,
            deadline=self.deadline,
            steps=steps,
        )
        if workflow.patched(ONE_WORKFLOW_PER_RUN):
            return await self.inline_turn(turn)
        try:
            result = await workflow.execute_child_workflow(
                AgentWorkflow.run,
                turn,
                id=f"{self.run_id}.{'.'.join(map(str, ord_))}.{agent}",
                task_queue=naming.task_queue(self.namespace, self.tree, agent),
                execution_timeout=self.remaining(),
                result_type=t.TurnResult,
            )
        except ChildWorkflowError as exc:
            unless_cancelled(exc)
            self.rec.give_back(steps)
            return failed_handoff(
                agent, to_agent, f"the turn of agent {agent!r} did not complete: {failure_cause(exc)}"
            )
        self.rec.pending.extend(result.steps)
        return result.handoff

    async def inline_turn(self, turn: t.TurnInput) -> dict[str, Any]:
        """Engine v2: the turn in this workflow, numbered and recorded exactly as a v1 child turn."""
        sub = Executor(
            self.run_id,
            self.namespace,
            self.tree,
            self.spec,
            self.deadline,
            Recorder(turn.ord, turn.steps),
            queue=naming.task_queue(self.namespace, self.tree, turn.agent),
            approvals=self.approvals,
            gate=self.gate,
        )
        handoff = await guarded_turn(sub, turn)
        self.rec.pending.extend(sub.rec.take())
        return handoff

    def past_deadline(self) -> bool:
        """Whether the run's deadline has passed (asked between a model agent's calls). The patch is asked
        only then, so histories of runs that never went past their deadline replay unchanged."""
        return workflow.now().timestamp() >= self.deadline and workflow.patched(TURN_DEADLINE)

    async def chat(self, turn: t.TurnInput) -> dict[str, Any]:
        """A model agent's turn: the pure chat loop, each model and tool call an activity."""
        agent = self.agents[turn.agent]
        state = chat.start(agent, turn.input, turn.context)
        counting = self.counting()
        if not counting:
            state = replace(state, agent_tools=())
        while not isinstance(action := chat.next_action(state), chat.Done):
            if self.past_deadline():
                # As the embedded executor's bounded turn: a turn still running at the run's deadline is
                # stopped; its supervisor then ends the run as timed out.
                return failed_handoff(
                    turn.agent, turn.to_agent, f"the turn of agent {turn.agent!r} did not complete: the run timed out"
                )
            if isinstance(action, chat.CallModel):
                if self.gate is not None:
                    await self.gate.model_call(agent.get("model"))
                steps = self.rec.take()
                try:
                    response = await workflow.execute_activity(
                        t.MODEL_CALL,
                        t.ModelCallInput(
                            self.run_id, self.spec, turn.agent, list(state.messages), False, steps, self.rec.call_key()
                        ),
                        task_queue=self.queue,
                        start_to_close_timeout=timedelta(seconds=150),
                        schedule_to_close_timeout=self.remaining(),
                        heartbeat_timeout=model_call_heartbeat(),
                        retry_policy=RetryPolicy(maximum_attempts=4, maximum_interval=timedelta(seconds=10)),
                        result_type=dict,
                    )
                except ActivityError as exc:
                    unless_cancelled(exc)
                    self.rec.give_back(steps)
                    return failed_handoff(
                        turn.agent,
                        turn.to_agent,
                        f"model call of agent {turn.agent!r} failed: {failure_cause(exc)}",
                    )
                if self.gate is not None:
                    self.gate.model_used(agent.get("model"), response.get("usage"))
                seen, repairs = len(state.reasoning), state.repairs
                state = chat.observe_model(state, response)
                _count_output_checks(turn.agent, repairs, state)
                if not turn.as_tool:
                    for thought in state.reasoning[seen:]:
                        self.rec.emit(REASONING, turn.agent, agent=turn.agent, thought=thought)
                if not turn.as_tool or counting:
                    # An agent called as a tool has no lifecycle steps, but its model calls are the run's.
                    self.rec.emit(
                        MODEL_USAGE,
                        turn.agent,
                        agent=turn.agent,
                        model=response.get("model"),
                        **(response.get("usage") or {}),
                    )
                continue
            for call in action.calls:
                state = chat.observe_tool(state, call, await self.tool(agent, call, turn.as_tool))
        return {
            "from_agent": turn.agent,
            "to_agent": turn.to_agent,
            "status": action.status,
            "summary": action.summary,
            "payload": action.payload,
            "artifacts": [],
            "traces": state.traces(),
        }

    async def tool(self, agent: dict[str, Any], call: chat.ToolCall, quiet: bool) -> dict[str, Any]:
        spec = next((x for x in agent.get("tools") or [] if x["name"] == call.name), None)
        if call.error is not None or spec is None:
            result = chat.error_result(call)
            if not quiet:
                self.rec.emit(TOOL_START, agent["name"], tool=call.name, args=call.args)
                self.rec.emit(TOOL_END, agent["name"], tool=call.name, status="error", output=None, error=call.error)
            return result
        if self.gate is not None:
            await self.gate.tool_call()  # before asking anyone: a refused call is not put to a person
        approval = approval_policy.required(spec.get("approval")) if self.approvals is not None else None
        if approval is not None and workflow.patched(TOOL_APPROVALS):
            decision = await self.ask_approval(agent["name"], call.name, call.args, approval)
            if decision.decision == "reject":
                result = approval_policy.rejected_result(call.name, decision)
                if not quiet:
                    self.rec.emit(TOOL_START, agent["name"], tool=call.name, args=call.args)
                    self.rec.emit(
                        TOOL_END, agent["name"], tool=call.name, status="rejected", output=None, error=result["error"]
                    )
                return result
        if spec.get("agent"):
            if not quiet:
                self.rec.emit(TOOL_START, agent["name"], tool=call.name, args=call.args)
            if self.gate is not None:
                await self.gate.turn()  # the agent called as a tool takes a turn
            args = dict(call.args)
            handoff = await self.child_turn(spec["agent"], str(args.pop("input", "")), args, as_tool=True)
            result = {"tool_name": call.name, "output": handoff, "status": "ok", "error": None, "duration_ms": None}
            if not quiet:
                self.rec.emit(TOOL_END, agent["name"], tool=call.name, status="ok", output=handoff, error=None)
            return result
        ord_start, ord_end = self.rec.next_ord(), self.rec.next_ord()
        steps = self.rec.take()
        try:
            return await workflow.execute_activity(
                t.TOOL_CALL,
                t.ToolCallInput(
                    self.run_id, self.spec, agent["name"], call.name, call.args, ord_start, ord_end, quiet, steps
                ),
                task_queue=self.queue,
                start_to_close_timeout=timedelta(seconds=int(spec.get("timeoutSeconds") or 60) + 15),
                schedule_to_close_timeout=self.remaining(),
                heartbeat_timeout=HEARTBEAT,
                # A tool's own failure is a result (status "error"), never a retry; what is retried is the
                # worker dying or the history being unreachable (TOOL_RETRY).
                retry_policy=TOOL_RETRY,
                result_type=dict,
            )
        except ActivityError as exc:
            unless_cancelled(exc)
            self.rec.give_back(steps)
            error = f"tool {call.name!r} did not complete: {failure_cause(exc)}"
            if not quiet:
                for kind, ord_, data in (
                    (TOOL_START, ord_start, {"tool": call.name, "args": call.args}),
                    (TOOL_END, ord_end, {"tool": call.name, "status": "error", "output": None, "error": error}),
                ):
                    self.rec.pending.append(
                        {
                            "ord": ord_,
                            "type": kind,
                            "agent": agent["name"],
                            "data": {"type": kind, **data},
                            "ts": workflow.now().isoformat(),
                        }
                    )
            return {"tool_name": call.name, "output": None, "status": "error", "error": error, "duration_ms": None}

    async def ask_approval(self, agent: str, tool: str, args: Any, approval: dict[str, Any]) -> ApprovalDecision:
        """Wait durably for a person's decision on one call (see agent_tree_worker.approvals)."""
        assert self.approvals is not None
        ords = (self.rec.next_ord(), self.rec.next_ord())
        return await self.approvals.ask(self, agent, tool, args, approval, ords, self.rec.take())


def _count_output_checks(agent: str, repairs_before: int, state: chat.ChatState) -> None:
    """Structured-output repairs and final failures, through the replay-safe workflow metric meter."""
    meter = workflow.metric_meter()
    if state.repairs > repairs_before:
        meter.create_counter(REPAIRS, "Model replies that missed outputSchema and were sent back for repair.").add(
            state.repairs - repairs_before, {"agent": agent}
        )
    done = state.done
    if done is not None and done.status == "failed" and "validation_errors" in (done.payload or {}):
        meter.create_counter(REPAIR_FAILURES, "Agent turns failed: output still invalid after the repairs.").add(
            1, {"agent": agent}
        )


@workflow.defn(name=TURN_WORKFLOW)
class AgentWorkflow:
    """One turn of one agent, on that agent's task queue."""

    @workflow.run
    async def run(self, turn: t.TurnInput) -> t.TurnResult:
        ex = Executor(
            turn.run_id,
            turn.namespace,
            turn.tree,
            turn.spec,
            turn.deadline or workflow.now().timestamp() + 3600,
            Recorder(turn.ord, turn.steps),
        )
        handoff = await guarded_turn(ex, turn)
        return t.TurnResult(handoff, ex.rec.take())


async def run_turn(ex: Executor, turn: t.TurnInput) -> dict[str, Any]:
    """One turn of one agent: a Python turn, a nested supervisor's loop, or a model agent's chat loop."""
    agent = ex.agents.get(turn.agent)
    if agent is None:
        return failed_handoff(turn.agent, turn.to_agent, f"the tree has no agent {turn.agent!r}")
    if agent.get("entrypoint"):
        return await ex.python_turn(turn)
    if agent.get("children"):
        plan = None
        if agent.get("model"):
            plan = await ex.plan(turn.input, turn.agent)
        state, decision = await ex.supervise(turn.agent, turn.input, dict(turn.context), plan, turn.max_steps)
        status = "ok" if decision.status == "completed" else "failed"
        # The children's tool calls and tokens (and the routing call's) are this turn's too.
        traces = usage.supervisor_traces(state.handoffs, ex.tokens) if ex.counting() else no_traces()
        return {
            "from_agent": turn.agent,
            "to_agent": turn.to_agent,
            "status": status,
            "summary": decision.answer,
            "payload": decision.payload,
            "artifacts": [],
            "traces": traces,
        }
    if agent.get("model"):
        return await ex.chat(turn)
    return failed_handoff(
        turn.agent, turn.to_agent, f"agent {turn.agent!r} has no behaviour: set an entrypoint or a model"
    )


async def guarded_turn(ex: Executor, turn: t.TurnInput) -> dict[str, Any]:
    """:func:`run_turn`; a bug fails the turn (the supervisor goes on), never the workflow task."""
    try:
        return await run_turn(ex, turn)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        workflow.logger.exception("turn of %s failed", turn.agent)
        return failed_handoff(turn.agent, turn.to_agent, f"internal error in the turn of {turn.agent!r}: {exc}")
