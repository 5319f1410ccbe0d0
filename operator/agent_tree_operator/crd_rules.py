"""What the AgentTree and AgentRun CRDs add to the models' JSON Schema: CEL rules and schema extras.

:mod:`agent_tree_operator.crdgen` turns the Pydantic models of ``agent_tree.spec`` into structural
schemas; the API server then enforces, per model (by class name), the CEL rules of :data:`RULES`
(unique names, references that must exist, an immutable AgentRun spec but for
:data:`MUTABLE_RUN_FIELDS`), the bounds and patterns of :data:`EXTRAS` (which keep CEL cost estimable
and carry what the models check in validators), and leaves the models of :data:`NO_DEFAULTS` without
materialised defaults.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from agent_tree.registry import ENTRYPOINT_RE
from agent_tree.spec import AGENT_NAME_RE, RESOURCE_NAME_RE, AgentRunSpec
from agent_tree.spec_runs import FORK_RUN_MESSAGE
from agent_tree.spec_workers import QUANTITY_RE, AutoscaleSpec

AGENT_NAME_MAX = 40
TREE_NAME_MAX = 63  # the tree name is a label value (agenttree.io/tree) on every worker

# Models whose defaults must NOT be materialised by the API server: an agent's `worker` overrides
# the tree's `worker` field by field, and "unset" (inherit) must stay distinguishable from a default.
NO_DEFAULTS = {"WorkerSpec"}

# Per-model schema extras, merged into the property schemas: bounds that make CEL cost estimable
# and patterns the Pydantic models check in validators rather than in the schema.
EXTRAS: dict[str, dict[str, dict[str, Any]]] = {
    "AgentTreeSpec": {
        "root": {"maxLength": AGENT_NAME_MAX},
        "planner": {"pattern": ENTRYPOINT_RE.pattern, "maxLength": 512},
    },
    "AgentSpec": {
        "children": {"items": {"pattern": AGENT_NAME_RE, "maxLength": AGENT_NAME_MAX}, "x-kubernetes-list-type": "set"},
        "entrypoint": {"pattern": ENTRYPOINT_RE.pattern, "maxLength": 512},
    },
    "ResourceRequirements": {
        "requests": {"additionalProperties": {"pattern": QUANTITY_RE}},
        "limits": {"additionalProperties": {"pattern": QUANTITY_RE}},
    },
    "ToolSpec": {
        "name": {"maxLength": 64},
        "entrypoint": {"pattern": ENTRYPOINT_RE.pattern, "maxLength": 512},
        "agent": {"pattern": AGENT_NAME_RE, "maxLength": AGENT_NAME_MAX},
    },
}


def rule(
    rule: str,
    message: str | None = None,
    *,
    expr: str | None = None,
    field: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"rule": rule}
    if message:
        out["message"] = message
    if expr:
        out["messageExpression"] = expr
    if field:
        out["fieldPath"] = field
    if reason:
        out["reason"] = reason
    return out


MUTABLE_RUN_FIELDS = ("budgets",)
"""AgentRun spec fields that may change after creation (``agent-tree budget`` raises a running run's budgets)."""


def unchanged_except(model: type[BaseModel], mutable: tuple[str, ...]) -> str:
    """CEL (a transition rule): every field of ``model`` but ``mutable`` keeps its value, set or unset."""
    return " && ".join(
        f"has(self.{name}) == has(oldSelf.{name}) && (!has(self.{name}) || self.{name} == oldSelf.{name})"
        for name in model.model_fields
        if name not in mutable
    )


_AUTOSCALE = AutoscaleSpec.model_fields
_HAS_CHILDREN = "has(a.children)"

# CEL rules per model (x-kubernetes-validations). Lists without a default (children, tools) may be
# absent, hence the has() guards. The operator re-checks everything with the Pydantic models and
# reports what CEL cannot express (cycles, reachability, imports) as a Degraded condition.
RULES: dict[str, list[dict[str, Any]]] = {
    "AgentTreeSpec": [
        rule(
            "self.agents.all(a, self.agents.exists_one(b, b.name == a.name))",
            "spec.agents: agent names must be unique",
            field=".agents",
            reason="FieldValueInvalid",
        ),
        rule(
            "self.agents.exists(a, a.name == self.root)",
            "spec.root must name an agent of spec.agents",
            expr="'spec.root: no agent named ' + self.root + ' in spec.agents; add it or set root to one of them'",
            field=".root",
            reason="FieldValueInvalid",
        ),
        rule(
            f"self.agents.all(a, !{_HAS_CHILDREN} || a.children.all(c, self.agents.exists(b, b.name == c)))",
            "spec.agents[*].children: every child must be an agent defined in spec.agents; "
            "define it or remove it from children",
            field=".agents",
            reason="FieldValueInvalid",
        ),
        rule(
            "!self.agents.exists(a, has(a.children) && self.root in a.children)",
            "spec.agents[*].children: the root cannot be a child of another agent (that makes a cycle)",
            expr="'spec.agents[*].children: the root ' + self.root + ' cannot be a child of another agent "
            "(that makes a cycle); remove it from children'",
            field=".agents",
            reason="FieldValueInvalid",
        ),
        rule(
            "self.agents.all(c, self.agents.filter(p, has(p.children) && c.name in p.children).size() <= 1)",
            "spec.agents[*].children: in a tree each agent has at most one parent; "
            "list it in the children of one agent only",
            field=".agents",
            reason="FieldValueInvalid",
        ),
        rule(
            "self.agents.all(a, !has(a.tools) || a.tools.all(t, !has(t.agent) || "
            "self.agents.exists(b, b.name == t.agent)))",
            "spec.agents[*].tools[*].agent: must name an agent defined in spec.agents",
            field=".agents",
            reason="FieldValueInvalid",
        ),
    ],
    "AgentSpec": [
        rule(
            "!(has(self.entrypoint) && has(self.model))",
            "set either entrypoint (a Python agent) or model (an LLM), not both",
            reason="FieldValueForbidden",
        ),
        rule(
            "has(self.entrypoint) || has(self.model) || (has(self.children) && size(self.children) > 0)",
            "an agent needs an entrypoint ('module:function'), a model ({name: ...}) or children",
            reason="FieldValueRequired",
        ),
        rule(
            "!has(self.children) || !(self.name in self.children)",
            "an agent cannot list itself in its children",
            field=".children",
            reason="FieldValueInvalid",
        ),
        rule(
            "!has(self.tools) || self.tools.all(t, self.tools.exists_one(u, u.name == t.name))",
            "tool names of an agent must be unique",
            field=".tools",
            reason="FieldValueInvalid",
        ),
    ],
    "ToolSpec": [
        rule(
            "has(self.entrypoint) != has(self.agent)",
            "a tool needs exactly one of entrypoint (a Python callable) or agent (an agent as a tool)",
            reason="FieldValueInvalid",
        ),
    ],
    "WorkerSpec": [
        rule(
            "!(has(self.replicas) && has(self.autoscale))",
            "set either replicas (fixed) or autoscale (backlog-driven), not both",
            reason="FieldValueForbidden",
        ),
    ],
    "AutoscaleSpec": [
        rule(
            f"(has(self.minReplicas) ? self.minReplicas : {_AUTOSCALE['minReplicas'].default}) <= "
            f"(has(self.maxReplicas) ? self.maxReplicas : {_AUTOSCALE['maxReplicas'].default})",
            "minReplicas must not be above maxReplicas",
            field=".minReplicas",
            reason="FieldValueInvalid",
        ),
    ],
    "ForkFrom": [
        rule(
            # A raw CEL string: in a plain one, the pattern's backslash is an invalid escape and the API
            # server refuses the whole CRD.
            f"self.run.matches(r'{RESOURCE_NAME_RE}')",
            FORK_RUN_MESSAGE,
            field=".run",
            reason="FieldValueInvalid",
        ),
    ],
    "AgentRunSpec": [
        rule(
            unchanged_except(AgentRunSpec, MUTABLE_RUN_FIELDS),
            "spec is immutable after creation, except spec.budgets; create a new AgentRun to run again",
            reason="FieldValueForbidden",
        ),
        rule(
            "has(self.treeRef) || has(self.forkFrom)",
            "spec.treeRef is required (unless spec.forkFrom names a run to retry or fork)",
            reason="FieldValueRequired",
        ),
        rule(
            "has(self.input) || has(self.forkFrom)",
            "spec.input is required (unless spec.forkFrom names a run to retry or fork)",
            reason="FieldValueRequired",
        ),
    ],
    # Who may decide, and that spec.decidedBy is the caller, is the admission policy's part (it sees
    # request.userInfo; charts/agent-tree/templates/approvals.yaml). These hold for every writer.
    "AgentApprovalSpec": [
        rule(
            "self.request == oldSelf.request",
            "spec.request is written by the operator and never changes; decide with spec.decision "
            "(agent-tree approve NS/RUN ID)",
            field=".request",
            reason="FieldValueForbidden",
        ),
        rule(
            "!has(oldSelf.decision) || (has(self.decision) && self.decision == oldSelf.decision && "
            "has(self.decidedBy) && self.decidedBy == oldSelf.decidedBy && "
            "(has(self.reason) ? self.reason : '') == (has(oldSelf.reason) ? oldSelf.reason : ''))",
            "spec.decision: this approval is decided already; a decision, its reason and spec.decidedBy never "
            "change (see status for what the run holds)",
            expr="'spec.decision: this approval was decided already (' + oldSelf.decision + ' by ' + "
            "(has(oldSelf.decidedBy) ? oldSelf.decidedBy.username : 'unknown') + '); a decision, its reason and "
            "spec.decidedBy never change'",
            field=".decision",
            reason="FieldValueForbidden",
        ),
        rule(
            "!has(self.decision) || has(self.decidedBy)",
            "spec.decidedBy is required with spec.decision: {username: <your user>, groups: [...]} "
            "(agent-tree approve / reject fill it from your credentials)",
            field=".decidedBy",
            reason="FieldValueRequired",
        ),
    ],
}
