"""``agent-tree api``: build the services from the configuration and serve the application with uvicorn."""

from __future__ import annotations

import logging

import uvicorn
from prometheus_client import start_http_server

from agent_tree_api.app import create_app, with_middleware
from agent_tree_api.auth import Auth
from agent_tree_api.config import ApiConfig
from agent_tree_api.deps import Services
from agent_tree_api.feeds import Feeds
from agent_tree_api.history import History
from agent_tree_api.kube import Kube, load_configuration
from agent_tree_api.metrics import ApiMetrics

log = logging.getLogger("agent_tree_api")


def build_services(config: ApiConfig, metrics: ApiMetrics) -> Services:
    kube = Kube(load_configuration())
    history = History(config.settings.database_url)
    return Services(
        config=config,
        kube=kube,
        auth=Auth(
            kube,
            token_ttl=config.auth_cache_seconds,
            access_ttl=config.access_cache_seconds,
            allow_anonymous=config.allow_anonymous,
        ),
        history=history,
        feeds=Feeds(history, config.settings.redis_url),
        metrics=metrics,
    )


def application(config: ApiConfig, metrics: ApiMetrics | None = None):
    """The ASGI application for ``config`` (what uvicorn serves)."""
    metrics = metrics or ApiMetrics()

    async def make() -> Services:
        return build_services(config, metrics)

    return with_middleware(create_app(make), config.max_body_bytes)


def serve(config: ApiConfig, *, log_level: str = "info") -> int:
    metrics = ApiMetrics()
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.host, registry=metrics.registry)
        log.info("metrics on :%d/metrics", config.metrics_port)
    uvicorn.run(
        application(config, metrics),
        host=config.host,
        port=config.port,
        log_level=log_level,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    return 0
