"""``--server URL``: the run commands of ``agent-tree`` through the REST API instead of the services.

``runs``, ``history``, ``logs [-f]``, ``approve``, ``reject``, ``retry``, ``fork`` and ``submit`` get
``--server URL`` (default ``$AGENT_TREE_SERVER``) and a token (``--token``, ``--token-file``, else
``$AGENT_TREE_TOKEN``). With a server they call :mod:`agent_tree.remote_commands` through
:class:`agent_tree.client.Client` and print what the local command prints, as far as the API's data
allows; without one they run exactly as before. The commands' own modules are not touched: this
module wraps the ``func`` their parsers set.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_tree.unavailable import ServiceUnavailable

if TYPE_CHECKING:  # httpx loads only when a command is given a server
    from agent_tree.client import Client

SERVER_ENV, TOKEN_ENV = "AGENT_TREE_SERVER", "AGENT_TREE_TOKEN"
API = "the agent-tree API"
COMMANDS = ("runs", "history", "logs", "approve", "reject", "retry", "fork", "submit")
Remote = Callable[[argparse.Namespace, "Client"], Awaitable[int]]


def install(sub: argparse._SubParsersAction) -> None:
    """Add the server options to every command of :data:`COMMANDS` that is registered."""
    for name in COMMANDS:
        parser = sub.choices.get(name)
        if parser is None:
            continue
        group = parser.add_argument_group("through the REST API (agent-tree api)")
        group.add_argument(
            "--server",
            metavar="URL",
            help=f"call the agent-tree API at URL instead of the services (default ${SERVER_ENV})",
        )
        group.add_argument("--token", help=f"the Kubernetes bearer token to call it with (default ${TOKEN_ENV})")
        group.add_argument("--token-file", metavar="FILE", help="read the token from FILE")
        parser.set_defaults(func=_dispatch(name, parser.get_default("func")))


def _dispatch(name: str, local: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def func(args: argparse.Namespace) -> int:
        server = args.server or os.environ.get(SERVER_ENV) or None
        if server is None:
            if args.token or args.token_file:
                print(f"error: --token and --token-file go with --server URL (or ${SERVER_ENV})", file=sys.stderr)
                return 2
            return local(args)
        return call(name, args, server)

    return func


def token_of(args: argparse.Namespace) -> str | None:
    """``--token``, else the contents of ``--token-file``, else ``$AGENT_TREE_TOKEN`` (None: no token)."""
    if args.token:
        return args.token
    if args.token_file:
        try:
            return Path(args.token_file).read_text().strip() or None
        except OSError as exc:
            raise ValueError(f"--token-file {args.token_file}: {exc.strerror}") from None
    return os.environ.get(TOKEN_ENV) or None


def call(name: str, args: argparse.Namespace, server: str) -> int:
    """Run command ``name`` against ``server``; the API's refusals are printed as one ``error:`` line."""
    from agent_tree import remote_commands
    from agent_tree.client import ApiError, ApiUnreachable, Client

    remote: Remote = getattr(remote_commands, name.replace("-", "_"))

    async def go(token: str | None) -> int:
        async with Client(server, token) as api:
            return await remote(args, api)

    try:
        token = token_of(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(go(token))
    except remote_commands.Usage as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ApiUnreachable as exc:
        cause = exc.message.rpartition(": ")[2]
        raise ServiceUnavailable(API, server, f"--server / {SERVER_ENV}", cause) from exc
    except ApiError as exc:
        print(f"error: {describe(exc)}", file=sys.stderr)
        return 1


def describe(exc: Any) -> str:
    """An :class:`~agent_tree.client.ApiError` as a person reads it, with what to do for 401."""
    text = exc.message if exc.status else str(exc)
    fields = [f"{e.field}: {e.message}" for e in exc.errors if f"{e.field}: {e.message}" not in text]
    if fields:
        text += " (" + "; ".join(fields) + ")"
    if exc.status == 401:
        text += f" -- pass a Kubernetes token: --token, --token-file or ${TOKEN_ENV} (kubectl create token NAME)"
    return f"{exc.status} {exc.reason}: {text}" if exc.status else text
