"""The operator side of retry and fork: spec.forkFrom resolved from a (fake) history by the follower,
status.forkedFrom, and every problem failing the run with a message naming the field; the CLI's
manifest (docs/run-control.md, "Retry and fork")."""

from __future__ import annotations

import asyncio

import pytest
from agent_tree_operator.adapters.temporal import Outcome
from agent_tree_operator.commands.fork import UsageError, split_ref
from agent_tree_operator.reconcile.forks import ForkError, plan_fork
from test_operator_follow import NS, RESULT, TREE, make, until

from agent_tree.contract import spec_revision
from agent_tree.run_requests import fork_manifest, new_name
from agent_tree.spec import AgentTreeSpec

PINNED = AgentTreeSpec.model_validate(TREE).model_dump(mode="json")
REVISION = spec_revision(PINNED)
SOURCE = {
    "workflow_id": "agentrun.team.src.u0",
    "name": "src",
    "tree": "invoice",
    "tree_revision": REVISION,
    "input": "Why was invoice #4821 rejected?",
    "context": {"k": "v"},
    "status": "failed",
}
STEPS = [
    {"ord": [1], "type": "agent_start", "data": {"status": None}},
    {"ord": [2, 1], "type": "tool_start", "data": {"status": None}},
    {"ord": [2, 2], "type": "tool_end", "data": {"status": "error"}},
    {"ord": [3], "type": "agent_end", "data": {"status": "failed"}},
]


class FakeHistory:
    def __init__(self, source=SOURCE, steps=STEPS, spec=PINNED) -> None:
        self.source, self.rows, self.spec = source, steps, spec
        self.asked: list[tuple[str, str]] = []

    async def latest_run(self, namespace, name):
        self.asked.append((namespace, name))
        return dict(self.source) if self.source and name == self.source["name"] else None

    async def steps(self, workflow_id):
        return self.rows

    async def tree_spec(self, revision):
        return self.spec if revision == REVISION else None

    async def fork_source(self, namespace, name):  # as adapters.history.History.fork_source
        source = await self.latest_run(namespace, name)
        if source is None:
            return None, [], None
        return source, await self.steps(source["workflow_id"]), await self.tree_spec(source["tree_revision"])


def forked(history: FakeHistory | None, **fork_from):
    ctx, _body, _stopped, follower = make(spec={"forkFrom": {"run": "src", **fork_from}}, trees={})
    ctx.history = history
    return ctx, follower


async def test_a_retry_starts_on_the_source_history_and_writes_forked_from():
    ctx, follower = forked(FakeHistory())
    task = asyncio.create_task(follower.run())
    await until(lambda: ctx.temporal.started, "the fork's start")
    run = ctx.temporal.started[0][2]
    assert run.fork.workflow_id == SOURCE["workflow_id"] and run.fork.step == 2 and run.fork.until_ord == [2, 1]
    assert run.tree == "invoice" and run.spec == PINNED and run.revision == REVISION  # pinned, no AgentTree needed
    assert (run.input, run.context) == (SOURCE["input"], SOURCE["context"])
    assert ctx.history.asked == [(NS, "src")]
    await until(lambda: ctx.kube.status.get("phase") == "Running", "Running")
    assert ctx.kube.status["forkedFrom"] == {"run": "src", "step": 2, "workflowId": SOURCE["workflow_id"]}
    ctx.temporal.result.set_result(Outcome(result=RESULT))
    await asyncio.wait_for(task, 5)
    assert ctx.kube.status["phase"] == "Succeeded" and ctx.kube.status["forkedFrom"]["step"] == 2


async def test_fork_overrides_input_and_context():
    ctx, follower = forked(FakeHistory(), step=1, input="other question", context={"x": 1})
    task = asyncio.create_task(follower.run())
    await until(lambda: ctx.temporal.started, "the fork's start")
    run = ctx.temporal.started[0][2]
    assert (run.input, run.context, run.fork.step, run.fork.until_ord) == ("other question", {"x": 1}, 1, [1])
    ctx.temporal.result.set_result(Outcome(result=RESULT))
    await asyncio.wait_for(task, 5)


@pytest.mark.parametrize(
    ("history", "fork_from", "message"),
    [
        (
            FakeHistory(source=None),
            {},
            "spec.forkFrom.run: no run of AgentRun 'src' in namespace 'team' in the history",
        ),
        (FakeHistory(), {"step": 7}, "spec.forkFrom.step: run 'src' has 4 steps, there is no step 7; choose 1..4"),
        (FakeHistory(steps=STEPS[:2]), {}, "spec.forkFrom.step: run 'src' has no failed step"),
        (FakeHistory(spec=None), {}, "spec.forkFrom.treeRevision: the tree spec run 'src' was pinned to"),
        (None, {}, "spec.forkFrom: the operator has no history database (AGENT_TREE_DATABASE_URL is not set)"),
    ],
)
async def test_a_bad_fork_fails_naming_the_field_and_starts_nothing(history, fork_from, message):
    ctx, follower = forked(history, **fork_from)
    await asyncio.wait_for(follower.run(), 5)
    status = ctx.kube.status
    assert status["phase"] == "Failed" and ctx.temporal.started == []
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidForkFrom" and message in failed["message"], failed


def test_plan_fork_refuses_another_tree_and_takes_the_current_tree_when_asked():
    spec = {"treeRef": {"name": "other"}, "forkFrom": {"run": "src"}}
    with pytest.raises(ForkError, match=r"spec.treeRef.name: .other. is not the tree of run .src."):
        plan_fork(NS, spec, SOURCE, STEPS, PINNED)
    current = plan_fork(NS, {"forkFrom": {"run": "src", "treeRevision": "current"}}, SOURCE, STEPS, None)
    assert current.spec is None and current.revision is None and current.tree == "invoice"


def test_cli_manifest_copies_the_source_limits_and_names_the_fork():
    source = {"treeRef": {"name": "invoice"}, "input": "q", "maxSteps": 4, "budgets": {"maxTokens": 9}, "context": {}}
    doc = fork_manifest("src-fork-1", "src", step=3, user_input="new", current_tree=True, source_spec=source)
    assert doc["spec"] == {
        "treeRef": {"name": "invoice"},
        "maxSteps": 4,
        "budgets": {"maxTokens": 9},
        "forkFrom": {"run": "src", "step": 3, "input": "new", "treeRevision": "current"},
    }
    assert fork_manifest("r", "src")["spec"] == {"forkFrom": {"run": "src"}}  # source deleted: the history decides
    assert new_name("why-4821", "retry").startswith("why-4821-retry-") and len(new_name("x" * 80, "fork")) <= 63
    assert split_ref("team/src") == ("team", "src")
    with pytest.raises(UsageError, match="expected NAMESPACE/RUN"):
        split_ref("src")
