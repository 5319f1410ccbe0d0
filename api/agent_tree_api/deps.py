"""What every route shares: the process's services, and the caller of the request."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from agent_tree_api.auth import Auth, Caller
from agent_tree_api.config import ApiConfig
from agent_tree_api.feeds import Feeds
from agent_tree_api.history import History
from agent_tree_api.kube import Kube
from agent_tree_api.metrics import ApiMetrics


@dataclass
class Services:
    config: ApiConfig
    kube: Kube
    auth: Auth
    history: History
    feeds: Feeds
    metrics: ApiMetrics

    async def close(self) -> None:
        await self.feeds.close()
        await self.history.close()
        await self.kube.close()


def services(request: Request) -> Services:
    return request.app.state.services


async def caller(request: Request) -> Caller:
    """The authenticated caller (FastAPI dependency); 400 / 401 / 503 as :meth:`Auth.authenticate` says."""
    return await services(request).auth.authenticate(request.headers)
