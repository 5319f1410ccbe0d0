"""Starting durable runs (used by the operator, ``agent-tree submit``, tests and benchmarks)."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy

from agent_tree import naming
from agent_tree.spec import MAX_INPUT_CHARS, AgentTreeSpec
from agent_tree_worker.inputs import RunInput

RUN_WORKFLOW = "AgentRunWorkflow"
TIMEOUT_GRACE_SECONDS = 300  # the workflow ends itself at its deadline; Temporal's timeout is a backstop


class RunInputError(ValueError):
    """A run that cannot be started as given; the message names the field."""


def spec_revision(spec: AgentTreeSpec | dict[str, Any]) -> str:
    """Content hash of a tree spec (what a run is pinned to)."""
    data = spec.model_dump(mode="json") if isinstance(spec, AgentTreeSpec) else spec
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def run_input(
    namespace: str,
    tree: str,
    spec: AgentTreeSpec | dict[str, Any],
    *,
    name: str,
    uid: str,
    input: str,
    context: dict[str, Any] | None = None,
    max_steps: int | None = None,
    timeout_seconds: int = 3600,
    budgets: dict[str, Any] | None = None,
    revision: str | None = None,
) -> RunInput:
    """The workflow input of a run, with the tree spec snapshotted.

    Raises:
        RunInputError: the input is over the AgentRun limit (it would not fit in Temporal history).
    """
    if len(input) > MAX_INPUT_CHARS:
        raise RunInputError(
            f"spec.input: the input is {len(input)} characters; the limit is {MAX_INPUT_CHARS}. "
            "Put large documents somewhere the agents can fetch them and pass a reference"
        )
    data = (
        spec.model_dump(mode="json")
        if isinstance(spec, AgentTreeSpec)
        else AgentTreeSpec.model_validate(spec).model_dump(mode="json")
    )
    return RunInput(
        namespace=namespace,
        tree=tree,
        name=name,
        uid=uid,
        spec=data,
        revision=revision or spec_revision(data),
        input=input,
        context=dict(context or {}),
        max_steps=max_steps,
        timeout_seconds=timeout_seconds,
        budgets=budgets,
    )


async def start_run(client: Client, inp: RunInput) -> WorkflowHandle:
    """Start (or attach to) the run's workflow on the root agent's task queue; idempotent per uid."""
    return await client.start_workflow(
        RUN_WORKFLOW,
        inp,
        id=naming.workflow_id(inp.namespace, inp.name, inp.uid),
        task_queue=naming.task_queue(inp.namespace, inp.tree, inp.spec["root"]),
        execution_timeout=timedelta(seconds=inp.timeout_seconds + TIMEOUT_GRACE_SECONDS),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        result_type=dict,
    )
