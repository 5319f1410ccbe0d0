"""``agent-tree retry NS/RUN`` and ``agent-tree fork NS/RUN --step N``: create an AgentRun with
``spec.forkFrom`` through the Kubernetes API as the caller (their kubeconfig; RBAC decides), print its name.

The operator resolves the source from the history (docs/run-control.md, "Retry and fork"); these
commands only write the AgentRun. The source AgentRun may be gone: when it still exists its
``treeRef``, ``maxSteps``, ``timeoutSeconds`` and ``budgets`` are copied, else the operator takes
the source's tree from the history. Imports of the Kubernetes client stay inside the commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agent_tree.naming import API_VERSION
from agent_tree.run_requests import fork_manifest, new_name


def register(subparsers: argparse._SubParsersAction) -> None:
    retry = subparsers.add_parser(
        "retry",
        help="retry a run: a new AgentRun reusing every step before the first failed one",
        description="Creates an AgentRun with spec.forkFrom {run: RUN} in NS (as you, through the Kubernetes API) "
        "and prints its name. Steps before the source's first failed step are reused from the history; "
        "the failed tool call or turn runs again.",
    )
    fork = subparsers.add_parser(
        "fork",
        help="fork a run after step N: a new AgentRun reusing steps 1..N (see `agent-tree history`)",
        description="Creates an AgentRun with spec.forkFrom {run: RUN, step: N} in NS (as you, through the "
        "Kubernetes API) and prints its name. Steps 1..N of the source are reused from the history, the rest "
        "runs live.",
    )
    fork.add_argument("--step", type=int, required=True, metavar="N", help="last reused step (agent-tree history)")
    fork.add_argument("--input", metavar="TEXT", help="the fork's input (default: the source's)")
    fork.add_argument("--context", metavar="JSON", help="the fork's context object (default: the source's)")
    for parser, func in ((retry, cmd_retry), (fork, cmd_fork)):
        parser.add_argument("run", metavar="NS/RUN", help="the source AgentRun (it may have been deleted)")
        parser.add_argument("--name", help="the new AgentRun's name (default: RUN-retry-XXXXX / RUN-fork-XXXXX)")
        parser.add_argument(
            "--current-tree", action="store_true", help="run on the AgentTree as it is now, not the source's revision"
        )
        parser.set_defaults(func=func)


class UsageError(ValueError):
    pass


def split_ref(ref: str) -> tuple[str, str]:
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise UsageError(f"{ref!r}: expected NAMESPACE/RUN, e.g. default/why-4821")
    return namespace, name


def cmd_retry(args: argparse.Namespace) -> int:
    return _create(args, kind="retry", step=None, user_input=None, context=None)


def cmd_fork(args: argparse.Namespace) -> int:
    if args.step < 1:
        print("error: --step: steps are numbered from 1 (see `agent-tree history NS/RUN`)", file=sys.stderr)
        return 2
    context = None
    if args.context is not None:
        try:
            context = json.loads(args.context)
        except ValueError as exc:
            print(f"error: --context: not JSON: {exc}", file=sys.stderr)
            return 2
        if not isinstance(context, dict):
            print('error: --context: must be a JSON object, e.g. \'{"invoice_id": "4821"}\'', file=sys.stderr)
            return 2
    return _create(args, kind="fork", step=args.step, user_input=args.input, context=context)


def _create(
    args: argparse.Namespace, *, kind: str, step: int | None, user_input: str | None, context: dict[str, Any] | None
) -> int:
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    from agent_tree.naming import GROUP
    from agent_tree.unavailable import KUBERNETES, ServiceUnavailable, reason

    try:
        namespace, source = split_ref(args.run)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        config.load_kube_config()
    except Exception as exc:
        print(f"error: no kubeconfig to act as you ({exc}); set KUBECONFIG", file=sys.stderr)
        return 2
    api = client.CustomObjectsApi()
    version = API_VERSION.split("/")[1]
    try:
        try:
            found = api.get_namespaced_custom_object(GROUP, version, namespace, "agentruns", source)
            source_spec = found.get("spec") or {}
        except ApiException as exc:
            if exc.status not in (403, 404):
                raise
            source_spec = None  # deleted (the history still has it) or not readable by the caller
        name = args.name or new_name(source, kind)
        body = fork_manifest(
            name,
            source,
            step=step,
            user_input=user_input,
            context=context,
            current_tree=args.current_tree,
            source_spec=source_spec,
        )
        api.create_namespaced_custom_object(GROUP, version, namespace, "agentruns", body)
    except ApiException as exc:
        print(f"error: {_api_message(exc)}", file=sys.stderr)
        return 1
    except (OSError, HTTPError) as exc:
        host = client.Configuration.get_default_copy().host
        raise ServiceUnavailable(KUBERNETES, host, "KUBECONFIG", reason(exc)) from exc
    print(name)
    return 0


def _api_message(exc: Any) -> str:
    try:
        return json.loads(exc.body).get("message") or str(exc)
    except (TypeError, ValueError):
        return f"{exc.status} {exc.reason}"
