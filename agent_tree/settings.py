"""Connection settings shared by the worker, the operator and the CLI, loaded once from the environment.

Each setting reads ``AGENT_TREE_<NAME>`` first and falls back to the unprefixed variable the local
platform's env file exports (``TEMPORAL_ADDRESS``, ``DATABASE_URL``, ``REDIS_URL``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

AUTO_PORT = -1  # AGENT_TREE_METRICS_PORT=auto: bind any free port and log it (pods sharing one host network)


class SettingsError(ValueError):
    """An environment variable with a value that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    database_url: str | None = None
    redis_url: str | None = None
    metrics_port: int = 0
    # Which variable set each field (for messages such as "cannot reach PostgreSQL ... (DATABASE_URL)").
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def variable(self, name: str) -> str:
        """The environment variable that set field ``name`` (``AGENT_TREE_<NAME>`` when it was not set)."""
        return self.sources.get(name, f"AGENT_TREE_{name.upper()}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        sources: dict[str, str] = {}
        for f in fields(cls):
            if f.name == "sources":
                continue
            key = f"AGENT_TREE_{f.name.upper()}"
            raw = env.get(key)
            if raw is None and f.name in ("temporal_address", "database_url", "redis_url"):
                raw = env.get(f.name.upper())
                if raw:
                    key = f.name.upper()
            if raw is None or raw == "":
                continue
            sources[f.name] = key
            if f.name == "metrics_port" and raw.strip().lower() == "auto":
                values[f.name] = AUTO_PORT
            elif f.type in ("int", int):
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise SettingsError(f"{key}={raw!r} is not an integer") from None
            else:
                values[f.name] = raw
        settings = cls(**values, sources=sources)  # type: ignore[arg-type]
        raw_port = env.get("AGENT_TREE_METRICS_PORT")
        if settings.metrics_port != AUTO_PORT or (raw_port or "").strip().lower() != "auto":
            if not 0 <= settings.metrics_port <= 65535:
                raise SettingsError(
                    f"AGENT_TREE_METRICS_PORT={settings.metrics_port} is outside 0..65535 (or 'auto' for any free port)"
                )
        return settings
