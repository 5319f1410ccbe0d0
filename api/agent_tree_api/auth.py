"""Who is calling, and may they: Kubernetes TokenReview and SubjectAccessReview, cached briefly.

Authentication: the caller's bearer token (a ServiceAccount token from ``kubectl create token``, an
OIDC token, anything the API server accepts) is checked with a TokenReview made by the API's own
ServiceAccount; the answer is cached per token (by its SHA-256) for ``auth_cache_seconds``.
Writes then go to the Kubernetes API WITH THE CALLER'S OWN TOKEN (pass-through, not impersonation:
the API's ServiceAccount holds no power to act as anyone). Reads the API serves itself (history from
PostgreSQL, live streams from Redis) are authorized with a SubjectAccessReview for the same verb on
``agentruns`` that kubectl would need, cached for ``access_cache_seconds``.

A request that carries its own ``Impersonate-*`` headers is refused: nothing here acts on them, and
silently ignoring them would let a caller believe they acted as someone else.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from agent_tree import naming
from agent_tree_api.errors import ApiError
from agent_tree_api.inflight import Inflight
from agent_tree_api.kube import Kube, KubeError

ANONYMOUS = "system:anonymous"
CACHE_MAX = 10_000


@dataclass(frozen=True)
class Caller:
    """An authenticated caller (``token`` None: anonymous)."""

    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, list[str]] = field(default_factory=dict, hash=False, compare=False)
    token: str | None = field(default=None, repr=False)


class _TtlCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any) -> Any:
        hit = self._items.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, key: Any, value: Any) -> None:
        if self.ttl <= 0:
            return
        self._items[key] = (time.monotonic() + self.ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > CACHE_MAX:
            self._items.popitem(last=False)


class Auth:
    """TokenReview and SubjectAccessReview through the API's own ServiceAccount."""

    def __init__(self, kube: Kube, *, token_ttl: float, access_ttl: float, allow_anonymous: bool) -> None:
        self.kube = kube
        self.allow_anonymous = allow_anonymous
        self._tokens = _TtlCache(token_ttl)
        self._access = _TtlCache(access_ttl)
        self._reviews = Inflight()  # the same review asked by many requests at once is sent once

    async def authenticate(self, headers: Any) -> Caller:
        """The caller of a request, from its headers.

        Raises:
            ApiError: 400 for Impersonate-* headers, 401 for a missing or rejected token, 503 when the
                Kubernetes API cannot be asked.
        """
        forged = sorted(h for h in headers if h.lower().startswith("impersonate-"))
        if forged:
            raise ApiError(
                400,
                "ImpersonationRefused",
                f"header {forged[0]}: this API does not impersonate; send your own bearer token "
                "(requests act as the token's identity only)",
            )
        value = headers.get("authorization")
        if not value:
            if self.allow_anonymous:
                return Caller(ANONYMOUS, ("system:unauthenticated",))
            raise ApiError(
                401, "Unauthorized", "Authorization: a bearer token is required (e.g. `kubectl create token NAME`)"
            )
        scheme, _, token = value.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "Unauthorized", "Authorization: expected 'Bearer <token>'")
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._tokens.get(key)
        if cached is not None:
            return cached
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        try:
            answer = await self._reviews.run(
                ("token", key),
                lambda: self.kube.as_service("POST", "/apis/authentication.k8s.io/v1/tokenreviews", review),
            )
        except KubeError as exc:
            raise ApiError.from_kube(exc, "TokenReview") from None
        status = answer.get("status") or {}
        if not status.get("authenticated"):
            raise ApiError(401, "Unauthorized", "Authorization: the Kubernetes API server did not accept this token")
        user = status.get("user") or {}
        caller = Caller(
            username=user.get("username", ""),
            groups=tuple(user.get("groups") or ()),
            uid=user.get("uid", ""),
            extra=dict(user.get("extra") or {}),
            token=token,
        )
        self._tokens.put(key, caller)
        return caller

    async def require(self, caller: Caller, verb: str, namespace: str, resource: str = "agentruns") -> None:
        """Raise 403 unless Kubernetes RBAC lets ``caller`` ``verb`` ``resource`` in ``namespace``."""
        key = (caller.username, caller.groups, caller.uid, verb, resource, namespace)
        allowed = self._access.get(key)
        if allowed is None:
            review = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": caller.username,
                    "groups": list(caller.groups),
                    "uid": caller.uid,
                    "extra": caller.extra,
                    "resourceAttributes": {
                        "namespace": namespace,
                        "verb": verb,
                        "group": naming.GROUP,
                        "resource": resource,
                    },
                },
            }
            try:
                answer = await self._reviews.run(
                    ("access", key),
                    lambda: self.kube.as_service("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review),
                )
            except KubeError as exc:
                raise ApiError.from_kube(exc, "SubjectAccessReview") from None
            allowed = bool((answer.get("status") or {}).get("allowed"))
            self._access.put(key, allowed)
        if not allowed:
            raise ApiError(
                403,
                "Forbidden",
                f'{resource}.{naming.GROUP} is forbidden: User "{caller.username}" cannot {verb} '
                f'resource "{resource}" in API group "{naming.GROUP}" in the namespace "{namespace}"',
            )
