"""The approvers of ``agent-tree run``: ask on the terminal, or decide every call by flag.

``--approve-all`` / ``--reject-all`` decide every call (for scripts). Without a flag the run asks on
the terminal (``approve? [y/N]`` and an optional reason, on stderr so ``--json`` output stays clean);
with no terminal (stdin is not a TTY) and no flag each such call is rejected, the reason naming the
flags, so a script never hangs waiting for an answer nobody can give.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
from typing import Any, TextIO

from agent_tree.contract.control import ApprovalRequest
from agent_tree.events import approval_request_text

NO_TERMINAL = "no terminal to ask on (stdin is not a TTY): run agent-tree run with --approve-all or --reject-all"


def user() -> str:
    """``decided_by.username`` of a decision taken at this terminal: the OS user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "terminal"


def fixed(decision: str, flag: str):
    """An approver that decides every call the same way (``--approve-all`` / ``--reject-all``)."""

    async def approve(request: ApprovalRequest) -> dict[str, Any]:
        return {"decision": decision, "reason": flag, "decided_by": user()}

    return approve


def no_terminal(request: ApprovalRequest) -> dict[str, Any]:
    return {"decision": "reject", "reason": NO_TERMINAL, "decided_by": user()}


def terminal(stdin: TextIO | None = None, err: TextIO | None = None):
    """An approver that asks on the terminal: ``y``/``yes`` approves, anything else (or EOF) rejects."""

    def ask(request: ApprovalRequest) -> dict[str, Any]:
        inp, out = stdin or sys.stdin, err or sys.stderr
        print(
            f"approval {request.id}: {request.agent} asks to call {approval_request_text(request.model_dump())}",
            file=out,
        )
        out.write("approve? [y/N] ")
        out.flush()
        answer = inp.readline().strip().lower()
        out.write("reason (optional): ")
        out.flush()
        reason = inp.readline().strip()
        return {"decision": "approve" if answer in ("y", "yes") else "reject", "reason": reason, "decided_by": user()}

    async def approve(request: ApprovalRequest) -> dict[str, Any]:
        return await asyncio.to_thread(ask, request)

    return approve


def for_cli(approve_all: bool, reject_all: bool, stdin: TextIO | None = None):
    """The approver ``agent-tree run`` uses for its flags and terminal."""
    if approve_all:
        return fixed("approve", "--approve-all")
    if reject_all:
        return fixed("reject", "--reject-all")
    if (stdin or sys.stdin).isatty():
        return terminal(stdin)
    return no_terminal
