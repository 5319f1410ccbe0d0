"""The API's errors: one JSON shape, ``{"status", "reason", "message", "errors": [{"field", "message"}]}``.

``reason`` uses the Kubernetes vocabulary (``Invalid``, ``NotFound``, ``Forbidden``, ...) so a client
that speaks to both sees the same words; ``errors`` names each field that is wrong and how to fix it.
"""

from __future__ import annotations

from typing import Any

from agent_tree_api.kube import KubeError

REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "AlreadyExists"}


class ApiError(Exception):
    """An error response; ``errors`` lists ``(field, message)`` pairs."""

    def __init__(self, status: int, reason: str, message: str, errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.errors = errors or []

    @classmethod
    def invalid(cls, field: str, message: str, status: int = 422) -> ApiError:
        return cls(status, "Invalid", f"{field}: {message}", [(field, message)])

    @classmethod
    def from_kube(cls, exc: KubeError, what: str = "") -> ApiError:
        """The API server's refusal, passed on with its status (503 when it is not reachable)."""
        if exc.status == 0:
            return cls(503, "ServiceUnavailable", exc.message)
        if exc.status >= 500:
            return cls(502, "BadGateway", f"the Kubernetes API failed{f' ({what})' if what else ''}: {exc.message}")
        return cls(exc.status, exc.reason or REASONS.get(exc.status, "Error"), exc.message)

    def body(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "errors": [{"field": f, "message": m} for f, m in self.errors],
        }
