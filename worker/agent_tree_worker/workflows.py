"""The durable executor: ``AgentRunWorkflow``, ONE workflow per run (engine v2).

``AgentRunWorkflow`` runs on the root agent's task queue and takes every routing decision with
:mod:`agent_tree.policy`, exactly like the embedded orchestrator. A child's turn runs inside it, but
every activity of that turn is dispatched on THAT child's task queue, so the turn progresses only
while that agent's workers are up: a Python agent's turn is one activity (its tool calls journaled in
PostgreSQL); a model agent's loop (:mod:`agent_tree.providers.openai_chat`) runs here, each model
call and each tool call an activity. Between two root turns a long run continues as new. Workflows do
no I/O: steps are buffered and written by the next activity (piggybacked), and large values travel as
blob references. ``AgentWorkflow`` (engine v1's child workflow per turn) stays registered for runs
v1 started (docs/durable-runs.md, "Engine generations, changing workflow code, upgrading"). The turns' executor
and ``AgentWorkflow`` are in :mod:`agent_tree_worker.executor`, on :mod:`agent_tree_worker.dispatch`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from agent_tree import policy
    from agent_tree.contract import (
        AGENT_END,
        AGENT_START,
        BUDGET_EXHAUSTED,
        BUDGETS_CHANGED,
        PROGRESS_QUERY,
        RUN_WORKFLOW,
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
    from agent_tree.spec import AgentTreeSpec
    from agent_tree.spec_runs import MAX_INPUT_CHARS
    from agent_tree_worker import inputs as t
    from agent_tree_worker.approvals import Approvals
    from agent_tree_worker.budget_gate import BudgetGate

from agent_tree_worker.executor import CONTINUE_AFTER_EVENTS, ContinueAsNew, Executor, Recorder


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
        except ContinueAsNew as go_on:
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
