"""The durable executor: ``AgentRunWorkflow``, ONE workflow per run (engine v2).

``AgentRunWorkflow`` runs on the root agent's task queue and takes every routing decision with
:mod:`agent_tree.policy`, exactly like the embedded orchestrator. A child's turn runs inside it, but
every activity of that turn is dispatched on THAT child's task queue, so the turn progresses only
while that agent's workers are up: a Python agent's turn is one activity (its tool calls journaled in
PostgreSQL); a model agent's loop (:mod:`agent_tree.providers.openai_chat`) runs here, each model
call and each tool call an activity. Between two root turns a long run continues as new. Workflows do
no I/O: steps are buffered and written by the next activity (piggybacked), and large values travel as
blob references. ``AgentWorkflow`` (engine v1's child workflow per turn) stays registered for runs
v1 started (docs/durable-runs.md, "Engine generations, changing workflow code, upgrading").
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from agent_tree import approvals as approval_policy
    from agent_tree import naming, policy, usage
    from agent_tree.contract import (
        AGENT_END,
        AGENT_START,
        BUDGET_EXHAUSTED,
        BUDGETS_CHANGED,
        HANDOFF,
        MODEL_USAGE,
        PROGRESS_QUERY,
        REASONING,
        RUN_WORKFLOW,
        TOOL_END,
        TOOL_START,
        TURN_WORKFLOW,
        Progress,
    )
    from agent_tree.contract.control import (
        BUDGETS_UPDATE,
        DECIDE_UPDATE,
        ApprovalDecision,
        BudgetsAck,
        BudgetsChange,
        DecisionAck,
    )
    from agent_tree.ledger import BudgetStop
    from agent_tree.providers import openai_chat as chat
    from agent_tree.spec import MAX_INPUT_CHARS, AgentTreeSpec
    from agent_tree_worker import inputs as t
    from agent_tree_worker.approvals import TOOL_APPROVALS, Approvals
    from agent_tree_worker.budget_gate import BudgetGate
    from agent_tree_worker.metrics import REPAIR_FAILURES, REPAIRS
    from agent_tree_worker.python_approvals import NEEDS_APPROVAL, decision_entry

HEARTBEAT = timedelta(seconds=8)
HISTORY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=0.5), maximum_interval=timedelta(seconds=5))
# Patch id (workflow.patched) of recording a turn's steps before the child turn starts; histories of
# runs started before it replay without the extra local activity.
RECORD_BEFORE_TURN = "record-steps-before-child-turn"
# Patch id of counting what happens below a turn: routing / planner model calls (model_usage steps and
# tokens), model calls of agents called as tools, and nested supervisors' and agent tools' tool calls
# and tokens in the handoff traces. It changes ords (child workflow ids) and budget decisions, so
# histories of runs started before it replay with the old counting.
COUNT_NESTED_USAGE = "count-nested-and-routing-usage"
# Patch id of engine v2: an agent's turn runs inside the run's workflow, its activities dispatched on
# that agent's task queue, instead of as a child AgentWorkflow. Runs started by engine v1 replay (and
# go on) with child workflows; see docs/durable-runs.md, "Engine generations".
ONE_WORKFLOW_PER_RUN = "one-workflow-per-run"
# Patch id of continuing as new between two of the root's turns once the history is long (only a run
# that reaches the length records the marker, so shorter histories replay unchanged).
CONTINUE_AS_NEW = "continue-as-new-between-root-turns"
CONTINUE_AFTER_EVENTS = 10_000
"""History length at which a run continues as new before its next root turn (RunInput can lower it)."""


class _ContinueAsNew(Exception):
    """Raised by the root's policy loop at a turn boundary: the run goes on in a new workflow run."""

    def __init__(self, state: policy.SupervisorState) -> None:
        super().__init__("continue as new")
        self.state = state


def _cause(exc: BaseException) -> str:
    """The innermost message of an activity/child-workflow failure."""
    while getattr(exc, "cause", None) is not None:
        exc = exc.cause  # type: ignore[assignment]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _unless_cancelled(exc: ActivityError | ChildWorkflowError) -> None:
    """A turn or activity that failed because the run was cancelled cancels the run, not the turn."""
    if isinstance(exc.cause, CancelledError):
        raise asyncio.CancelledError() from exc


def _failed(agent: str, to_agent: str, summary: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "from_agent": agent,
        "to_agent": to_agent,
        "status": "failed",
        "summary": summary,
        "payload": payload or {},
        "artifacts": [],
        "traces": _traces(),
    }


def _traces() -> dict[str, Any]:
    return {"tool_calls": [], "tool_results": [], "reasoning_steps": [], "token_usage": 0}


class Recorder:
    """Numbers and buffers the steps a workflow emits (``ord`` = prefix + a counter)."""

    def __init__(self, prefix: list[int], pending: list[t.Step] | None = None) -> None:
        self.prefix = list(prefix)
        self.count = 0
        self.pending: list[t.Step] = list(pending or [])
        self._keyed_at: int | None = None  # self.count when call_key last gave a key
        self._again = 0

    def next_ord(self) -> list[int]:
        self.count += 1
        return [*self.prefix, self.count]

    def call_key(self) -> list[int]:
        """The key of a model or planner call: the ord of the first step its reply will record (a
        second call before any step is numbered below it), so a fork finds the same call's reply."""
        key = [*self.prefix, self.count + 1]
        if self._keyed_at == self.count:
            self._again += 1
            return [*key, self._again]
        self._keyed_at, self._again = self.count, 0
        return key

    def emit(self, kind: str, who: str | None, /, **data: Any) -> None:
        self.pending.append(
            {
                "ord": self.next_ord(),
                "type": kind,
                "agent": who,
                "data": {"type": kind, **data},
                "ts": workflow.now().isoformat(),
            }
        )

    def take(self) -> list[t.Step]:
        out, self.pending = self.pending, []
        return out

    def give_back(self, steps: list[t.Step]) -> None:
        """Steps handed to an activity or child that failed: write them later (writes are idempotent)."""
        self.pending = [*steps, *self.pending]


class Executor:
    """What both workflows share: child turns on the children's queues, model and tool activities."""

    def __init__(
        self,
        run_id: str,
        namespace: str,
        tree: str,
        spec: dict[str, Any],
        deadline: float,
        rec: Recorder,
        queue: str | None = None,
        approvals: Approvals | None = None,
        gate: BudgetGate | None = None,
    ) -> None:
        self.run_id = run_id
        # The task queue of the agent whose work this executor dispatches (None: this workflow's own):
        # an agent's activities run only on its own Deployment's workers.
        self.queue = queue
        self.namespace = namespace
        self.tree = tree
        self.spec = spec
        self.agents = {a["name"]: a for a in spec["agents"]}
        self.deadline = deadline
        self.rec = rec
        self.tokens = 0
        self.tool_calls = 0
        # The run's approval state (AgentRunWorkflow's, shared by every turn); None in engine v1's
        # child workflows, which never ask (their runs predate approvals).
        self.approvals = approvals
        # The run's budget ledger, shared by every executor of the run (None: the run has no budgets).
        self.gate = gate

    def remaining(self, floor: float = 1.0) -> timedelta:
        return timedelta(seconds=max(floor, self.deadline - workflow.now().timestamp()))

    @staticmethod
    def counting() -> bool:
        """Whether this run counts nested and routing usage (see COUNT_NESTED_USAGE)."""
        return workflow.patched(COUNT_NESTED_USAGE)

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

        The root's loop (``continue_after`` set) raises :class:`_ContinueAsNew` before a turn once the
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
                raise _ContinueAsNew(state)
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
            _unless_cancelled(exc)
            self.rec.give_back(steps)
            return _failed(agent, to_agent, f"the turn of agent {agent!r} did not complete: {_cause(exc)}")
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

    # --- activities ----------------------------------------------------------------------------

    async def plan(self, user_input: str, agent: str | None) -> dict[str, Any] | None:
        """The tree's planner (entrypoint), or the routing answer of a model supervisor ``agent``;
        records the plan as a reasoning step of ``agent`` (or the root)."""
        model = self.agents[agent].get("model") if agent else None
        if self.gate is not None and model is not None:
            await self.gate.model_call(model)  # a model supervisor's routing call
        planned = await self._plan(user_input, agent)
        if planned is not None:
            who = agent or self.spec["root"]
            self.rec.emit(REASONING, who, agent=who, thought=planned["thought"])
            calls = planned.get("usage") or []
            if self.gate is not None:
                for record in calls:
                    self.gate.model_used(model, record)
            if calls and self.counting():
                for record in calls:  # a step of the agent that planned (the root for spec.planner)
                    self.rec.emit(MODEL_USAGE, who, **{**record, "agent": who})
                self.tokens += usage.total_tokens(calls)
            return planned["plan"]
        return None

    async def _plan(self, user_input: str, agent: str | None) -> dict[str, Any] | None:
        steps = self.rec.take()
        try:
            return await workflow.execute_activity(
                t.PLAN,
                t.PlanInput(self.run_id, self.spec, user_input, steps, agent, self.rec.call_key()),
                task_queue=self.queue,
                start_to_close_timeout=timedelta(seconds=150),
                schedule_to_close_timeout=self.remaining(),
                retry_policy=RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=10)),
                result_type=dict,
            )
        except ActivityError as exc:
            _unless_cancelled(exc)
            self.rec.give_back(steps)
            plan = {"error": f"planner failed: {_cause(exc)}"}
            return {"plan": plan, "thought": f"plan: {json.dumps(plan, ensure_ascii=False)}"}

    async def python_turn(self, turn: t.TurnInput) -> dict[str, Any]:
        while True:
            try:
                handoff = await self._approved_python_turn(turn)
            except ActivityError as exc:
                cause = exc.cause
                if not (isinstance(cause, ApplicationError) and cause.type == policy.BUDGET_EXHAUSTED and self.gate):
                    raise
                # A call inside the turn did not fit: count what the turn used, then stop or wait
                # (paused: the turn runs again from its start once the budget is raised).
                exhausted, used = cause.details
                self.gate.add(policy.Usage.from_dict(used))
                await self.gate.exhausted(policy.Exhausted.from_dict(exhausted))
                continue
            if self.gate is not None:
                self.gate.add(policy.Usage.from_dict(handoff.pop(t.BUDGET_USED, None)))
            return handoff

    async def _approved_python_turn(self, turn: t.TurnInput) -> dict[str, Any]:
        """A Python agent's turn: one activity; in a tree with approvals, run again after each decision
        its calls need (see agent_tree_worker.python_approvals)."""
        if self.approvals is None or not approval_policy.tree_has_approvals(self.spec):
            return await self._python_turn(turn, self.rec.next_ord())
        ord_ = self.rec.next_ord()
        journal_key = f"{self.run_id}/{'.'.join(map(str, ord_))}"
        decisions: dict[str, dict[str, Any]] = {}
        while True:
            result = await self._python_turn(turn, ord_, journal_key, dict(decisions))
            ask = result.get(NEEDS_APPROVAL)
            if ask is None:
                return result
            if not workflow.patched(TOOL_APPROVALS):  # cannot happen: only runs with the patch ask
                return _failed(turn.agent, turn.to_agent, "approvals are not supported by this run's workflow")
            seq = int(ask["seq"])
            base = [*ord_, int(ask["after_event"]), 0]
            ords = ([*base, 2 * seq - 1], [*base, 2 * seq])
            decision = await self.approvals.ask(
                self, ask["agent"], ask["tool"], ask["args"], ask["approval"], ords, self.rec.take()
            )
            decisions[str(seq)] = decision_entry(ask["tool"], decision)

    async def _python_turn(
        self,
        turn: t.TurnInput,
        ord_: list[int],
        journal_key: str | None = None,
        decisions: dict[str, dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        steps = self.rec.take()
        extra = {} if journal_key is None else {"journal_key": journal_key, "decisions": decisions}
        try:
            return await workflow.execute_activity(
                t.PYTHON_TURN,
                t.PythonTurnInput(
                    run_id=self.run_id,
                    spec=self.spec,
                    agent=turn.agent,
                    input=turn.input,
                    context=turn.context,
                    ord=ord_,
                    plan=turn.plan,
                    step=turn.step,
                    max_steps=turn.max_steps,
                    to_agent=turn.to_agent,
                    quiet=turn.as_tool,
                    steps=steps,
                    **extra,
                    budget=self.gate.snapshot() if self.gate is not None else None,
                ),
                task_queue=self.queue,
                start_to_close_timeout=self.remaining(),
                # Engine v2: a turn queued on an agent with no workers gives up at the run's deadline
                # (v1's child workflow had that as its execution timeout).
                schedule_to_close_timeout=self.remaining(),
                heartbeat_timeout=HEARTBEAT,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=0.5), maximum_interval=timedelta(seconds=5)
                ),
                result_type=dict,
            )
        except ActivityError as exc:
            _unless_cancelled(exc)
            self.rec.give_back(steps)
            if isinstance(exc.cause, ApplicationError) and exc.cause.type == policy.BUDGET_EXHAUSTED:
                raise
            return _failed(turn.agent, turn.to_agent, f"the turn of agent {turn.agent!r} failed: {_cause(exc)}")

    async def chat(self, turn: t.TurnInput) -> dict[str, Any]:
        """A model agent's turn: the pure chat loop, each model and tool call an activity."""
        agent = self.agents[turn.agent]
        state = chat.start(agent, turn.input, turn.context)
        counting = self.counting()
        if not counting:
            state = replace(state, agent_tools=())
        while not isinstance(action := chat.next_action(state), chat.Done):
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
                        retry_policy=RetryPolicy(maximum_attempts=4, maximum_interval=timedelta(seconds=10)),
                        result_type=dict,
                    )
                except ActivityError as exc:
                    _unless_cancelled(exc)
                    self.rec.give_back(steps)
                    return _failed(
                        turn.agent,
                        turn.to_agent,
                        f"model call of agent {turn.agent!r} failed: {_cause(exc)}",
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
                retry_policy=RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=0.5)),
                result_type=dict,
            )
        except ActivityError as exc:
            _unless_cancelled(exc)
            self.rec.give_back(steps)
            error = f"tool {call.name!r} did not complete: {_cause(exc)}"
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

    async def record_now(self, steps: list[t.Step], audit: list[dict[str, Any]] | None = None) -> None:
        """Write steps (and audit rows) from this worker now (a local activity: no task queue round trip)."""
        await workflow.execute_local_activity(
            t.RECORD_STEPS,
            t.StepsInput(self.run_id, steps, audit) if audit else t.StepsInput(self.run_id, steps),
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=timedelta(hours=1),
            retry_policy=HISTORY_RETRY,
        )

    async def history(self, name: str, arg: Any) -> None:
        """A history write that must happen: retried until PostgreSQL answers."""
        await workflow.execute_activity(
            name,
            arg,
            start_to_close_timeout=timedelta(seconds=60),
            schedule_to_close_timeout=timedelta(hours=1),
            retry_policy=HISTORY_RETRY,
        )


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


def _spec_problem(spec: dict[str, Any]) -> str | None:
    try:
        AgentTreeSpec.model_validate(spec)
    except ValidationError as exc:
        return f"the tree spec in the run input is invalid: {exc.errors(include_url=False)[0].get('msg')}"
    return None


@workflow.defn(name=RUN_WORKFLOW)
class AgentRunWorkflow:
    """One AgentRun: plan (optional), then route through the root's children until one answers."""

    def __init__(self) -> None:
        self._progress: dict[str, Any] = {
            "phase": "Pending",
            "current_agent": None,
            "steps": 0,
            "token_usage": 0,
            "plan": None,
        }
        self._approvals = Approvals(self._progress)
        self._gate: BudgetGate | None = None
        self._ex: Executor | None = None
        self._tree_budgets: dict[str, Any] | None = None

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> Progress:
        """Phase, current agent, steps, tokens, plan and pending approvals: for followers when Redis is away."""
        return Progress.model_validate(self._progress)

    @workflow.update(name=DECIDE_UPDATE)
    def decide(self, decision: ApprovalDecision) -> DecisionAck:
        """A person's decision on a pending approval; idempotent by id (the first decision stands)."""
        return self._approvals.decide(decision)

    @decide.validator
    def _check_decision(self, decision: ApprovalDecision) -> None:
        self._approvals.validate(decision)

    @workflow.update(name=BUDGETS_UPDATE)
    async def set_budgets(self, change: BudgetsChange) -> BudgetsAck:
        """The AgentRun's ``spec.budgets`` changed (the operator sends the whole value): re-check, and
        resume a run paused on a budget when the new one allows it."""
        gate, ex = self._gate, self._ex
        assert gate is not None and ex is not None  # the validator refused otherwise
        budgets = policy.effective_budgets(self._tree_budgets, change.budgets)
        if budgets == gate.budgets:
            return BudgetsAck(budgets=budgets, resumed=False)
        resumed = gate.change(budgets)
        ex.rec.emit(BUDGETS_CHANGED, None, budgets=budgets, resumed=resumed, usage=gate.used.to_dict())
        return BudgetsAck(budgets=budgets, resumed=resumed)

    @set_budgets.validator
    def _check_budgets(self, change: BudgetsChange) -> None:
        if self._gate is None:
            raise ValueError(
                "this run was started without budgets (spec.budgets and the AgentTree's budgets were unset), "
                "so it does not count them; budgets cannot be added to it: start a new AgentRun with spec.budgets"
            )
        if self._progress.get("phase") in ("Succeeded", "Failed", "Cancelled"):
            raise ValueError("the run has finished; its budgets can no longer change")

    @workflow.run
    async def run(self, inp: t.RunInput) -> dict[str, Any]:
        run_id = workflow.info().workflow_id
        root = inp.spec.get("root", "")
        deadline = workflow.now().timestamp() + inp.timeout_seconds
        resume = inp.resume or {}
        ex = Executor(
            run_id,
            inp.namespace,
            inp.tree,
            inp.spec,
            resume.get("deadline", deadline),
            Recorder([], resume.get("pending")),
            approvals=self._approvals,
        )
        self._approvals.restore(resume.get("approvals"))
        self._approvals.fork_until = list(inp.fork.until_ord) if inp.fork is not None else None
        self._progress.update(phase="Running", current_agent=root)
        if resume:  # continued as new: the run row exists, the plan was made; carry the counters on
            ex.rec.count, ex.tokens, ex.tool_calls = resume["count"], resume["tokens"], resume["tool_calls"]
            self._progress.update(plan=resume.get("plan"), token_usage=ex.tokens)
        else:
            await self._start(ex, inp, root)
        self._ex, self._tree_budgets = ex, inp.spec.get("budgets")
        budgets = resume.get("budgets") or policy.effective_budgets(self._tree_budgets, inp.budgets)
        ex.gate = self._gate = BudgetGate.for_run(
            budgets,
            progress=self._progress,
            record=lambda data: self._record_budget(ex, data),
            deadline=ex.deadline,
            used=policy.Usage.from_dict(resume.get("usage")),
            run=f"{inp.namespace}/{inp.name}",
        )
        plan: dict[str, Any] | None = resume.get("plan")
        try:
            state, decision, plan = await self._run(ex, inp, root)
            result = {
                "answer": decision.answer,
                "status": decision.status,
                "final_agent": decision.final_agent,
                "payload": decision.payload,
                "plan": state.plan,
                "steps": state.steps,
                "token_usage": ex.tokens,
            }
            if decision.reason is not None:  # a limit of the policy stopped the run
                result["reason"] = decision.reason
            if ex.gate is not None:
                result["usage"] = ex.gate.used.to_dict()
        except _ContinueAsNew as go_on:
            carried = {
                "deadline": ex.deadline,
                "count": ex.rec.count,
                "pending": ex.rec.take(),
                "tokens": ex.tokens,
                "tool_calls": ex.tool_calls,
                "plan": plan,
                "state": go_on.state.to_dict(),
            }
            if self._approvals.decided:
                carried["approvals"] = self._approvals.carry()
            if ex.gate is not None:
                carried.update(budgets=ex.gate.budgets, usage=ex.gate.used.to_dict())
            workflow.continue_as_new(inp.model_copy(update={"resume": carried}))
        except asyncio.CancelledError:
            result = self._result("cancelled", "the run was cancelled", ex, plan)
            await self._finish(ex, inp, root, result)
            raise
        except Exception as exc:  # a bug must end the run, never leave it stuck retrying a workflow task
            workflow.logger.exception("run %s failed", run_id)
            result = self._result("failed", f"internal error: {type(exc).__name__}: {exc}", ex, plan)
        await self._finish(ex, inp, root, result)
        return result

    async def _record_budget(self, ex: Executor, exhausted: dict[str, Any] | None) -> None:
        """Write the root's pending steps now (with a budget_exhausted step when ``exhausted``)."""
        if exhausted is not None:
            ex.rec.emit(BUDGET_EXHAUSTED, None, **exhausted)
        if steps := ex.rec.take():
            await ex.record_now(steps)

    async def _start(self, ex: Executor, inp: t.RunInput, root: str) -> None:
        run_id = ex.run_id
        ex.rec.emit(AGENT_START, root, agent=root, input=inp.input)
        await ex.history(
            t.START_RUN,
            t.StartRunInput(
                {
                    "workflow_id": run_id,
                    "run_id": workflow.info().run_id,
                    "namespace": inp.namespace,
                    "name": inp.name,
                    "uid": inp.uid,
                    "tree": inp.tree,
                    "revision": inp.revision,
                    "root": root,
                    "input": inp.input,
                    "context": inp.context,
                    "started_at": workflow.now().isoformat(),
                    # Only a retried or forked run carries its source (other runs' input is unchanged).
                    **({"fork": inp.fork.model_dump(mode="json")} if inp.fork is not None else {}),
                },
                ex.rec.take(),
            ),
        )

    def _result(self, status: str, answer: str, ex: Executor, plan: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "answer": answer,
            "status": status,
            "final_agent": None,
            "payload": {},
            "plan": plan,
            "steps": self._progress["steps"],
            "token_usage": ex.tokens,
        }

    async def _run(self, ex: Executor, inp: t.RunInput, root: str) -> tuple[policy.SupervisorState, policy.Finish, Any]:
        max_steps = policy.max_steps(inp.max_steps, inp.spec.get("maxSteps"))
        problem = _spec_problem(inp.spec)
        if problem is None and len(inp.input) > MAX_INPUT_CHARS:
            problem = f"the input is {len(inp.input)} characters; the limit is {MAX_INPUT_CHARS} (AgentRun spec.input)"
        if problem is None and max_steps < 1:
            problem = f"maxSteps must be at least 1, got {max_steps}"
        if problem is not None:
            state = policy.SupervisorState(route=(), max_steps=max(1, max_steps))
            return state, policy.Finish("failed", problem, None, {}), None
        resume = policy.SupervisorState.from_dict(inp.resume["state"]) if inp.resume else None
        if inp.resume:  # continued as new: the plan was made by the first run of the chain
            plan = inp.resume.get("plan")
        else:
            root_spec = ex.agents[root]
            plan = None
            try:
                if inp.spec.get("planner"):
                    plan = await ex.plan(inp.input, None)
                elif root_spec.get("model") and root_spec.get("children"):
                    plan = await ex.plan(inp.input, root)
            except BudgetStop as stop:  # the routing call did not fit the budget
                state = policy.SupervisorState(route=(), max_steps=max_steps)
                return state, policy.budget_stop(None, stop.exhausted), None
            self._progress.update(plan=plan, token_usage=ex.tokens)
        state, decision = await ex.supervise(
            root,
            inp.input,
            inp.context,
            plan,
            max_steps,
            budgets=inp.budgets,
            progress=self._progress,
            resume=resume,
            continue_after=inp.continue_after_events or CONTINUE_AFTER_EVENTS,
        )
        return state, decision, plan

    async def _finish(self, ex: Executor, inp: t.RunInput, root: str, result: dict[str, Any]) -> None:
        ex.rec.emit(AGENT_END, root, agent=root, status=result["status"], summary=result["answer"])
        result.update(tree_revision=inp.revision, workflow_id=ex.run_id)
        self._approvals.pending.clear()
        self._progress.pop("approvals", None)
        self._progress.update(
            phase={"completed": "Succeeded", "cancelled": "Cancelled"}.get(result["status"], "Failed"),
            current_agent=None,
            steps=result["steps"],
            token_usage=result["token_usage"],
        )
        await ex.history(t.FINISH_RUN, t.FinishRunInput(ex.run_id, result, ex.rec.take()))


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
        return _failed(turn.agent, turn.to_agent, f"the tree has no agent {turn.agent!r}")
    if agent.get("entrypoint"):
        return await ex.python_turn(turn)
    if agent.get("children"):
        plan = None
        if agent.get("model"):
            plan = await ex.plan(turn.input, turn.agent)
        state, decision = await ex.supervise(turn.agent, turn.input, dict(turn.context), plan, turn.max_steps)
        status = "ok" if decision.status == "completed" else "failed"
        # The children's tool calls and tokens (and the routing call's) are this turn's too.
        traces = usage.supervisor_traces(state.handoffs, ex.tokens) if ex.counting() else _traces()
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
    return _failed(turn.agent, turn.to_agent, f"agent {turn.agent!r} has no behaviour: set an entrypoint or a model")


async def guarded_turn(ex: Executor, turn: t.TurnInput) -> dict[str, Any]:
    """:func:`run_turn`; a bug fails the turn (the supervisor goes on), never the workflow task."""
    try:
        return await run_turn(ex, turn)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        workflow.logger.exception("turn of %s failed", turn.agent)
        return _failed(turn.agent, turn.to_agent, f"internal error in the turn of {turn.agent!r}: {exc}")
