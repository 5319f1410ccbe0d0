"""``agent-tree budget NS/RUN --max-tokens N ...``: change a running AgentRun's ``spec.budgets``.

The command patches the AgentRun through the Kubernetes API as the caller (their kubeconfig), so RBAC
decides who may (``patch`` on ``agentruns``). The CRD lets ``spec.budgets`` change and keeps the rest
of the spec immutable; the operator notices the change and hands the budgets to the run's workflow
(the ``set_budgets`` update), which resumes a run paused on an exhausted budget when the new one allows
it. Every refusal names the field and the fix, and changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

FLAGS = {  # flag -> (spec.budgets field, type, what usage counts it)
    "max_tokens": ("maxTokens", int, "tokens"),
    "max_tool_calls": ("maxToolCalls", int, "toolCalls"),
    "max_turns": ("maxTurns", int, "turns"),
    "max_cost_usd": ("maxCostUSD", float, "costUSD"),
}
FINAL = ("Succeeded", "Failed", "Cancelled")


class BudgetError(ValueError):
    """A refused change: the message names the field and the fix."""


def register(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser(
        "budget",
        help="change a running AgentRun's budgets (resumes a run paused on an exhausted budget)",
        description="Patches spec.budgets of the AgentRun NS/RUN through the Kubernetes API as you (kubeconfig); "
        "fields not given keep their value. See docs/run-control.md, 'Budgets'.",
    )
    cmd.add_argument("run", metavar="NS/RUN", help="the AgentRun, as namespace/name")
    cmd.add_argument("--max-tokens", type=str, help="spec.budgets.maxTokens (an integer >= 1)")
    cmd.add_argument("--max-tool-calls", type=str, help="spec.budgets.maxToolCalls (an integer >= 1)")
    cmd.add_argument("--max-turns", type=str, help="spec.budgets.maxTurns (an integer >= 1)")
    cmd.add_argument("--max-cost-usd", type=str, help="spec.budgets.maxCostUSD (USD, above 0)")
    cmd.set_defaults(func=cmd_budget)


def parse_change(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    """``(namespace, name, {field: value})`` from the command line; raises BudgetError."""
    namespace, _, name = str(args.run).partition("/")
    if not namespace or not name or "/" in name:
        raise BudgetError(f"NS/RUN: expected namespace/name of an AgentRun, got {args.run!r}")
    change: dict[str, Any] = {}
    for attr, (field, kind, _) in FLAGS.items():
        raw = getattr(args, attr)
        if raw is None:
            continue
        flag = "--" + attr.replace("_", "-")
        try:
            value = kind(raw)
        except ValueError:
            raise BudgetError(f"{flag} (spec.budgets.{field}): expected a number, got {raw!r}") from None
        if (kind is int and value < 1) or (kind is float and not value > 0):
            bound = "at least 1" if kind is int else "above 0"
            raise BudgetError(f"{flag} (spec.budgets.{field}): must be {bound}, got {raw}")
        change[field] = value
    if not change:
        raise BudgetError("give at least one of --max-tokens, --max-tool-calls, --max-turns, --max-cost-usd")
    return namespace, name, change


def check_change(run: dict[str, Any] | None, tree: dict[str, Any] | None, where: str, change: dict[str, Any]) -> None:
    """Refuse a change the run cannot take (pure; raises BudgetError)."""
    if run is None:
        raise BudgetError(f"AgentRun {where} not found; check the namespace and name (kubectl get agentruns -n NS)")
    status = run.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase in FINAL:
        raise BudgetError(
            f"AgentRun {where} is {phase}: the budgets of a finished run cannot change; "
            "create a new AgentRun (or retry it) with the budgets you want"
        )
    has_budgets = (run.get("spec") or {}).get("budgets") or ((tree or {}).get("spec") or {}).get("budgets")
    if not has_budgets and phase != "Pending":
        raise BudgetError(
            f"AgentRun {where} was started without budgets (spec.budgets and its AgentTree's budgets are unset), "
            "so it does not count them; create a new AgentRun with spec.budgets"
        )
    usage = status.get("usage") or {}
    for field, value in change.items():
        counted = next(key for f, _, key in FLAGS.values() if f == field)
        used = usage.get(counted)
        if used is not None and value < used:
            raise BudgetError(
                f"spec.budgets.{field}: {value:g} is below what the run used already ({used:g} {counted}); "
                f"give at least {used:g}"
            )


def cmd_budget(args: argparse.Namespace) -> int:
    from agent_tree_operator.adapters.kube import MERGE, Kube, KubeError, load_api_client

    try:
        namespace, name, change = parse_change(args)
    except BudgetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    where = f"{namespace}/{name}"
    kube = Kube(load_api_client(2), threads=2)
    try:
        return _run(kube, namespace, name, where, change, MERGE, KubeError)
    finally:
        kube.close()


def _run(kube: Any, namespace: str, name: str, where: str, change: dict[str, Any], merge: str, error: Any) -> int:
    async def go() -> dict[str, Any]:
        run = await kube.get("agentruns", namespace, name)
        tree_name = ((run or {}).get("spec") or {}).get("treeRef", {}).get("name")
        tree = await kube.get("agenttrees", namespace, tree_name) if tree_name else None
        check_change(run, tree, where, change)
        budgets = {**((run or {}).get("spec") or {}).get("budgets", {}), **change}
        return await kube.call(
            "PATCH", kube._cr_path("agentruns", namespace, name), {"spec": {"budgets": budgets}}, merge
        )

    try:
        patched = asyncio.run(go())
    except BudgetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except error as exc:
        print(
            f"error: AgentRun {where}: the API server refused the change ({exc.status}): {exc.message}", file=sys.stderr
        )
        return 1
    print(f"agentrun {where}: spec.budgets = {json.dumps(patched['spec']['budgets'], sort_keys=True)}")
    return 0
