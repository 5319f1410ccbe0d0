"""What ``runs``, ``history``, ``logs``, ``approve`` / ``reject``, ``retry``, ``fork`` and ``submit`` do
with ``--server`` (see :mod:`agent_tree.remote_cli`): the same output, read from the REST API.

A run is named ``NAMESPACE/NAME`` (the API has no lookup by workflow id). Differences the API's data
imposes: ``history`` shows the run's phase (``Succeeded``) where the local one shows the history's
status (``completed``); ``runs`` lists one namespace and ``--json`` gives the API's run objects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from agent_tree.api_models import RunSummary, RunView, StepItem
from agent_tree.client import Client
from agent_tree.durations import format_duration
from agent_tree.manifest_files import load_tree
from agent_tree.runs_query import TABLE_HEADER, align_columns
from agent_tree.step_text import DeltaLine, history_header, history_table, render

OK_PHASES = ("Succeeded", "Running", "Pending", "AwaitingApproval")  # logs exits 0 (the local: completed, running)
POLL_SECONDS = 0.5


class Usage(ValueError):
    """An option that does not work with ``--server``; the message says what to give instead."""


def split_ref(text: str, what: str = "RUN") -> tuple[str, str]:
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise Usage(f"{what} {text!r}: with --server, name the run as NAMESPACE/NAME (e.g. default/why-4821)")
    return namespace, name


def _step(item: StepItem) -> dict[str, Any]:
    return {"ord": item.ord, "type": item.type, "agent": item.agent, "data": item.data, "ts": item.ts}


# --- runs ---------------------------------------------------------------------------------------
async def runs(args: argparse.Namespace, api: Client) -> int:
    if args.all_namespaces or not args.namespace:
        raise Usage("with --server, runs lists one namespace: give -n NAMESPACE")
    page = await api.runs(
        args.namespace, tree=args.tree, phase=args.phase, since=args.since, limit=args.limit, cursor=args.cursor
    )
    if args.json:
        items = [item.model_dump(mode="json") for item in page.items]
        print(json.dumps({"runs": items, "next_cursor": page.nextCursor}, indent=2))
        return 0
    if not page.items:
        print(f"No runs found in namespace {args.namespace}.", file=sys.stderr)
        return 0
    print("\n".join(align_columns([list(TABLE_HEADER), *(_row(item) for item in page.items)])))
    if page.nextCursor:
        print(f"more: --cursor {page.nextCursor}", file=sys.stderr)
    return 0


def _row(item: RunSummary) -> list[str]:
    started = "-"
    if item.startedAt:
        try:
            started = datetime.fromisoformat(item.startedAt).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            started = item.startedAt
    took = format_duration(item.durationSeconds) if item.durationSeconds is not None else "-"
    return [item.name, item.tree or "-", item.phase or "-", str(item.steps), str(item.tokens), started, took]


# --- history and logs ---------------------------------------------------------------------------
async def history(args: argparse.Namespace, api: Client) -> int:
    namespace, name = split_ref(args.run)
    view = await api.run(namespace, name)
    steps = [_step(item) async for item in api.all_steps(namespace, name, limit=1000)]
    if args.json:
        print(json.dumps({"run": view.model_dump(mode="json"), "steps": steps}, indent=2, default=str))
        return 0
    if view.workflowId:
        print("\n".join(history_header(_header_row(view), view.durationSeconds)))
    print("\n".join(history_table(steps)))
    return 0


def _header_row(view: RunView) -> dict[str, Any]:
    status = view.status or {}
    return {
        "workflow_id": view.workflowId,
        "namespace": view.namespace,
        "name": view.name,
        "tree": view.tree,
        "tree_revision": status.get("treeRevision") or "-",
        "status": view.phase,
        "steps": view.steps,
        "token_usage": view.tokens,
        "input": view.input or "",
        "answer": view.answer,
        "forked_from": view.forkedFrom,
        "fork_step": (status.get("forkedFrom") or {}).get("step") or "?",
    }


async def logs(args: argparse.Namespace, api: Client) -> int:
    namespace, name = split_ref(args.run)
    line = (lambda s: json.dumps(s, default=str)) if args.json else render
    if not args.follow:
        async for item in api.all_steps(namespace, name, limit=1000):
            print(line(_step(item)), flush=True)
        view = await api.run(namespace, name)
        return 0 if view.phase in OK_PHASES else 1
    deltas = DeltaLine(sys.stdout, args.json)
    last: list[int] | None = None
    status: str | None = None
    try:
        async for event in api.events(namespace, name):
            if event.id is not None:  # a step
                deltas.end()
                last = event.data["ord"]
                print(line(event.data), flush=True)
            elif event.event == "model_delta":
                deltas.add(event.data, last)
            elif event.event == "end":
                status = (event.data or {}).get("status")
    finally:
        deltas.end()
    if status:
        print(f"# run ended: {status}", file=sys.stderr)
    return 0 if status in (None, "completed", "running") else 1


# --- approvals ----------------------------------------------------------------------------------
async def approve(args: argparse.Namespace, api: Client) -> int:
    namespace, name = split_ref(args.run, "NS/RUN")
    approval_id = args.id
    if approval_id is None:
        pending = [a for a in (await api.approvals(namespace, name)).items if a.pending]
        if len(pending) != 1:
            listing = ", ".join(f"{a.id} ({a.tool})" for a in pending)
            print(
                f"error: AgentRun {namespace}/{name} waits for "
                + (f"{len(pending)} approvals; name one: {listing}" if pending else "no approval now"),
                file=sys.stderr,
            )
            return 1
        approval_id = pending[0].id
    decide = api.approve if args.decision == "approve" else api.reject
    result = await decide(namespace, name, approval_id, reason=args.reason or None)
    if result.message.endswith("nothing to do"):
        print(result.message)
        return 0
    print(result.message + await _delivery(api, namespace, name, approval_id, args.wait))
    return 0


reject = approve  # the parser's decision (args.decision) says which


async def _delivery(api: Client, namespace: str, name: str, approval_id: str, wait: float) -> str:
    """What became of the decision within ``wait`` seconds (the operator sends it to the run)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        found = [a for a in (await api.approvals(namespace, name)).items if a.id == approval_id]
        if found and found[0].delivered:
            return "; the run has it"
        await asyncio.sleep(POLL_SECONDS)
    return "; the operator delivers it to the run" if wait else ""


# --- retry, fork, submit ------------------------------------------------------------------------
async def retry(args: argparse.Namespace, api: Client) -> int:
    namespace, name = split_ref(args.run, "NS/RUN")
    created = await api.retry(namespace, name, new_name=args.name, current_tree=args.current_tree)
    print(created.name)
    return 0


async def fork(args: argparse.Namespace, api: Client) -> int:
    namespace, name = split_ref(args.run, "NS/RUN")
    if args.step < 1:
        raise Usage("--step: steps are numbered from 1 (see `agent-tree history NS/RUN`)")
    context = None
    if args.context is not None:
        try:
            context = json.loads(args.context)
        except ValueError as exc:
            raise Usage(f"--context: not JSON: {exc}") from None
        if not isinstance(context, dict):
            raise Usage('--context: must be a JSON object, e.g. \'{"invoice_id": "4821"}\'')
    created = await api.fork(
        namespace,
        name,
        step=args.step,
        input=args.input,
        context=context,
        new_name=args.name,
        current_tree=args.current_tree,
    )
    print(created.name)
    return 0


async def submit(args: argparse.Namespace, api: Client) -> int:
    """Create an AgentRun of the file's AgentTree (which must be applied in the namespace already)."""
    if args.uid:
        raise Usage("--uid: not with --server (the Kubernetes API server gives the AgentRun its uid)")
    tree, found = load_tree(args.file)
    run = found[0].spec if found else None
    text = args.input if args.input is not None else (run.input if run else None)
    if text is None:
        raise Usage(f"--input is required ({args.file} holds no AgentRun)")
    spec: dict[str, Any] = {"treeRef": {"name": tree.metadata.name}, "input": text}
    if run is not None and args.input is None and run.context:
        spec["context"] = dict(run.context)
    max_steps = args.max_steps if args.max_steps is not None else (run.maxSteps if run else None)
    timeout = args.timeout if args.timeout is not None else (run.timeoutSeconds if run else None)
    if max_steps is not None:
        spec["maxSteps"] = max_steps
    if timeout is not None:
        spec["timeoutSeconds"] = timeout
    if run is not None and run.budgets is not None:
        spec["budgets"] = run.budgets.model_dump(mode="json", exclude_none=True)
    namespace = args.namespace or tree.metadata.namespace or "default"
    name = args.name or (found[0].metadata.name if found else None)
    created = await api.create_run(namespace, spec, name=name, generate_name=None if name else f"{tree.metadata.name}-")
    print(f"created AgentRun {namespace}/{created.name} as {created.createdBy}", file=sys.stderr)
    if not args.wait:
        print(created.name)
        return 0
    async for event in api.events(namespace, created.name):
        if event.event == "end":
            break
    view = await api.run(namespace, created.name)
    print(json.dumps(view.result if view.result is not None else {"status": view.phase}, indent=2))
    return 0 if view.phase == "Succeeded" else 1
