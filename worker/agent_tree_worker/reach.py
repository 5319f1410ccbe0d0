"""Turning "cannot reach PostgreSQL / Temporal / Redis" into one :class:`ServiceUnavailable`.

The CLI commands wrap the work that talks to services in :func:`services`; a failure to reach one
becomes a :class:`agent_tree.unavailable.ServiceUnavailable` naming the service, its address (no
password) and the variable that set it, which ``agent-tree`` prints as one line (exit 3).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
from redis import exceptions as redis_errors
from temporalio.service import RPCError, RPCStatusCode

from agent_tree.settings import Settings
from agent_tree.unavailable import POSTGRES, REDIS, TEMPORAL, ServiceUnavailable, reason, url_address
from agent_tree_worker.store import RETRYABLE

# Errors PostgreSQL answers at connect time that no retry fixes: the command cannot use the database.
_PG_REFUSALS: tuple[type[BaseException], ...] = (
    asyncpg.InvalidAuthorizationSpecificationError,  # unknown role, pg_hba rejects, bad password
    asyncpg.InvalidCatalogNameError,  # no such database
)
_REDIS_DOWN = (redis_errors.ConnectionError, redis_errors.TimeoutError)
_ANSWERED = re.compile(r'Status \{ code: (\w+), message: "([^"]{0,160})')
_TEMPORAL_DOWN = (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED)


def temporal_reason(exc: BaseException) -> str:
    """The cause in the Temporal bridge's long connect error (a Rust ``Debug`` dump), said briefly."""
    text = str(exc)
    answered = _ANSWERED.search(text)
    if "after connection" in text and answered:
        code, message = answered.groups()
        return f"something answered, but not Temporal's frontend ({code}: {message})"
    return reason(exc)


def translate(exc: BaseException, settings: Settings, used: tuple[str, ...]) -> ServiceUnavailable | None:
    """The :class:`ServiceUnavailable` that ``exc`` means, given the services in ``used``; None if none."""
    if REDIS in used and isinstance(exc, _REDIS_DOWN):
        return ServiceUnavailable(
            REDIS, url_address(settings.redis_url or ""), settings.variable("redis_url"), reason(exc)
        )
    if TEMPORAL in used and isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND:
        if "namespace" in exc.message.lower():  # the address answers, the namespace is not there
            return ServiceUnavailable(
                TEMPORAL,
                settings.temporal_address,
                settings.variable("temporal_namespace"),
                f"no namespace {settings.temporal_namespace!r} ({exc.message})",
                reached=True,
            )
    if TEMPORAL in used and (
        (isinstance(exc, RuntimeError) and str(exc).startswith("Failed client connect"))
        or (isinstance(exc, RPCError) and exc.status in _TEMPORAL_DOWN)
    ):
        return ServiceUnavailable(
            TEMPORAL, settings.temporal_address, settings.variable("temporal_address"), temporal_reason(exc)
        )
    if POSTGRES in used and isinstance(exc, RETRYABLE + _PG_REFUSALS + (asyncpg.UndefinedTableError,)):
        address, variable = url_address(settings.database_url or ""), settings.variable("database_url")
        if isinstance(exc, RETRYABLE):
            return ServiceUnavailable(POSTGRES, address, variable, reason(exc))
        why = str(exc)
        if isinstance(exc, asyncpg.UndefinedTableError):
            why = f"no agent-tree history schema ({exc}); run: agent-tree db migrate"
        return ServiceUnavailable(POSTGRES, address, variable, why, reached=True)
    return None


@contextmanager
def services(settings: Settings, *used: str) -> Iterator[None]:
    """Raise :class:`ServiceUnavailable` (from the original error) when one of ``used`` cannot be reached."""
    try:
        yield
    except ServiceUnavailable:
        raise
    except Exception as exc:
        mapped = translate(exc, settings, used)
        if mapped is None:
            raise
        raise mapped from exc
