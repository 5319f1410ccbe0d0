"""The ONE budget ledger of a run: what it used, against its budgets, checked before each turn, tool
call and model call (:mod:`agent_tree.policy` decides; this module only keeps the count).

In-process code finds the run's ledger through a context variable (:func:`current`), so every place
that turns, calls a tool or calls a model checks the same ledger: the embedded supervisor loop
(:mod:`agent_tree.turns`), :meth:`RunContext.call_tool`, a model agent's tool calls and
:func:`agent_tree.providers.openai_client.call_model` (a model agent's turn, a model supervisor's
routing call, a model agent that a Python agent calls in-process). The durable workflow keeps a
ledger of its own (same class, no context variable) and hands a copy to a Python agent's turn, which
runs in-process in an activity and sends back what it used.

A check that fails raises :class:`BudgetStop`, a ``BaseException`` so that an agent's ``except
Exception`` (and the turn runner that turns an agent's errors into a failed handoff) lets it through:
the call is not made and the run stops (or, durably with ``onExhausted: pause``, waits).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from agent_tree import policy

_current: ContextVar[Ledger | None] = ContextVar("agent_tree_budget_ledger", default=None)


class BudgetStop(BaseException):
    """A budget does not allow the next turn, tool call or model call."""

    def __init__(self, exhausted: policy.Exhausted) -> None:
        super().__init__(exhausted.message)
        self.exhausted = exhausted


class Ledger:
    """Budgets (camelCase keys, as ``spec.budgets``) and the usage counted against them."""

    def __init__(self, budgets: Mapping[str, Any] | None = None, used: policy.Usage | None = None) -> None:
        self.budgets: dict[str, Any] = dict(budgets or {})
        self.used = used or policy.Usage()

    # --- checks (raise BudgetStop) -------------------------------------------------------------
    def turn(self) -> None:
        """Before an agent turn: check, then count it."""
        self._raise(policy.before_turn(self.used, self.budgets))
        self.used = self.used.plus(policy.Usage(turns=1))

    def tool_call(self) -> None:
        """Before a tool call: check, then count it."""
        self._raise(policy.before_tool_call(self.used, self.budgets))
        self.used = self.used.plus(policy.Usage(tool_calls=1))

    def model_call(self, model: Mapping[str, Any] | None) -> None:
        """Before a model call with ``model`` (a ModelSpec dict): check with its max_tokens reserved."""
        self._raise(policy.before_model_call(self.used, self.budgets, model))

    def model_used(self, model: Mapping[str, Any] | None, usage: Mapping[str, Any] | None) -> None:
        """After a model call: count its tokens (the Chat Completions ``usage``) and their cost."""
        usage = usage or {}
        prompt = max(0, int(usage.get("prompt_tokens") or 0))
        completion = max(0, int(usage.get("completion_tokens") or 0))
        total = max(0, int(usage.get("total_tokens") or 0)) or prompt + completion
        self.used = self.used.plus(policy.Usage(tokens=total, cost_usd=policy.call_cost(model, prompt, completion)))

    @staticmethod
    def _raise(exhausted: policy.Exhausted | None) -> None:
        if exhausted is not None:
            raise BudgetStop(exhausted)


def current() -> Ledger | None:
    """The ledger of the run this code runs in (None: no run counts here)."""
    return _current.get()


@contextlib.contextmanager
def using(ledger: Ledger | None) -> Iterator[Ledger | None]:
    """Make ``ledger`` the current one inside the block."""
    token = _current.set(ledger)
    try:
        yield ledger
    finally:
        _current.reset(token)


def check_turn() -> None:
    if (ledger := current()) is not None:
        ledger.turn()


def check_tool_call() -> None:
    if (ledger := current()) is not None:
        ledger.tool_call()


def check_model_call(model: Mapping[str, Any] | None) -> None:
    if (ledger := current()) is not None:
        ledger.model_call(model)


def count_model_call(model: Mapping[str, Any] | None, usage: Mapping[str, Any] | None) -> None:
    if (ledger := current()) is not None:
        ledger.model_used(model, usage)
