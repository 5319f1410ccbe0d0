"""Run the operator: build the shared context, register the handlers, hand over to kopf."""

from __future__ import annotations

import dataclasses
import logging

import kopf

from agent_tree_operator import metrics
from agent_tree_operator.adapters.history import History
from agent_tree_operator.adapters.kube import Kube, load_api_client
from agent_tree_operator.adapters.stream import StreamHub
from agent_tree_operator.adapters.temporal import Temporal
from agent_tree_operator.config import OperatorConfig
from agent_tree_operator.handlers import approvals, autoscale, runs, setup, trees  # noqa: F401  (importing registers the handlers)
from agent_tree_operator.handlers.context import OperatorContext

log = logging.getLogger(__name__)


def build_context(config: OperatorConfig) -> OperatorContext:
    """The clients every handler shares (the Kubernetes client reads KUBECONFIG or the pod's account)."""
    kube = Kube(load_api_client(config.api_threads), threads=config.api_threads)
    return OperatorContext(
        config=config,
        kube=kube,
        temporal=Temporal(config.settings),
        hub=StreamHub(config.settings.redis_url, block_ms=min(500, config.status_interval_ms)),
        history=History(config.settings.database_url) if config.settings.database_url else None,
    )


def run(
    config: OperatorConfig,
    *,
    liveness: str | None = None,
    namespaces: tuple[str, ...] | None = None,
    verbose: bool = False,
    debug: bool = False,
    quiet: bool = False,
) -> int:
    """Run the operator until SIGINT/SIGTERM.

    Args:
        config: the configuration (``OperatorConfig.from_env()``).
        liveness: kopf liveness endpoint URL (default: ``AGENT_TREE_HEALTH_PORT`` when set, else none).
        namespaces: namespaces to watch; None = ``config.watch_namespaces``; empty = all namespaces.
    """
    kopf.configure(verbose=verbose, debug=debug, quiet=quiet)
    watch = config.watch_namespaces if namespaces is None else namespaces
    # What the command line chose is the configuration from here on (the startup log, RBAC-aware
    # listing and everything else read config.watch_namespaces).
    config = dataclasses.replace(config, watch_namespaces=tuple(watch))
    if liveness is None and config.health_port:
        liveness = f"http://0.0.0.0:{config.health_port}/healthz"
    metrics.serve(config.settings.metrics_port)
    ctx = build_context(config)
    kopf.run(
        standalone=True,
        clusterwide=not watch,
        namespaces=list(watch),
        liveness_endpoint=liveness,
        memo=kopf.Memo(ctx=ctx),
    )
    return 0
