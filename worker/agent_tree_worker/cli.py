"""Subcommands of ``agent-tree`` provided by the worker package (registered by ``agent_tree.cli``):
``worker``, ``db migrate``, ``db purge``, ``runs``, ``logs``, ``history`` and ``submit``.

A service a command cannot reach (PostgreSQL, Temporal, Redis) ends it with one line naming the
service, its address and the variable that sets it (exit 3, see ``agent_tree.unavailable``); the
history database is retried for :data:`CLI_RETRY_SECONDS` only, so a dead one fails fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from datetime import timedelta
from typing import Any

from agent_tree.contract import RunInput, RunInputError, run_input
from agent_tree.settings import Settings, SettingsError
from agent_tree.unavailable import POSTGRES, REDIS, TEMPORAL, ServiceUnavailable
from agent_tree_worker import listing

CLI_RETRY_SECONDS = 3.0  # a command retries PostgreSQL this long (workers: 30 s per query)
TEMPORAL_CONNECT_SECONDS = 10.0
DEFAULT_TIMEOUT: int = RunInput.model_fields["timeout_seconds"].default  # an AgentRun's default too


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` (an argparse ``type``)."""
    try:
        return listing.parse_duration(text, "AGE")
    except listing.UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("AGE ")) from None


def _store(settings: Settings, required: bool = True):
    from agent_tree_worker.store import HistoryStore

    if not settings.database_url:
        if required:
            raise SettingsError("AGENT_TREE_DATABASE_URL (or DATABASE_URL) is not set: no history database")
        return None
    return HistoryStore(settings.database_url, retry_seconds=CLI_RETRY_SECONDS, retry_log_level=logging.DEBUG)


def _using(settings: Settings, *used: str):
    """Context manager: a failure to reach one of ``used`` becomes a one-line ServiceUnavailable."""
    from agent_tree_worker import reach

    return reach.services(settings, *used)


def cmd_worker(args: argparse.Namespace) -> int:
    from agent_tree_worker.config import WorkerConfig
    from agent_tree_worker.main import main

    config = WorkerConfig.load(
        task_queue=args.task_queue,
        tree=args.tree,
        agent=args.agent,
        paths=tuple(args.path or ()),
        migrate=False if args.no_migrate else None,
    )
    with _using(config.settings, POSTGRES, TEMPORAL):
        return main(config)


def cmd_migrate(args: argparse.Namespace) -> int:
    async def go(settings: Settings) -> list[str]:
        store = _store(settings)
        try:
            return await store.migrate()
        finally:
            await store.close()

    with _using(settings := Settings.from_env(), POSTGRES):
        applied = asyncio.run(go(settings))
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    async def go(settings: Settings) -> dict[str, int]:
        store = _store(settings)
        try:
            return await store.purge(args.older_than, dry_run=args.dry_run)
        finally:
            await store.close()

    with _using(settings := Settings.from_env(), POSTGRES):
        counts = asyncio.run(go(settings))
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb}: " + ", ".join(f"{n} {table}" for table, n in counts.items()))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from agent_tree_worker.reader import RunNotFound, print_history

    async def go(settings: Settings) -> int:
        store = _store(settings)
        try:
            return await print_history(store, args.run, as_json=args.json)
        finally:
            await store.close()

    try:
        with _using(settings := Settings.from_env(), POSTGRES):
            return asyncio.run(go(settings))
    except RunNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cmd_logs(args: argparse.Namespace) -> int:
    from agent_tree_worker.reader import RunNotFound, follow_logs
    from agent_tree_worker.stream import StepStream

    async def go(settings: Settings) -> str | None:
        store = _store(settings, required=False)
        stream = StepStream(settings.redis_url)
        if store is None and not settings.redis_url:
            raise SettingsError("set AGENT_TREE_DATABASE_URL and/or AGENT_TREE_REDIS_URL to read run logs")
        try:
            return await follow_logs(args.run, store, stream, follow=args.follow, as_json=args.json)
        finally:
            await stream.close()
            if store is not None:
                await store.close()

    try:
        with _using(settings := Settings.from_env(), POSTGRES, REDIS):
            status = asyncio.run(go(settings))
    except RunNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.follow and status:
        print(f"# run ended: {status}", file=sys.stderr)
    return 0 if status in (None, "completed", "running") else 1


class SubmitError(ValueError):
    """``agent-tree submit`` cannot build the run from its options and file; the message says why."""


def submit_input(args: argparse.Namespace, tree: Any, runs: list[Any], uid: str) -> RunInput:
    """The run ``agent-tree submit`` starts: the same input the operator builds from an AgentRun.

    With an AgentRun in the file, its input and context (unless ``--input`` replaces the request),
    ``maxSteps``, ``timeoutSeconds`` and ``budgets`` apply; ``--max-steps`` / ``--timeout`` override them.

    Raises:
        SubmitError: no ``--input`` and no AgentRun in the file.
        agent_tree.contract.RunInputError: the input is over the AgentRun limit.
    """
    run = runs[0].spec if runs else None
    text = args.input if args.input is not None else (run.input if run else None)
    if text is None:
        raise SubmitError(f"--input is required ({args.file} holds no AgentRun)")
    timeout = args.timeout if args.timeout is not None else (run.timeoutSeconds if run else DEFAULT_TIMEOUT)
    return run_input(
        args.namespace or tree.metadata.namespace or "default",
        tree.metadata.name,
        tree.spec,
        name=args.name or (runs[0].metadata.name if runs else f"{tree.metadata.name}-run"),
        uid=uid,
        input=text,
        context=dict(run.context) if run and args.input is None else {},
        max_steps=args.max_steps if args.max_steps is not None else (run.maxSteps if run else None),
        timeout_seconds=timeout,
        budgets=run.budgets.model_dump(exclude_none=True) if run and run.budgets else None,
    )


def cmd_submit(args: argparse.Namespace) -> int:
    import uuid

    from agent_tree.cli import load_tree
    from agent_tree.contract.temporal import connect, run_result, start_run

    tree, runs = load_tree(args.file)
    try:
        inp = submit_input(args, tree, runs, args.uid or uuid.uuid4().hex[:12])
    except (SubmitError, RunInputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = Settings.from_env()

    async def go() -> int:
        try:
            client = await asyncio.wait_for(
                connect(settings.temporal_address, settings.temporal_namespace),
                TEMPORAL_CONNECT_SECONDS,
            )
        except TimeoutError:
            raise ServiceUnavailable(
                TEMPORAL,
                settings.temporal_address,
                settings.variable("temporal_address"),
                f"no answer within {TEMPORAL_CONNECT_SECONDS:g}s",
            ) from None
        handle = await start_run(client, inp)
        print(f"started {handle.id} on task queue of {tree.spec.root!r}", file=sys.stderr)
        if not args.wait:
            print(handle.id)
            return 0
        result = await run_result(handle)
        print(json.dumps(result.model_dump(mode="json"), indent=2))
        return 0 if result.status == "completed" else 1

    with _using(settings, TEMPORAL):
        return asyncio.run(go())


def cmd_runs(args: argparse.Namespace) -> int:
    try:
        query = listing.RunsQuery.parse(
            namespace=args.namespace,
            tree=args.tree,
            phase=args.phase,
            since=args.since,
            limit=args.limit,
            cursor=args.cursor,
        )
    except listing.UsageError as exc:
        print(f"agent-tree runs: {exc}", file=sys.stderr)
        return 2

    async def go(settings: Settings) -> tuple[list[dict[str, Any]], str | None]:
        store = _store(settings)
        try:
            return await listing.fetch_page(store, query)
        finally:
            await store.close()

    with _using(settings := Settings.from_env(), POSTGRES):
        rows, next_cursor = asyncio.run(go(settings))
    if args.json:
        print(listing.to_json(rows, next_cursor))
        return 0
    if not rows:
        where = f" in namespace {query.namespace}" if query.namespace else ""
        print(f"No runs found{where}.", file=sys.stderr)
        return 0
    print("\n".join(listing.render_table(rows, show_namespace=query.namespace is None)))
    if next_cursor:
        print(f"more: --cursor {next_cursor}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the worker's subcommands to the ``agent-tree`` parser."""
    w = sub.add_parser("worker", help="serve one agent's Temporal task queue (durable runs)")
    w.add_argument("--task-queue", help="the queue to serve (default: $AGENT_TREE_TASK_QUEUE)")
    w.add_argument("--tree", metavar="NS/NAME", help="with --agent: serve that agent's queue ($AGENT_TREE_TREE)")
    w.add_argument("--agent", help="agent name ($AGENT_TREE_AGENT)")
    w.add_argument("--path", action="append", metavar="DIR", help="add DIR to the import path (repeatable)")
    w.add_argument("--no-migrate", action="store_true", help="do not apply history migrations at start")
    w.set_defaults(func=_guard(cmd_worker))

    db = sub.add_parser("db", help="the history database (PostgreSQL)")
    dbs = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    m = dbs.add_parser("migrate", help="apply the schema migrations (safe to run concurrently)")
    m.set_defaults(func=_guard(cmd_migrate))
    p = dbs.add_parser("purge", help="delete finished runs (and their steps, journal, blobs, audit) past retention")
    p.add_argument("--older-than", type=parse_duration, required=True, metavar="AGE", help="e.g. 30d, 12h")
    p.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    p.set_defaults(func=_guard(cmd_purge))

    rs = sub.add_parser(
        "runs",
        help="list runs from the history database, newest first (also runs whose AgentRun was deleted)",
        description="Lists runs from PostgreSQL (AGENT_TREE_DATABASE_URL), newest first, a page at a time: "
        "when more exist, the last line (on stderr) says 'more: --cursor C'; pass it to get the next page. "
        "PHASE is the AgentRun phase of the run's recorded status; DURATION is '-' until the run ends.",
    )
    scope = rs.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", metavar="NS", help="only runs in this namespace")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="runs of every namespace (the default)")
    rs.add_argument("--tree", metavar="TREE", help="only runs of this AgentTree")
    rs.add_argument(
        "--phase", metavar="PHASE", help=f"only runs in this phase: {', '.join(listing.PHASES)} (comma-separated)"
    )
    rs.add_argument("--since", metavar="DURATION", help="only runs started within DURATION, e.g. 90m, 7d")
    rs.add_argument(
        "--limit", metavar="N", help=f"runs per page, 1..{listing.MAX_LIMIT} (default {listing.DEFAULT_LIMIT})"
    )
    rs.add_argument("--cursor", metavar="C", help="the next page: the value printed after 'more: --cursor'")
    rs.add_argument("--json", action="store_true", help='{"runs": [...], "next_cursor": C or null}')
    rs.set_defaults(func=_guard(cmd_runs))

    lg = sub.add_parser("logs", help="print a durable run's steps (-f: follow live)")
    lg.add_argument("run", metavar="RUN", help="workflow id, or NAMESPACE/NAME of an AgentRun (its latest run)")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    lg.add_argument("--json", action="store_true", help="one JSON object per step")
    lg.set_defaults(func=_guard(cmd_logs))

    hi = sub.add_parser("history", help="print the full history of a durable run from PostgreSQL")
    hi.add_argument("run", metavar="RUN", help="workflow id, or NAMESPACE/NAME of an AgentRun (its latest run)")
    hi.add_argument("--json", action="store_true", help="the run and its steps as JSON")
    hi.set_defaults(func=_guard(cmd_history))

    sb = sub.add_parser("submit", help="start a durable run of a tree on Temporal (no Kubernetes needed)")
    sb.add_argument("-f", "--file", required=True, help="AgentTree manifest (may also hold an AgentRun)")
    sb.add_argument("-i", "--input", help="the request (default: the AgentRun's spec.input in the file)")
    sb.add_argument("--namespace", help="namespace of the run (default: the tree's, else 'default')")
    sb.add_argument("--name", help="run name (default: the AgentRun's, else <tree>-run)")
    sb.add_argument("--uid", help="run uid (default: random); the same uid attaches to the same run")
    sb.add_argument("--max-steps", type=int, help="default: the AgentRun's spec.maxSteps, else the tree's")
    sb.add_argument(
        "--timeout", type=int, help=f"seconds (default: the AgentRun's spec.timeoutSeconds, else {DEFAULT_TIMEOUT})"
    )
    sb.add_argument("--wait", action="store_true", help="wait for the result and print it")
    sb.set_defaults(func=_guard(cmd_submit))


def _guard(fn):
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except SettingsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return run
