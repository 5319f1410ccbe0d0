"""``agent-tree api``, registered into the core CLI (imports stay inside the command)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    api = subparsers.add_parser(
        "api",
        help="serve the REST API (and its live event streams) for applications and people",
        description="Serves /api/v1 until SIGTERM. Callers authenticate with a Kubernetes bearer token; RBAC "
        "decides. Configuration: AGENT_TREE_API_* and AGENT_TREE_DATABASE_URL / AGENT_TREE_REDIS_URL (docs/api.md).",
    )
    api.add_argument("--host", help="address to listen on (default 0.0.0.0, AGENT_TREE_API_HOST)")
    api.add_argument("--port", type=int, help="HTTP port (default 8080, AGENT_TREE_API_PORT)")
    api.add_argument("--metrics-port", type=int, help="Prometheus port, 0 for none (default 9090)")
    api.add_argument(
        "--openapi",
        nargs="?",
        const="-",
        metavar="FILE",
        help="print the OpenAPI document (or write it to FILE) and exit",
    )
    api.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    api.set_defaults(func=cmd_api)


def openapi_document() -> dict:
    from agent_tree_api.app import create_app

    async def nothing():  # the document needs no services
        raise RuntimeError("not serving")

    return create_app(nothing).openapi()


def render_openapi() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


def cmd_api(args: argparse.Namespace) -> int:
    from agent_tree.settings import SettingsError
    from agent_tree_api.config import ApiConfig

    if args.openapi is not None:
        text = render_openapi()
        if args.openapi == "-":
            sys.stdout.write(text)
        else:
            Path(args.openapi).write_text(text)
            print(f"wrote {args.openapi}")
        return 0
    try:
        config = ApiConfig.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    overrides = {
        k: v
        for k, v in (("host", args.host), ("port", args.port), ("metrics_port", args.metrics_port))
        if v is not None
    }
    config = replace(config, **overrides)
    from agent_tree_api.main import serve

    return serve(config, log_level=args.log_level)
