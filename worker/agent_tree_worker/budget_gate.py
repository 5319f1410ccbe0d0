"""The durable run's budget gate: the run's ONE ledger, checked before each turn, tool call and model
call of the workflow (:mod:`agent_tree.policy` decides), shared by every executor of the run.

A check that fails with ``onExhausted: fail`` raises :class:`~agent_tree.ledger.BudgetStop` (the root's
loop ends the run with reason ``BudgetExceeded``). With ``pause`` the run waits durably
(``workflow.wait_condition``) until the ``set_budgets`` update raises the budget, recording a
``budget_exhausted`` step and reporting phase ``Paused``; at the run's deadline it fails instead.
Only runs that have budgets get a gate (behind a ``workflow.patched`` marker): a run without
budgets issues exactly the commands it did before budgets existed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from agent_tree import policy
    from agent_tree.ledger import BudgetStop
    from agent_tree_worker.metrics import BUDGET_STOPS

# Patch id of the budget ledger (issue 12): checks before each turn / tool call / model call. Only runs
# with budgets ask for it, so histories of runs without budgets replay (and run) unchanged.
BUDGET_LEDGER = "budget-ledger-before-each-call"


class BudgetGate:
    """Budgets and usage of one durable run; ``progress`` is the workflow's progress dict."""

    def __init__(
        self,
        budgets: Mapping[str, Any],
        progress: dict[str, Any],
        record: Callable[[dict[str, Any] | None], Awaitable[None]],
        deadline: float,
        used: policy.Usage | None = None,
        run: str | None = None,
    ) -> None:
        self.budgets: dict[str, Any] = dict(budgets)
        self.used = used or policy.Usage()
        self.progress = progress
        # Writes the run's pending steps now, with a budget_exhausted step of this data when given: the
        # run may wait for long, and followers must see why (and, once resumed, the budgets_changed).
        self.record = record
        self.deadline = deadline
        self.run = run
        self.waiting: policy.Exhausted | None = None
        self.publish()

    @classmethod
    def for_run(cls, budgets: Mapping[str, Any] | None, **kwargs: Any) -> BudgetGate | None:
        """A gate when the run has budgets (and is new enough to count them), else None."""
        if not budgets or not workflow.patched(BUDGET_LEDGER):
            return None
        return cls(budgets, **kwargs)

    def publish(self) -> None:
        self.progress["usage"] = self.used.to_dict()

    # --- checks ----------------------------------------------------------------------------------
    async def turn(self) -> None:
        await self._admit(lambda: policy.before_turn(self.used, self.budgets))
        self.add(policy.Usage(turns=1))

    async def tool_call(self) -> None:
        await self._admit(lambda: policy.before_tool_call(self.used, self.budgets))
        self.add(policy.Usage(tool_calls=1))

    async def model_call(self, model: Mapping[str, Any] | None) -> None:
        await self._admit(lambda: policy.before_model_call(self.used, self.budgets, model))

    def model_used(self, model: Mapping[str, Any] | None, usage: Mapping[str, Any] | None) -> None:
        usage = usage or {}
        prompt = max(0, int(usage.get("prompt_tokens") or 0))
        completion = max(0, int(usage.get("completion_tokens") or 0))
        total = max(0, int(usage.get("total_tokens") or 0)) or prompt + completion
        self.add(policy.Usage(tokens=total, cost_usd=policy.call_cost(model, prompt, completion)))

    def add(self, usage: policy.Usage) -> None:
        self.used = self.used.plus(usage)
        self.publish()

    def snapshot(self) -> dict[str, Any]:
        """What a Python turn's activity checks its in-process calls against."""
        return {"budgets": dict(self.budgets), "used": self.used.to_dict()}

    async def _admit(self, check: Callable[[], policy.Exhausted | None]) -> None:
        while (exhausted := check()) is not None:
            await self.exhausted(exhausted)

    async def exhausted(self, exhausted: policy.Exhausted) -> None:
        """``fail``: raise BudgetStop. ``pause``: wait until the budgets allow it (returns), or fail at the deadline."""
        meter = workflow.metric_meter()
        counter = meter.create_counter(BUDGET_STOPS, "Runs a budget stopped (fail) or paused (pause), by budget.")
        if policy.on_exhausted(self.budgets) != "pause":
            counter.add(1, {"budget": exhausted.budget, "action": "fail"})
            raise BudgetStop(exhausted)
        counter.add(1, {"budget": exhausted.budget, "action": "pause"})
        message = policy.paused_message(exhausted, self.run)
        self.waiting = exhausted
        phase = self.progress.get("phase")
        # The step first, then the phase: whoever sees Paused (the progress query) finds the step written.
        await self.record({**exhausted.to_dict(), "message": message, "usage": self.used.to_dict()})
        self.progress.update(phase="Paused", paused=message)
        remaining = max(0.0, self.deadline - workflow.now().timestamp())
        try:
            await workflow.wait_condition(
                lambda: policy.fits(exhausted, self.used, self.budgets), timeout=timedelta(seconds=remaining)
            )
        except TimeoutError:
            raise BudgetStop(
                policy.Exhausted(
                    exhausted.budget,
                    exhausted.limit,
                    exhausted.used,
                    exhausted.needed,
                    f"{exhausted.message}; it was not raised before the run's deadline (spec.timeoutSeconds)",
                )
            ) from None
        finally:
            self.waiting = None
            self.progress.update(phase=phase, paused=None)
        await self.record(None)  # the budgets_changed step that resumed the run

    def change(self, budgets: Mapping[str, Any]) -> bool:
        """New budgets (the ``set_budgets`` update); True when a paused run may go on now."""
        self.budgets = dict(budgets)
        return self.waiting is not None and policy.fits(self.waiting, self.used, self.budgets)
