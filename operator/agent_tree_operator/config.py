"""The operator's configuration: read once from ``AGENT_TREE_*`` variables into a frozen object.

Connection settings (Temporal, PostgreSQL, Redis, metrics) come from :class:`agent_tree.settings.Settings`
so the operator, the workers and the CLI read the same variables the same way; this module adds the
operator-only knobs. Every error names the variable and the value it could not use.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from agent_tree import naming
from agent_tree.settings import AUTO_PORT, Settings, SettingsError
from agent_tree.spec import format_errors
from agent_tree.spec_workers import PodSecurityContext, ResourceRequirements, SecurityContext

FIELD_MANAGER = "agent-tree-operator"
AUTOSCALER_FIELD_MANAGER = "agent-tree-autoscaler"  # owns spec.replicas of autoscaled worker Deployments
FINALIZER = naming.FINALIZER
KOPF_PREFIX = "kopf.agenttree.io"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
# The image's user (Dockerfile: USER 10001:10001), numeric so runAsNonRoot is checkable without
# /etc/passwd. With the container defaults below, worker pods pass Pod Security ``restricted``.
WORKER_UID = 10001
DEFAULT_WORKER_POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": WORKER_UID,
    "runAsGroup": WORKER_UID,
    "fsGroup": WORKER_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
DEFAULT_WORKER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
}


class ConfigError(SettingsError):
    """An ``AGENT_TREE_*`` variable the operator cannot use; the message names it."""


@dataclass(frozen=True)
class OperatorConfig:
    """Everything the operator reads from its environment, once, at start.

    Attributes:
        settings: Temporal / PostgreSQL / Redis / metrics connection settings.
        watch_namespaces: namespaces to watch (comma-separated in the variable); empty = all.
        worker_image: default image of worker Deployments (a tree's ``spec.worker.image`` wins).
        worker_image_pull_policy: imagePullPolicy of worker containers.
        worker_service_account: serviceAccountName of worker pods (None: the namespace default).
        worker_env_secret: a Secret (in the tree's namespace) every worker gets as ``envFrom``; optional.
        worker_resources: default container resources of workers (a tree's ``worker.resources`` wins).
        worker_pod_security_context: the worker pod's default ``securityContext``; a tree's
            ``worker.podSecurityContext`` replaces it field by field.
        worker_security_context: the worker container's default ``securityContext``; a tree's
            ``worker.securityContext`` replaces it field by field.
        status_interval_ms: minimum time between two status patches of one AgentRun.
        health_port: port of the liveness endpoint ``/healthz`` (0 = off; ``--liveness`` also sets it).
        worker_limit: kopf's cap on concurrently processed objects.
        api_threads: threads for Kubernetes API calls (the client is synchronous).
        answer_max_chars: ``status.answer`` is cut to this many characters.
        status_max_bytes: ``status.result`` / ``status.plan`` larger than this (JSON) are replaced by a note.
        worker_metrics_port: the metrics port the operator gives workers (``AGENT_TREE_METRICS_PORT`` and a
            ``containerPort`` named ``metrics``); 0 = workers serve no metrics; ``AUTO_PORT`` (``auto``) =
            each worker binds a free port and logs it (for pods sharing one host network, as locally).
        autoscale_interval: seconds between two backlog polls of a tree with autoscaled agents.
    """

    settings: Settings = field(default_factory=Settings)
    watch_namespaces: tuple[str, ...] = ()
    worker_image: str = "agent-tree:0.1.0"
    worker_image_pull_policy: str = "IfNotPresent"
    worker_service_account: str | None = None
    worker_env_secret: str | None = None
    worker_resources: dict[str, Any] | None = None
    worker_pod_security_context: dict[str, Any] = field(
        default_factory=lambda: dict(DEFAULT_WORKER_POD_SECURITY_CONTEXT)
    )
    worker_security_context: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_WORKER_SECURITY_CONTEXT))
    status_interval_ms: int = 1000
    health_port: int = 0
    worker_limit: int = 100
    api_threads: int = 16
    answer_max_chars: int = 1024
    status_max_bytes: int = 4096
    worker_metrics_port: int = 9090
    autoscale_interval: float = 5.0

    @property
    def status_interval(self) -> float:
        return self.status_interval_ms / 1000.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        """Read the configuration from ``env`` (default: ``os.environ``).

        Raises:
            ConfigError: naming the variable whose value cannot be used.
        """
        env = os.environ if env is None else env
        settings = Settings.from_env(env)

        def text(name: str, default: str | None) -> str | None:
            value = env.get(f"AGENT_TREE_{name}")
            return default if value is None or value.strip() == "" else value.strip()

        def number(name: str, default: int, low: int, high: int) -> int:
            raw = text(name, None)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"AGENT_TREE_{name}={raw!r} is not an integer") from None
            if not low <= value <= high:
                raise ConfigError(f"AGENT_TREE_{name}={value} is outside {low}..{high}")
            return value

        namespaces = tuple(n.strip() for n in (text("WATCH_NAMESPACE", "") or "").split(",") if n.strip())
        for namespace in namespaces:
            if not _DNS_LABEL.match(namespace):
                raise ConfigError(f"AGENT_TREE_WATCH_NAMESPACE: {namespace!r} is not a valid namespace name")
        resources = None
        raw_resources = text("WORKER_RESOURCES", None)
        if raw_resources is not None:
            try:
                parsed = ResourceRequirements.model_validate(json.loads(raw_resources))
            except ValueError as exc:
                detail = "; ".join(format_errors(exc)) if isinstance(exc, ValidationError) else str(exc)
                raise ConfigError(
                    f'AGENT_TREE_WORKER_RESOURCES: expected JSON {{"requests": {{...}}, "limits": {{...}}}}: {detail}'
                ) from None
            resources = {k: v for k, v in parsed.model_dump().items() if v} or None
        pod_security = _security_context(
            "WORKER_POD_SECURITY_CONTEXT", text("WORKER_POD_SECURITY_CONTEXT", None), PodSecurityContext
        )
        container_security = _security_context(
            "WORKER_SECURITY_CONTEXT", text("WORKER_SECURITY_CONTEXT", None), SecurityContext
        )
        raw_port = text("WORKER_METRICS_PORT", None)
        worker_metrics_port = (
            AUTO_PORT
            if raw_port is not None and raw_port.lower() == "auto"
            else number("WORKER_METRICS_PORT", cls.worker_metrics_port, 0, 65535)
        )
        policy = text("WORKER_IMAGE_PULL_POLICY", cls.worker_image_pull_policy)
        if policy not in _PULL_POLICIES:
            raise ConfigError(
                f"AGENT_TREE_WORKER_IMAGE_PULL_POLICY={policy!r}: expected one of {', '.join(_PULL_POLICIES)}"
            )
        return cls(
            settings=settings,
            watch_namespaces=namespaces,
            worker_image=text("WORKER_IMAGE", cls.worker_image) or cls.worker_image,
            worker_image_pull_policy=policy or cls.worker_image_pull_policy,
            worker_service_account=text("WORKER_SERVICE_ACCOUNT", None),
            worker_env_secret=text("WORKER_ENV_SECRET", None),
            worker_resources=resources,
            worker_pod_security_context=DEFAULT_WORKER_POD_SECURITY_CONTEXT if pod_security is None else pod_security,
            worker_security_context=DEFAULT_WORKER_SECURITY_CONTEXT
            if container_security is None
            else container_security,
            status_interval_ms=number("STATUS_INTERVAL_MS", cls.status_interval_ms, 50, 600_000),
            health_port=number("HEALTH_PORT", cls.health_port, 0, 65535),
            worker_limit=number("WORKER_LIMIT", cls.worker_limit, 1, 100_000),
            api_threads=number("API_THREADS", cls.api_threads, 1, 256),
            answer_max_chars=number("ANSWER_MAX_CHARS", cls.answer_max_chars, 16, 65536),
            status_max_bytes=number("STATUS_MAX_BYTES", cls.status_max_bytes, 256, 262144),
            worker_metrics_port=worker_metrics_port,
            autoscale_interval=float(number("AUTOSCALE_INTERVAL_SECONDS", int(cls.autoscale_interval), 1, 3600)),
        )

    def worker_env(self) -> list[dict[str, str]]:
        """The connection env every worker container gets (before the tree's own ``worker.env``)."""
        s = self.settings
        env = [
            {"name": "AGENT_TREE_TEMPORAL_ADDRESS", "value": s.temporal_address},
            {"name": "AGENT_TREE_TEMPORAL_NAMESPACE", "value": s.temporal_namespace},
        ]
        # DSNs carry credentials: with a worker env Secret they come from it (envFrom), never as plain
        # values copied into every team namespace's Deployments.
        if not self.worker_env_secret:
            if s.database_url:
                env.append({"name": "AGENT_TREE_DATABASE_URL", "value": s.database_url})
            if s.redis_url:
                env.append({"name": "AGENT_TREE_REDIS_URL", "value": s.redis_url})
        if self.worker_metrics_port:
            port = "auto" if self.worker_metrics_port == AUTO_PORT else str(self.worker_metrics_port)
            env.append({"name": "AGENT_TREE_METRICS_PORT", "value": port})
        return env


def _security_context(name: str, raw: str | None, model: type[PodSecurityContext | SecurityContext]) -> dict | None:
    """A JSON securityContext from ``AGENT_TREE_<name>``, checked like the CRD checks a tree's; None if unset.

    The value replaces the built-in default as a whole (``{}``: no securityContext at all).
    """
    if raw is None:
        return None
    example = (
        '{"runAsNonRoot": true, "runAsUser": 10001}'
        if model is PodSecurityContext
        else '{"readOnlyRootFilesystem": true}'
    )
    try:
        parsed = model.model_validate(json.loads(raw))
    except ValueError as exc:
        detail = "; ".join(format_errors(exc)) if isinstance(exc, ValidationError) else str(exc)
        raise ConfigError(f"AGENT_TREE_{name}: expected a JSON object like {example}: {detail}") from None
    return parsed.model_dump(exclude_none=True)
