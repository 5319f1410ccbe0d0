"""kopf settings, startup/cleanup of the shared clients, and the liveness probe.

Choices (see docs/operator.md):
- progress and diff-base in annotations under ``kopf.agenttree.io/``, the diff-base as a digest of
  the spec (not a copy of it), so kopf's bookkeeping never bloats the CR or its status;
- our own finalizer name ``agenttree.io/operator``;
- AgentRuns watched with the selector ``agenttree.io/finished!=true``: finished runs (labelled when
  they finish, ``handlers/runs.py``) are never listed, watched or remembered, so the operator's memory
  does not grow with them; no diff-base annotation on AgentRuns (no handler of theirs reads a diff),
  which saves a PATCH per run; initial listings in chunks of 500;
- watches re-established every 5 minutes from the server side (and a client timeout above it), so a
  silently dead connection is noticed; Deployments watched with a server-side label selector;
- Events: only the ones the operator posts explicitly (start, handoffs, completion, failure,
  deletions, invalid specs), never one per log line;
- a cap on concurrently processed objects (``AGENT_TREE_WORKER_LIMIT``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import kopf

from agent_tree import naming
from agent_tree_operator.adapters.kube import MANAGED_SELECTOR
from agent_tree_operator.config import FINALIZER, KOPF_PREFIX, OperatorConfig


class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff-base as a digest of the object's essence instead of a full copy of it.

    kopf only needs to know *whether* the spec changed since it was last handled (the reconcilers
    are level-based and read the whole spec), so a 16-character digest replaces a copy of the spec
    that would double the object's size (and hit the 256 KiB annotation limit on large trees).

    Kinds in ``stateless`` (AgentRuns: a daemon, a deletion handler and event handlers, none of which
    reads a diff; the spec is immutable) keep no diff-base at all: kopf would otherwise PATCH every
    new run once just to store one. For them the stored essence is always "the current one".
    """

    def __init__(self, *args: Any, stateless: frozenset[str] = frozenset(), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stateless = stateless

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        essence = super().build(body=body, extra_fields=extra_fields)
        text = json.dumps(essence, sort_keys=True, separators=(",", ":"), default=str)
        return {"digest": hashlib.sha256(text.encode()).hexdigest()[:16]}

    def fetch(self, *, body: Any) -> Any:
        if body.get("kind") in self.stateless:
            return self.build(body=body)
        return super().fetch(body=body)

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        if body.get("kind") not in self.stateless:
            super().store(body=body, patch=patch, essence=essence)


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """Tune kopf for this operator (called from the startup handler)."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = DigestDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration", stateless=frozenset({"AgentRun"})
    )
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.watching.label_selectors["apps", "v1", "deployments"] = MANAGED_SELECTOR
    settings.watching.label_selectors[naming.GROUP, "agentruns"] = naming.UNFINISHED_SELECTOR
    settings.watching.chunk_size = 500
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    settings.posting.enabled = True
    settings.posting.loggers = False
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = "agent-tree-operator"
    settings.queueing.worker_limit = config.worker_limit
    settings.background.cancellation_polling = 5
    settings.execution.max_workers = 4  # no sync handlers: kopf's own thread pool stays small
    settings.peering.standalone = True


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, logger: Any, **_: Any) -> None:
    ctx = memo.ctx
    configure(settings, ctx.config)
    ctx.hub.start()
    ctx.autoscaler.start()
    scope = ", ".join(ctx.config.watch_namespaces) or "all namespaces"
    logger.info(
        "agent-tree operator: watching %s; Temporal %s; Redis %s; status every >= %s ms",
        scope,
        ctx.config.settings.temporal_address,
        "on" if ctx.hub.url else "off",
        ctx.config.status_interval_ms,
    )


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    ctx = memo.ctx
    for task in list(ctx.deliveries.values()):  # undelivered decisions are picked up at the next start
        task.cancel()
    await ctx.autoscaler.close()
    await ctx.hub.close()
    if ctx.history is not None:
        await ctx.history.close()
    ctx.kube.close()


@kopf.on.probe(id="runs_followed")
def runs_followed(memo: Any, **_: Any) -> int:
    return memo.ctx.followed
