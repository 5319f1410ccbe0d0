"""``agent-tree operator``, ``crds``, ``approve``, ``reject``, ``retry`` and ``fork``, registered into the core CLI.

Imports stay inside the commands: every ``agent-tree`` invocation builds the parser, and only the
operator needs kopf.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent_tree_operator.commands import approve, fork


def register(subparsers: argparse._SubParsersAction) -> None:
    op = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator (kopf): AgentTrees -> worker Deployments, AgentRuns -> workflows",
        description="Runs until SIGTERM. Watches all namespaces unless AGENT_TREE_WATCH_NAMESPACE (comma-separated) "
        "or --namespace is given. Configuration: AGENT_TREE_* variables (docs/operator.md).",
    )
    op.add_argument("-n", "--namespace", action="append", metavar="NS", help="watch this namespace (repeatable)")
    op.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces (overrides the env)")
    op.add_argument("--liveness", metavar="URL", help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    op.add_argument("--standalone", action="store_true", help="accepted for kopf compatibility; always standalone")
    op.add_argument("-v", "--verbose", action="store_true")
    op.add_argument("--debug", action="store_true")
    op.add_argument("-q", "--quiet", action="store_true")
    op.set_defaults(func=cmd_operator)

    crds = subparsers.add_parser("crds", help="print (or write, or check) the CRDs generated from agent_tree.spec")
    mode = crds.add_mutually_exclusive_group()
    mode.add_argument(
        "--write", nargs="?", const="", metavar="DIR", help="write the CRD files (default: the repo's crds/)"
    )
    mode.add_argument(
        "--check", nargs="?", const="", metavar="DIR", help="exit 1 when the files differ from the generator"
    )
    crds.set_defaults(func=cmd_crds)
    approve.register(subparsers)
    fork.register(subparsers)


def cmd_operator(args: argparse.Namespace) -> int:
    from agent_tree.settings import SettingsError
    from agent_tree_operator.config import OperatorConfig
    from agent_tree_operator.preflight import check_kubernetes

    try:
        config = OperatorConfig.from_env()
        check_kubernetes()  # an unreachable API server ends the command here (ServiceUnavailable, exit 3)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from agent_tree_operator import main

    namespaces = () if args.all_namespaces else (tuple(args.namespace) if args.namespace else None)
    return main.run(
        config, liveness=args.liveness, namespaces=namespaces, verbose=args.verbose, debug=args.debug, quiet=args.quiet
    )


def cmd_crds(args: argparse.Namespace) -> int:
    from agent_tree_operator import crdgen

    if args.write is not None:
        for path in crdgen.write(Path(args.write) if args.write else crdgen.CRD_DIR):
            print(f"wrote {path}")
        return 0
    if args.check is not None:
        directory = Path(args.check) if args.check else crdgen.CRD_DIR
        drifted = crdgen.drift(directory)
        for name in drifted:
            print(f"{directory / name} differs from the generator; run: agent-tree crds --write", file=sys.stderr)
        return 1 if drifted else 0
    print("---\n".join(crdgen.render(crd) for crd in crdgen.crds().values()), end="")
    return 0
