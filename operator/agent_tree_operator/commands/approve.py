"""``agent-tree approve`` and ``agent-tree reject``: the parser (light; the work is in ``deciding``).

Registered by :mod:`agent_tree_operator.cli`; the Kubernetes client is imported only when one of these
commands runs, so building the ``agent-tree`` parser stays cheap.
"""

from __future__ import annotations

import argparse

DESCRIPTION = (
    "Decides a tool call that waits for a person, through the Kubernetes API as YOU (your kubeconfig): "
    "writes spec.decision of the run's AgentApproval, with spec.decidedBy set to the identity the API "
    "server authenticates you as (a SelfSubjectReview). RBAC decides whether you may (the chart's "
    "ClusterRole agent-tree-approver, bound in the namespace) and the API server's admission policy "
    "checks the approvers list and the decider. ID may be left out when exactly one approval is pending. "
    "Exit codes: 0 decided (or already decided the same way), 1 refused or nothing to decide, "
    "3 the API server cannot be reached."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    for verb, decision in (("approve", "approve"), ("reject", "reject")):
        cmd = subparsers.add_parser(
            verb, help=f"{verb} a tool call an AgentRun waits on (as you, through the Kubernetes API)",
            description=DESCRIPTION,
        )  # fmt: skip
        cmd.add_argument("run", metavar="NS/RUN", help="the AgentRun, as NAMESPACE/NAME")
        cmd.add_argument("id", metavar="ID", nargs="?", help="the approval id (status.approvals[].id of the run)")
        cmd.add_argument("--reason", default="", help="why (recorded in the run's history with your name)")
        cmd.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
        cmd.add_argument("--context", help="kubeconfig context (default: the current one)")
        cmd.add_argument(
            "--wait", type=float, default=15.0, metavar="SECONDS",
            help="wait this long for the run to receive the decision (0: do not wait; default 15)",
        )  # fmt: skip
        cmd.set_defaults(func=cmd_decide, decision=decision)


def cmd_decide(args: argparse.Namespace) -> int:
    from agent_tree_operator.commands import deciding

    return deciding.main(args)
