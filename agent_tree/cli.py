"""The ``agent-tree`` command: run trees in-process, validate manifests, and the platform commands.

Subcommands of the worker and the operator (``worker``, ``db``, ``logs``, ``history``,
``operator``) register themselves through ``register(subparsers)`` in
``agent_tree_worker.cli`` and ``agent_tree_operator.cli``; the core stays free of their imports.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from agent_tree import approval_gate, policy, remote_cli, terminal_approver
from agent_tree.compiler import CompileError, compile_tree
from agent_tree.events import event_hooks, format_event
from agent_tree.manifest_files import load_documents
from agent_tree.manifest_files import load_tree as load_tree  # callers import it from here
from agent_tree.spec import (
    AgentRunManifest,
    AgentTreeManifest,
    AgentTreeSpec,
    Budgets,
    ManifestError,
    cost_problems,
    parse_manifest,
)
from agent_tree.unavailable import EXIT_UNAVAILABLE, ServiceUnavailable

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PLUGINS = (
    "agent_tree_worker.cli",
    "agent_tree_operator.cli",
    "agent_tree_operator.commands.budget",
    "agent_tree_api.cli",
)


def add_import_path(manifest_path: str) -> None:
    """Make the manifest's folder importable, so its entrypoints resolve like a worker's PYTHONPATH."""
    folder = str(Path(manifest_path).resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def load_run_manifests(paths: list[str]) -> tuple[AgentTreeManifest, AgentRunManifest | None]:
    """The one AgentTree and the (at most one) AgentRun of ``paths``, in any of the files.

    Raises:
        ManifestError: naming the file and what to change.
    """
    trees: list[tuple[str, AgentTreeManifest]] = []
    runs: list[tuple[str, AgentRunManifest]] = []
    for path in paths:
        for label, doc in load_documents(path):
            manifest = parse_manifest(doc, label)
            if isinstance(manifest, AgentTreeManifest):
                trees.append((label, manifest))
            else:
                runs.append((label, manifest))
    where = ", ".join(paths)
    if len(trees) != 1:
        found = f": {', '.join(label for label, _ in trees)}" if trees else ""
        raise ManifestError(where, [f"expected exactly one AgentTree, found {len(trees)}{found}"])
    if len(runs) > 1:
        labels = ", ".join(label for label, _ in runs)
        raise ManifestError(where, [f"expected at most one AgentRun, found {len(runs)} ({labels}); give one with -f"])
    tree = trees[0][1]
    if not runs:
        return tree, None
    label, run = runs[0]
    if run.spec.forkFrom is not None or run.spec.treeRef is None:
        raise ManifestError(
            label,
            [
                "spec.forkFrom: a retry or fork reuses a durable run's history, which an embedded run has not; "
                "apply this AgentRun to a cluster (or remove spec.forkFrom and set spec.treeRef and spec.input)"
            ],
        )
    if run.spec.treeRef.name != tree.metadata.name:
        raise ManifestError(
            label,
            [
                f"spec.treeRef.name is {run.spec.treeRef.name!r} but the AgentTree ({trees[0][0]}) is "
                f"{tree.metadata.name!r}: set spec.treeRef.name: {tree.metadata.name}"
            ],
        )
    return tree, run


def run_budgets(tree: AgentTreeSpec, budgets: Budgets | None) -> dict[str, Any]:
    """The run's budgets over the tree's; a cost budget needs every model agent's pricing."""
    merged = policy.effective_budgets(
        tree.budgets.model_dump(exclude_none=True) if tree.budgets else None,
        budgets.model_dump(exclude_none=True) if budgets else None,
    )
    problems = cost_problems(tree, merged.get("maxCostUSD"), "spec.budgets.maxCostUSD")
    if problems:
        raise ManifestError("AgentRun", problems)
    return merged


async def run_embedded(
    paths: str | list[str],
    user_input: str | None,
    context: dict[str, Any],
    as_json: bool,
    approve: approval_gate.Approver | None = None,
) -> int:
    """Run a tree in-process; an AgentRun among ``paths`` gives the input, context and limits.

    ``approve`` decides the calls of tools that require approval (default: the terminal's answer, see
    :mod:`agent_tree.terminal_approver`).

    The AgentRun's ``maxSteps``, ``timeoutSeconds`` and ``budgets`` bound the run with the same
    decisions as a durable run (:mod:`agent_tree.policy`); ``--input`` replaces its ``spec.input``.
    """
    paths = [paths] if isinstance(paths, str) else list(paths)
    tree_manifest, run = load_run_manifests(paths)
    limits: dict[str, Any] = {}
    if run is not None:
        context = {**run.spec.context, **context}
        limits = {
            "max_steps": policy.max_steps(run.spec.maxSteps, tree_manifest.spec.maxSteps),
            "timeout_seconds": run.spec.timeoutSeconds,
            "budgets": run_budgets(tree_manifest.spec, run.spec.budgets),
        }
        if user_input is None:
            user_input = run.spec.input
    if user_input is None:
        print(f"error: --input is required ({', '.join(paths)} holds no AgentRun)", file=sys.stderr)
        return 2
    for path in paths:
        add_import_path(path)
    compiled = compile_tree(tree_manifest.spec, name=tree_manifest.metadata.name)
    events: list[dict[str, Any]] = []

    async def sink(event: dict[str, Any]) -> None:
        events.append(event)
        if not as_json:
            print(format_event(event), flush=True)

    approve = approve or terminal_approver.for_cli(False, False)
    orchestrator = compiled.orchestrator(
        hooks=event_hooks(sink), approve=approve, approver_name=terminal_approver.user(), **limits
    )
    result = await orchestrator.run(user_input, context)
    if as_json:
        print(json.dumps({"result": result.model_dump(mode="json"), "events": events}, indent=2, default=str))
    else:
        print()
        print(f"answer: {result.answer}")
        print(f"status: {result.status}")
        print(f"plan:   {json.dumps(result.plan, ensure_ascii=False) if result.plan is not None else '-'}")
        print(f"steps:  {result.steps}  final agent: {result.final_agent or '-'}")
    return 0 if result.status == "completed" else 1


def cmd_run(args: argparse.Namespace) -> int:
    context = {}
    for item in args.context or []:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --context {item!r}: expected KEY=VALUE", file=sys.stderr)
            return 2
        context[key] = value
    approve = terminal_approver.for_cli(args.approve_all, args.reject_all)
    return asyncio.run(run_embedded(args.file, args.input, context, args.json, approve))


def cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.file:
        try:
            documents = load_documents(path)
        except ManifestError as exc:
            print(f"FAIL {exc}", file=sys.stderr)
            failed += 1
            continue
        for label, doc in documents:
            try:
                manifest = parse_manifest(doc, label)
            except ManifestError as exc:
                print(f"FAIL {exc}", file=sys.stderr)
                failed += 1
                continue
            if args.resolve and isinstance(manifest, AgentTreeManifest):
                add_import_path(path)
                try:
                    compile_tree(manifest.spec, manifest.metadata.name)
                except CompileError as exc:
                    print(f"FAIL {label}:\n  {exc}", file=sys.stderr)
                    failed += 1
                    continue
            print(f"ok   {label}: {manifest.kind} {manifest.metadata.name}")
    return 1 if failed else 0


def cmd_demo(args: argparse.Namespace) -> int:
    tree = EXAMPLES / "invoice" / "agenttree.yaml"
    if not tree.exists():
        print(f"error: the invoice example is missing ({tree}); run from a clone of agent-tree", file=sys.stderr)
        return 2
    question = args.input or f"Why was invoice #{args.invoice} rejected?"
    return asyncio.run(run_embedded(str(tree), question, {}, args.json))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-tree",
        description="Supervised trees of AI agents.",
        epilog="Exit codes: 0 ok, 1 the work failed (or a bad manifest), 2 bad usage or configuration, "
        "3 a service (PostgreSQL, Temporal, Redis, the Kubernetes API) cannot be reached.",
    )
    parser.add_argument(
        "--debug", dest="debug_all", action="store_true", help="show tracebacks (also accepted after the command)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a tree in-process (embedded mode) and stream its events")
    run.add_argument(
        "-f",
        "--file",
        action="append",
        required=True,
        help="the AgentTree manifest; repeat for an AgentRun manifest (its input, context, maxSteps, "
        "timeoutSeconds and budgets apply); one file may hold both",
    )
    run.add_argument("-i", "--input", help="the request (default: the AgentRun's spec.input)")
    run.add_argument("-c", "--context", action="append", metavar="KEY=VALUE", help="initial context entries")
    run.add_argument("--json", action="store_true", help="print the result and events as JSON")
    decide = run.add_mutually_exclusive_group()
    decide.add_argument(
        "--approve-all",
        action="store_true",
        help="approve every call of a tool that requires approval (default: ask on the terminal; "
        "with no terminal such calls are rejected)",
    )
    decide.add_argument("--reject-all", action="store_true", help="reject every call of a tool that requires approval")
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", help="check AgentTree/AgentRun manifests offline")
    val.add_argument("-f", "--file", action="append", required=True, help="manifest file (repeatable, '-' = stdin)")
    val.add_argument("--resolve", action="store_true", help="also import every entrypoint")
    val.set_defaults(func=cmd_validate)

    demo = sub.add_parser("demo", help="run the invoice example in-process")
    demo.add_argument("--invoice", default="4821", help="invoice number to ask about (default 4821)")
    demo.add_argument("-i", "--input", help="ask your own question instead")
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(func=cmd_demo)

    for module_name in PLUGINS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(sub)
    remote_cli.install(sub)  # --server URL on the run commands the plugins registered
    _add_debug_flag(parser)
    return parser


def _add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """Give every (sub)command that lacks one a ``--debug`` flag (``operator`` has its own, kopf's)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                _add_debug_flag(subparser)
            return
    if "--debug" not in parser._option_string_actions:
        parser.add_argument("--debug", action="store_true", help="show the traceback of an error")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug_all or getattr(args, "debug", False)
    try:
        return int(args.func(args) or 0)
    except ServiceUnavailable as exc:
        if debug:
            traceback.print_exc()
        print(f"agent-tree: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except CompileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def run() -> None:
    """The console script: ``main()``, then exit without interpreter finalization when Temporal was used.

    The Temporal SDK's Rust bridge keeps Tokio threads that can crash a short-lived process while
    CPython finalizes (SIGSEGV / SIGABRT after the command already succeeded, temporalio/sdk-python#300;
    measured here: 4 of 60 client-only processes crashed at exit, 0 of 60 with os._exit). Once the
    command is done and its output flushed, nothing is left to clean up, so such processes leave
    with ``os._exit``.
    """
    code = main()
    if "temporalio.bridge.temporal_sdk_bridge" in sys.modules:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
