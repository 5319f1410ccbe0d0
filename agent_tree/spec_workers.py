"""How an agent's worker pool runs (``spec.worker`` of an AgentTree and of each agent), as models.

Part of the CRD schemas whose single source of truth is :mod:`agent_tree.spec` (which re-exports
:class:`WorkerSpec`): the image, fixed replicas or backlog-driven :class:`AutoscaleSpec`, resources,
environment, and the pod's and container's security contexts the operator lays over its own
(Pod Security ``restricted``) defaults when it builds the worker Deployment.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Model(BaseModel):
    # strict: a manifest with "replicas: '3'" is an error to fix, not something to guess about.
    model_config = ConfigDict(extra="forbid", strict=True)


class AutoscaleSpec(_Model):
    """Backlog-driven scaling of an agent's workers by the operator."""

    minReplicas: int = Field(default=0, ge=0, le=1000)
    maxReplicas: int = Field(default=5, ge=1, le=1000)
    targetBacklogPerReplica: int = Field(default=5, ge=1, le=100_000)
    scaleDownDelaySeconds: int = Field(default=60, ge=0, le=86400)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscaleSpec:
        if self.minReplicas > self.maxReplicas:
            raise ValueError(
                f"minReplicas ({self.minReplicas}) is above maxReplicas ({self.maxReplicas}); lower min or raise max"
            )
        return self


class EnvVar(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    value: str | None = None
    valueFrom: dict[str, Any] | None = None


QUANTITY_RE = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
"""A Kubernetes resource quantity (k8s.io/apimachinery resource.Quantity), e.g. 500m, 1, 2Gi (the CRD has it too)."""


class ResourceRequirements(_Model):
    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [f"{k}: {v[:40]!r} is not a Kubernetes quantity; use e.g. 500m, 1, 2Gi" for k, v in value.items()
               if not re.match(QUANTITY_RE, v)]  # fmt: skip
        if bad:
            raise ValueError("\n".join(bad))
        return value


_ProfileType = Literal["RuntimeDefault", "Localhost", "Unconfined"]


class SeccompProfile(_Model):
    type: _ProfileType
    localhostProfile: str | None = None


class AppArmorProfile(_Model):
    type: _ProfileType
    localhostProfile: str | None = None


class SELinuxOptions(_Model):
    user: str | None = None
    role: str | None = None
    type: str | None = None
    level: str | None = None


class Capabilities(_Model):
    add: list[str] | None = None
    drop: list[str] | None = None


class Sysctl(_Model):
    name: str = Field(min_length=1)
    value: str


class PodSecurityContext(_Model):
    """The worker pod's ``securityContext`` (Kubernetes PodSecurityContext; the fields workers use).

    Each field set here replaces the same field of the operator's default (which passes Pod Security
    ``restricted``); fields left out keep the default.
    """

    runAsNonRoot: bool | None = None
    runAsUser: int | None = Field(default=None, ge=0, le=2147483647)
    runAsGroup: int | None = Field(default=None, ge=0, le=2147483647)
    fsGroup: int | None = Field(default=None, ge=0, le=2147483647)
    fsGroupChangePolicy: Literal["Always", "OnRootMismatch"] | None = None
    supplementalGroups: list[int] | None = None
    seccompProfile: SeccompProfile | None = None
    appArmorProfile: AppArmorProfile | None = None
    seLinuxOptions: SELinuxOptions | None = None
    sysctls: list[Sysctl] | None = None


class SecurityContext(_Model):
    """The worker container's ``securityContext`` (Kubernetes SecurityContext).

    Each field set here replaces the same field of the operator's default; fields left out keep it.
    """

    allowPrivilegeEscalation: bool | None = None
    privileged: bool | None = None
    readOnlyRootFilesystem: bool | None = None
    runAsNonRoot: bool | None = None
    runAsUser: int | None = Field(default=None, ge=0, le=2147483647)
    runAsGroup: int | None = Field(default=None, ge=0, le=2147483647)
    capabilities: Capabilities | None = None
    seccompProfile: SeccompProfile | None = None
    appArmorProfile: AppArmorProfile | None = None
    seLinuxOptions: SELinuxOptions | None = None
    procMount: Literal["Default", "Unmasked"] | None = None


class WorkerSpec(_Model):
    """How an agent's worker pool runs. Fields left out fall back to the tree's ``spec.worker``."""

    image: str | None = None
    replicas: int | None = Field(default=None, ge=0, le=1000)
    autoscale: AutoscaleSpec | None = None
    externalScaling: bool = Field(
        default=False, description="True when HPA or KEDA owns replicas: the operator never writes them."
    )
    resources: ResourceRequirements | None = None
    env: list[EnvVar] = Field(default_factory=list)
    podSecurityContext: PodSecurityContext | None = Field(
        default=None, description="Fields of the worker pod's securityContext over the operator's default."
    )
    securityContext: SecurityContext | None = Field(
        default=None, description="Fields of the worker container's securityContext over the operator's default."
    )

    @model_validator(mode="after")
    def _one_scaler(self) -> WorkerSpec:
        if self.replicas is not None and self.autoscale is not None:
            raise ValueError("set either 'replicas' (fixed) or 'autoscale' (backlog-driven), not both")
        return self
