"""What a turn of a durable run dispatches: steps, the planner, Python turns and history writes.

:class:`Recorder` numbers and buffers the steps a workflow emits; :class:`ActivityDispatch` holds a
turn's run, deadline, recorder, approvals and budget gate, and schedules the planner and Python-turn
activities (on the agent's own task queue) and the history writes. :class:`~agent_tree_worker.executor.Executor`
builds the supervision and the model agents' chat loop on it. Workflow code: replay-safe, no I/O.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from agent_tree import approvals as approval_policy
    from agent_tree import policy, usage
    from agent_tree.contract import MODEL_USAGE, REASONING
    from agent_tree_worker import inputs as t
    from agent_tree_worker.approvals import TOOL_APPROVALS, Approvals
    from agent_tree_worker.budget_gate import BudgetGate
    from agent_tree_worker.python_approvals import NEEDS_APPROVAL, decision_entry

HEARTBEAT = timedelta(seconds=8)
HISTORY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=0.5), maximum_interval=timedelta(seconds=5))
# Patch id of counting what happens below a turn: routing / planner model calls (model_usage steps and
# tokens), model calls of agents called as tools, and nested supervisors' and agent tools' tool calls
# and tokens in the handoff traces. It changes ords (child workflow ids) and budget decisions, so
# histories of runs started before it replay with the old counting.
COUNT_NESTED_USAGE = "count-nested-and-routing-usage"
# Patch id of giving model calls and the planner a heartbeat timeout: without one, a worker killed in the
# middle of a model call was noticed only at the 150 s start-to-close timeout (the fault suite measured
# it: docs/reliability.md); runs started before it replay without the timeout.
MODEL_CALL_HEARTBEAT = "model-call-heartbeat"


def model_call_heartbeat() -> timedelta | None:
    """The heartbeat timeout of a model call or planner activity (None in histories from before the patch)."""
    return HEARTBEAT if workflow.patched(MODEL_CALL_HEARTBEAT) else None


def failure_cause(exc: BaseException) -> str:
    """The innermost message of an activity/child-workflow failure."""
    while getattr(exc, "cause", None) is not None:
        exc = exc.cause  # type: ignore[assignment]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def unless_cancelled(exc: ActivityError | ChildWorkflowError) -> None:
    """A turn or activity that failed because the run was cancelled cancels the run, not the turn."""
    if isinstance(exc.cause, CancelledError):
        raise asyncio.CancelledError() from exc


def failed_handoff(agent: str, to_agent: str, summary: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "from_agent": agent,
        "to_agent": to_agent,
        "status": "failed",
        "summary": summary,
        "payload": payload or {},
        "artifacts": [],
        "traces": no_traces(),
    }


def no_traces() -> dict[str, Any]:
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


class ActivityDispatch:
    """A turn's context and the activities it schedules: the planner, Python turns, history writes."""

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
                heartbeat_timeout=model_call_heartbeat(),
                retry_policy=RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=10)),
                result_type=dict,
            )
        except ActivityError as exc:
            unless_cancelled(exc)
            self.rec.give_back(steps)
            plan = {"error": f"planner failed: {failure_cause(exc)}"}
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
                return failed_handoff(turn.agent, turn.to_agent, "approvals are not supported by this run's workflow")
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
            unless_cancelled(exc)
            self.rec.give_back(steps)
            if isinstance(exc.cause, ApplicationError) and exc.cause.type == policy.BUDGET_EXHAUSTED:
                raise
            return failed_handoff(
                turn.agent, turn.to_agent, f"the turn of agent {turn.agent!r} failed: {failure_cause(exc)}"
            )

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
