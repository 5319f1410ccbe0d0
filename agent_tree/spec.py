"""The AgentTree and AgentRun resources (``agenttree.io/v1alpha1``) as Pydantic models.

These models are the single source of truth: the CRDs in ``crds/`` are generated from them, the
operator parses custom resources with them, and ``agent-tree validate`` checks manifests with them.
Every error names the field path (``spec.agents[2].children[0]``) and says how to fix it. The
AgentRun's models live in :mod:`agent_tree.spec_runs` and the worker settings in
:mod:`agent_tree.spec_workers`; the names used widely (``AgentRunSpec``, ``AgentRunStatus``,
``Budgets``, ``Condition``, ``WorkerSpec``, ``RESOURCE_NAME_RE``) are importable from here too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from agent_tree import output_schema
from agent_tree.naming import API_VERSION
from agent_tree.registry import ENTRYPOINT_RE
from agent_tree.spec_runs import (
    RESOURCE_NAME_RE,
    AgentRunSpec,
    AgentRunStatus,
    Budgets,
    Condition,
)
from agent_tree.spec_workers import WorkerSpec

AGENT_NAME_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
TOOL_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
MAX_AGENTS = 50


class _Model(BaseModel):
    # strict: a manifest with "replicas: '3'" is an error to fix, not something to guess about.
    model_config = ConfigDict(extra="forbid", strict=True)


def _check_entrypoint(value: str | None) -> str | None:
    if value is not None and not ENTRYPOINT_RE.match(value):
        raise ValueError(
            f"malformed entrypoint {value!r}: expected 'package.module:function', e.g. 'my_agents.tools:erp_lookup'"
        )
    return value


class SecretKeyRef(_Model):
    """A key of a Secret in the tree's namespace."""

    name: str = Field(min_length=1, max_length=253)
    key: str = Field(min_length=1, max_length=253)


NEWER_FIELDS = ("approval", "pricing", "budgets", "stream")
"""Fields added after runs and revisions existed (issues 12 and 13): left out of a dump while unset, so a spec
that uses none of them dumps as before: its revision hash stays, and workers of the previous version
(whose models forbid unknown fields) still accept the spec snapshotted into a run's input."""


def _without_unset_newer_fields(data: dict[str, Any]) -> dict[str, Any]:
    for key in NEWER_FIELDS:
        if key in data and data[key] is None:
            del data[key]
    return data


class Pricing(_Model):
    """What a model costs, in USD per million tokens (``maxCostUSD`` budgets need it)."""

    inputPerMillionTokens: float = Field(ge=0, description="USD per million prompt tokens.")
    outputPerMillionTokens: float = Field(ge=0, description="USD per million completion tokens.")


class ModelSpec(_Model):
    """An LLM behind an OpenAI-compatible Chat Completions endpoint."""

    provider: Literal["openai"] = "openai"
    name: str = Field(min_length=1, description="Model name sent to the endpoint, e.g. gpt-4o-mini.")
    baseUrl: str | None = Field(default=None, description="Endpoint base URL; default: the provider's.")
    apiKeySecretRef: SecretKeyRef | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    maxTokens: int | None = Field(default=None, ge=1, le=1_000_000)
    maxRepairs: int = Field(default=1, ge=0, le=5, description="Retries when the output misses outputSchema.")
    maxTurns: int = Field(default=8, ge=1, le=50, description="Model calls per agent turn (tool loops).")
    pricing: Pricing | None = Field(
        default=None, description="USD prices of this model, for spec.budgets.maxCostUSD (AgentRun and AgentTree)."
    )
    stream: bool | None = Field(
        default=None,
        description=(
            "Stream replies so runs show the text live (default: true; the worker falls back by itself when "
            "the endpoint refuses). false: call the endpoint without streaming."
        ),
    )

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        return _without_unset_newer_fields(handler(self))


class ApproversSpec(_Model):
    """Who may decide a tool call (empty lists: anyone the cluster's RBAC lets decide)."""

    users: list[str] = Field(default_factory=list, max_length=100)
    groups: list[str] = Field(default_factory=list, max_length=100)


class ApprovalSpec(_Model):
    """A person decides each call of this tool before it runs (docs/run-control.md, "Approvals")."""

    required: bool = Field(default=True, description="False: the tool runs without asking (the block is kept).")
    timeoutSeconds: int | None = Field(
        default=None,
        ge=1,
        le=7 * 86400,
        description="Wait this long for a decision; default: until the run's deadline.",
    )
    onTimeout: Literal["reject", "approve"] = Field(
        default="reject", description="The decision taken when nobody decided within timeoutSeconds."
    )
    approvers: ApproversSpec = Field(default_factory=ApproversSpec)


class ToolSpec(_Model):
    """A tool of an agent: a Python callable (``entrypoint``) or another agent (``agent``)."""

    name: str = Field(pattern=TOOL_NAME_RE)
    description: str = Field(default="", max_length=2048)
    entrypoint: str | None = None
    agent: str | None = Field(default=None, description="Name of an agent of this tree called as a tool.")
    timeoutSeconds: int = Field(default=60, ge=1, le=3600)
    parameters: dict[str, Any] | None = Field(
        default=None, description="JSON Schema of the arguments (for model agents); default: from the signature."
    )
    approval: ApprovalSpec | None = Field(default=None, description="Ask a person before each call of this tool.")

    _entry = field_validator("entrypoint")(classmethod(lambda cls, v: _check_entrypoint(v)))

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        return _without_unset_newer_fields(handler(self))

    @model_validator(mode="after")
    def _one_target(self) -> ToolSpec:
        if (self.entrypoint is None) == (self.agent is None):
            raise ValueError(
                f"tool {self.name!r} needs exactly one of 'entrypoint' (a Python callable) or 'agent' (an agent as a tool)"
            )
        return self


class AgentSpec(_Model):
    """One agent of a tree."""

    name: str = Field(pattern=AGENT_NAME_RE, min_length=1, max_length=40)
    description: str = Field(default="", max_length=4096)
    instructions: str = Field(default="", max_length=65536)
    children: list[str] = Field(default_factory=list, max_length=MAX_AGENTS)
    tools: list[ToolSpec] = Field(default_factory=list, max_length=64)
    entrypoint: str | None = None
    model: ModelSpec | None = None
    outputSchema: dict[str, Any] | None = Field(
        default=None, description="JSON Schema the agent's HandoffResult payload must satisfy."
    )
    worker: WorkerSpec | None = None

    _entry = field_validator("entrypoint")(classmethod(lambda cls, v: _check_entrypoint(v)))

    @model_validator(mode="after")
    def _behaviour(self) -> AgentSpec:
        if self.entrypoint is not None and self.model is not None:
            raise ValueError(f"agent {self.name!r}: set either 'entrypoint' (Python agent) or 'model' (LLM), not both")
        return self


class AgentTreeSpec(_Model):
    """A supervised tree of agents."""

    root: str = Field(pattern=AGENT_NAME_RE, description="Name of the supervisor agent.")
    agents: list[AgentSpec] = Field(min_length=1, max_length=MAX_AGENTS)
    planner: str | None = Field(default=None, description="Entrypoint of an optional planner.")
    maxSteps: int = Field(default=10, ge=1, le=100)
    worker: WorkerSpec = Field(default_factory=WorkerSpec)
    budgets: Budgets | None = Field(default=None, description="Default budgets of the tree's runs (per field).")

    _entry = field_validator("planner")(classmethod(lambda cls, v: _check_entrypoint(v)))

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        return _without_unset_newer_fields(handler(self))

    @model_validator(mode="after")
    def _semantics(self) -> AgentTreeSpec:
        problems = tree_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def agent(self, name: str) -> AgentSpec:
        for a in self.agents:
            if a.name == name:
                return a
        raise KeyError(name)

    def worker_for(self, name: str) -> WorkerSpec:
        """The agent's effective worker settings: its own fields over the tree's defaults."""
        own = self.agent(name).worker
        merged = self.worker.model_dump(exclude_unset=True)
        if own is not None:
            mine = own.model_dump(exclude_unset=True)
            if "replicas" in mine or "autoscale" in mine:
                merged.pop("replicas", None)
                merged.pop("autoscale", None)
            merged["env"] = [*merged.get("env", []), *mine.pop("env", [])]
            for key in ("podSecurityContext", "securityContext"):
                # Field by field, like the operator's default under them: an agent that sets only
                # runAsUser keeps the tree's seccompProfile.
                if key in mine:
                    mine[key] = {**(merged.get(key) or {}), **(mine[key] or {})}
            merged.update(mine)
        return WorkerSpec.model_validate(merged, strict=False)


def tree_problems(spec: AgentTreeSpec) -> list[str]:
    """Semantic errors a schema cannot express, each as ``path: message``."""
    problems: list[str] = []
    index: dict[str, int] = {}
    for i, agent in enumerate(spec.agents):
        if agent.name in index:
            problems.append(
                f"agents[{i}].name: duplicate agent name {agent.name!r} (first at agents[{index[agent.name]}]); "
                "agent names must be unique"
            )
        else:
            index[agent.name] = i
    if spec.root not in index:
        problems.append(f"root: no agent named {spec.root!r} in agents; add it or set root to one of {sorted(index)}")
    parent: dict[str, str] = {}
    for i, agent in enumerate(spec.agents):
        seen: set[str] = set()
        for j, child in enumerate(agent.children):
            where = f"agents[{i}].children[{j}]"
            if child not in index:
                problems.append(f"{where}: unknown agent {child!r}; define it in agents or remove it from children")
            elif child == agent.name:
                problems.append(f"{where}: agent {agent.name!r} lists itself as a child")
            elif child in seen:
                problems.append(f"{where}: {child!r} is listed twice")
            elif child == spec.root:
                problems.append(f"{where}: the root {child!r} cannot be a child (that makes a cycle)")
            elif child in parent and parent[child] != agent.name:
                problems.append(
                    f"{where}: {child!r} is already a child of {parent[child]!r}; in a tree each agent has one parent"
                )
            else:
                parent[child] = agent.name
            seen.add(child)
        names = set()
        for t, tool in enumerate(agent.tools):
            if tool.name in names:
                problems.append(
                    f"agents[{i}].tools[{t}].name: duplicate tool name {tool.name!r} in agent {agent.name!r}"
                )
            names.add(tool.name)
            if tool.agent is not None and tool.agent not in index:
                problems.append(f"agents[{i}].tools[{t}].agent: unknown agent {tool.agent!r}")
            elif tool.agent == agent.name:
                problems.append(f"agents[{i}].tools[{t}].agent: agent {agent.name!r} cannot be its own tool")
        problem = output_schema.schema_problem(agent.outputSchema) if agent.outputSchema is not None else None
        if problem is not None:
            problems.append(f"agents[{i}].outputSchema: {problem}; fix the schema (https://json-schema.org)")
        if not agent.children and agent.entrypoint is None and agent.model is None:
            problems.append(
                f"agents[{i}]: agent {agent.name!r} has no entrypoint, no model and no children; "
                "set entrypoint: 'module:function' or model: {name: ...}"
            )
    if spec.budgets is not None:
        problems.extend(cost_problems(spec, spec.budgets.maxCostUSD, "budgets.maxCostUSD"))
    if problems:
        return problems
    cycle = _find_cycle(spec)
    if cycle:
        problems.append(f"agents: cycle {' -> '.join(cycle)}; a tree cannot loop back to an ancestor")
        return problems
    reachable = {spec.root}
    stack = [spec.root]
    while stack:
        for child in spec.agents[index[stack.pop()]].children:
            if child not in reachable:
                reachable.add(child)
                stack.append(child)
    as_tools = {t.agent for a in spec.agents for t in a.tools if t.agent}
    for i, agent in enumerate(spec.agents):
        if agent.name not in reachable and agent.name not in as_tools:
            problems.append(
                f"agents[{i}]: agent {agent.name!r} is not reachable from root {spec.root!r}; "
                "add it to an agent's children (or use it as a tool), or remove it"
            )
    return problems


def cost_problems(spec: AgentTreeSpec, max_cost: float | None, field: str) -> list[str]:
    """A cost budget (``field``) needs every model agent's price: one problem per agent without one."""
    if max_cost is None:
        return []
    return [
        f"{field}: agent {agent.name!r} has no model.pricing (agents[{i}].model.pricing); set "
        "pricing: {inputPerMillionTokens: ..., outputPerMillionTokens: ...} in USD, or remove maxCostUSD"
        for i, agent in enumerate(spec.agents)
        if agent.model is not None and agent.model.pricing is None
    ]


def _find_cycle(spec: AgentTreeSpec) -> list[str] | None:
    graph = {a.name: a.children for a in spec.agents}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for child in graph.get(node, []):
            if state.get(child) == 1:
                return [*path[path.index(child) :], child]
            if state.get(child) is None and (found := visit(child)):
                return found
        path.pop()
        state[node] = 2
        return None

    for name in graph:
        if state.get(name) is None and (found := visit(name)):
            return found
    return None


class AgentStatus(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    taskQueue: str
    deployment: str
    replicas: int = 0
    readyReplicas: int = 0


class AgentTreeStatus(BaseModel):
    model_config = ConfigDict(extra="ignore")
    observedGeneration: int | None = None
    revision: str | None = None
    ready: str | None = Field(default=None, description="Ready agents out of all, e.g. 3/4.")
    agents: list[AgentStatus] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)


class ObjectMeta(BaseModel):
    """Kubernetes ``metadata``: its fields only (``kubectl apply`` refuses any other, field validation Strict);
    those the API server sets (``uid``, ``managedFields``, ...) are accepted as they are."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=RESOURCE_NAME_RE, max_length=253)
    namespace: str | None = Field(default=None, pattern=AGENT_NAME_RE, max_length=63)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generateName: str | None = None
    uid: str | None = None
    resourceVersion: str | None = None
    generation: int | None = None
    creationTimestamp: Any = None
    deletionTimestamp: Any = None
    deletionGracePeriodSeconds: int | None = None
    ownerReferences: list[dict[str, Any]] | None = None
    finalizers: list[str] | None = None
    managedFields: list[dict[str, Any]] | None = None
    selfLink: str | None = None


class AgentTreeManifest(_Model):
    apiVersion: Literal["agenttree.io/v1alpha1"]
    kind: Literal["AgentTree"]
    metadata: ObjectMeta
    spec: AgentTreeSpec
    status: AgentTreeStatus | None = None


class AgentRunManifest(_Model):
    apiVersion: Literal["agenttree.io/v1alpha1"]
    kind: Literal["AgentRun"]
    metadata: ObjectMeta
    spec: AgentRunSpec
    status: AgentRunStatus | None = None


assert API_VERSION == "agenttree.io/v1alpha1"
KINDS: dict[str, type[BaseModel]] = {"AgentTree": AgentTreeManifest, "AgentRun": AgentRunManifest}

_PATH_PREFIX = re.compile(r"^([A-Za-z_]\w*(\[\d+\])*(\.[A-Za-z_]\w*(\[\d+\])*)*): ")


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "json-or-python", "lax-or-strict")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def format_errors(exc: ValidationError) -> list[str]:
    """Pydantic errors as ``field.path: message`` lines a user can act on."""
    return [f"{path}: {message}" if path else message for path, message in error_items(exc.errors(include_url=False))]


def error_items(errors: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Pydantic error dicts (``exc.errors()``) as ``(field.path, message)`` pairs a user can act on."""
    items: list[tuple[str, str]] = []
    for err in errors:
        base = _loc_to_path(tuple(err["loc"]))
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            message = "required field is missing"
        elif err["type"] == "extra_forbidden":
            message = "unknown field; remove it or check its spelling"
        elif str(err["type"]).endswith(("_type", "_parsing", "literal_error")) and not isinstance(
            err.get("input"), dict | list
        ):
            message = f"{message} (got {err.get('input')!r})"
        for line in message.split("\n"):
            match = _PATH_PREFIX.match(line)
            if match:
                items.append((f"{base}.{match.group(1)}" if base else match.group(1), line[match.end() :]))
            else:
                items.append((base, line))
    return items


class ManifestError(ValueError):
    """A manifest that does not validate; ``errors`` holds one ``path: message`` per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"{source}:\n" + "\n".join(f"  {e}" for e in errors))


def parse_manifest(doc: Any, source: str = "<manifest>") -> AgentTreeManifest | AgentRunManifest:
    """Validate one manifest dict (AgentTree or AgentRun).

    Raises:
        ManifestError: listing every problem with its field path.
    """
    if not isinstance(doc, dict):
        raise ManifestError(source, [f"expected a mapping (a Kubernetes object), got {type(doc).__name__}"])
    errors = []
    if doc.get("apiVersion") != API_VERSION:
        errors.append(f"apiVersion: expected {API_VERSION!r}, got {doc.get('apiVersion')!r}")
    kind = doc.get("kind")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        errors.append(f"kind: expected one of {sorted(KINDS)}, got {kind!r}")
    if errors:
        raise ManifestError(source, errors)
    try:
        return model.model_validate(doc)  # type: ignore[union-attr, return-value]
    except ValidationError as exc:
        raise ManifestError(source, format_errors(exc)) from None
