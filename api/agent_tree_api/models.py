"""The REST API's request and response bodies: defined once in :mod:`agent_tree.api_models` (the
client, :mod:`agent_tree.client`, is typed with the same models) and re-exported here for the routes."""

from __future__ import annotations

from agent_tree.api_models import (
    ApprovalList,
    ApprovalView,
    Created,
    DecisionRequest,
    DecisionResult,
    ErrorItem,
    ForkRequest,
    Problem,
    RetryRequest,
    RunCreate,
    RunList,
    RunSummary,
    RunView,
    StepItem,
    StepPage,
    TreeList,
    TreeView,
    WhoAmI,
)

__all__ = [
    "ApprovalList",
    "ApprovalView",
    "Created",
    "DecisionRequest",
    "DecisionResult",
    "ErrorItem",
    "ForkRequest",
    "Problem",
    "RetryRequest",
    "RunCreate",
    "RunList",
    "RunSummary",
    "RunView",
    "StepItem",
    "StepPage",
    "TreeList",
    "TreeView",
    "WhoAmI",
]
