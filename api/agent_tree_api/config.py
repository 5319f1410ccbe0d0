"""The API's configuration: read once from ``AGENT_TREE_*`` variables into a frozen object.

Connection settings (PostgreSQL, Redis) come from :class:`agent_tree.settings.Settings`, like the
operator's and the workers'; this module adds the API's own knobs. Errors name the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent_tree.settings import Settings, SettingsError

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class ApiConfig:
    """Everything ``agent-tree api`` reads from its environment, once, at start.

    Attributes:
        settings: PostgreSQL / Redis connection settings (shared variables).
        host: address to listen on.
        port: HTTP port of the API (and the web view).
        metrics_port: Prometheus port (``/metrics``); 0 = none. Separate from ``port`` so metrics are
            never exposed where callers reach the API.
        allow_anonymous: serve requests without a bearer token as ``system:anonymous`` (RBAC still applies).
        auth_cache_seconds: how long a TokenReview answer is reused for the same token.
        access_cache_seconds: how long a SubjectAccessReview answer is reused.
        max_body_bytes: larger request bodies are refused with 413.
        heartbeat_seconds: an SSE comment is sent after this much silence, so proxies keep the stream.
        retry_ms: the ``retry:`` an SSE stream gives browsers for reconnecting.
    """

    settings: Settings = field(default_factory=Settings)
    host: str = "0.0.0.0"
    port: int = 8080
    metrics_port: int = 9090
    allow_anonymous: bool = False
    auth_cache_seconds: float = 60.0
    access_cache_seconds: float = 10.0
    max_body_bytes: int = 1 << 20
    heartbeat_seconds: float = 15.0
    retry_ms: int = 2000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiConfig:
        """Load from ``env`` (default: the process environment).

        Raises:
            SettingsError: a variable with a value that cannot be used, named in the message.
        """
        env = os.environ if env is None else env
        values: dict[str, object] = {"settings": Settings.from_env(env)}
        for name, parse in (
            ("host", str),
            ("port", _port),
            ("metrics_port", _port),
            ("allow_anonymous", _bool),
            ("auth_cache_seconds", _seconds),
            ("access_cache_seconds", _seconds),
            ("max_body_bytes", _positive),
            ("heartbeat_seconds", _seconds),
            ("retry_ms", _positive),
        ):
            key = f"AGENT_TREE_API_{name.upper()}"
            raw = env.get(key)
            if raw is None or (raw == "" and parse is not _bool):
                continue
            try:
                values[name] = parse(raw)
            except ValueError as exc:
                raise SettingsError(f"{key}={raw!r}: {exc}") from None
        return cls(**values)  # type: ignore[arg-type]


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in TRUE:
        return True
    if low in FALSE:
        return False
    raise ValueError("expected true or false")


def _port(raw: str) -> int:
    value = int(raw) if raw.strip().isdigit() else -1
    if not 0 <= value <= 65535:
        raise ValueError("expected a port number from 0 to 65535")
    return value


def _positive(raw: str) -> int:
    value = int(raw) if raw.strip().isdigit() else 0
    if value < 1:
        raise ValueError("expected a whole number above 0")
    return value


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise ValueError("expected seconds from 0 to 86400")
    return value
