"""Record Temporal histories of real runs for the replay tests (tests/unit/test_replay.py).

    .venv/bin/python hack/record_histories.py OUT_DIR [SCENARIO ...]

Starts private Temporal, PostgreSQL and Redis instances (tests/integration/services.py), runs four
scenarios with one in-process worker per agent — the invoice example, an LLM tree with tool calls
against the local OpenAI-compatible test server, an LLM tree whose agents call agents as tools
(``nested-tools``), a run cancelled while a tool call is held, and the invoice run continuing as new
after every root turn (``continued``, every run of the chain), and tool approvals (``approval-llm``: a
model agent's call approved through the ``decide`` Update; ``approval-python``: a Python agent's call
rejected, its turn run again with the decision) — and
writes each workflow history of each run (the run's workflow and, on engines that have them, its
child workflows) as Temporal's JSON to ``OUT_DIR/<scenario>/<n>-<workflow type>.json``.

Histories are committed per engine generation (``tests/unit/histories/<engine>/``): a history made by
an older engine must keep replaying on the current workflow code (docs/durable-runs.md, "Changing
workflow code"). To record with an older engine, run this script from a checkout of that commit
(``git worktree add``) with the same venv, putting that checkout first on PYTHONPATH.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests" / "integration"), str(REPO / "examples" / "invoice")]

from agent_tree_worker.store import HistoryStore  # noqa: E402
from durable_support import API_KEY, in_process_workers, unique, wait_for  # noqa: E402
from fake_openai import FakeOpenAI  # noqa: E402
from services import Postgres, Redis, Temporal  # noqa: E402
from temporalio.api.enums.v1 import EventType  # noqa: E402
from temporalio.client import Client, WorkflowHandle  # noqa: E402

from agent_tree import naming  # noqa: E402
from agent_tree.cli import load_tree  # noqa: E402
from agent_tree.contract import run_input  # noqa: E402
from agent_tree.contract.temporal import connect, start_run  # noqa: E402
from agent_tree.spec import AgentTreeSpec  # noqa: E402


async def histories(client: Client, workflow_id: str) -> list[tuple[str, Any]]:
    """The history of ``workflow_id`` and, depth first, of every child workflow it started."""
    handle: WorkflowHandle = client.get_workflow_handle(workflow_id)
    history = await handle.fetch_history()
    out: list[tuple[str, Any]] = [
        (history.events[0].workflow_execution_started_event_attributes.workflow_type.name, history)
    ]
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            out += await histories(client, event.start_child_workflow_execution_initiated_event_attributes.workflow_id)
    return out


async def chain(client: Client, workflow_id: str, first_run_id: str) -> list[tuple[str, Any]]:
    """Every run of a workflow that continued as new, first to last."""
    out: list[tuple[str, Any]] = []
    run_id: str | None = first_run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        out.append((history.events[0].workflow_execution_started_event_attributes.workflow_type.name, history))
        last = history.events[-1]
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
            else None
        )
    return out


async def write(client: Client, out: Path, scenario: str, workflow_id: str, first_run_id: str | None = None) -> None:
    folder = out / scenario
    folder.mkdir(parents=True, exist_ok=True)
    ids = {}
    found = await (chain(client, workflow_id, first_run_id) if first_run_id else histories(client, workflow_id))
    for i, (kind, history) in enumerate(found):
        (folder / f"{i:02d}-{kind}.json").write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
        ids[f"{i:02d}-{kind}"] = history.workflow_id  # replay needs the id: child ids derive from it
    (folder / "workflow_ids.json").write_text(json.dumps(ids, indent=1) + "\n")
    print(f"{scenario}: {i + 1} histories", file=sys.stderr)


async def run_and_record(
    client: Client,
    out: Path,
    scenario: str,
    spec: Any,
    tree: str,
    question: str,
    urls: tuple[str, str],
    continue_after_events: int | None = None,
) -> None:
    namespace = unique(scenario)
    queues = [naming.task_queue(namespace, tree, a.name) for a in spec.agents]
    async with in_process_workers(client, queues, *urls):
        inp = run_input(namespace, tree, spec, name=unique("run"), uid=uuid.uuid4().hex[:8], input=question)
        if continue_after_events:
            inp = inp.model_copy(update={"continue_after_events": continue_after_events})
        handle = await start_run(client, inp)
        await asyncio.wait_for(handle.result(), 120)
    await write(client, out, scenario, handle.id, handle.first_execution_run_id if continue_after_events else None)


async def run_with_decision(
    client: Client, out: Path, scenario: str, spec: Any, question: str, urls: tuple[str, str], decision: str
) -> None:
    """A run of ``spec`` (tree ``refunds``) whose one approval is decided by ``alice`` once requested."""
    from agent_tree.contract.control import ApprovalDecision, Decider
    from agent_tree.contract.temporal import decide, run_progress

    namespace = unique(scenario)
    queues = [naming.task_queue(namespace, "refunds", a.name) for a in spec.agents]
    async with in_process_workers(client, queues, *urls):
        inp = run_input(
            namespace,
            "refunds",
            spec,
            name=unique("run"),
            uid=uuid.uuid4().hex[:8],
            input=question,
            context={"invoice": "4821"},
        )
        handle = await start_run(client, inp)

        async def requested() -> Any:
            return (await run_progress(handle)).approvals

        [request] = await wait_for(requested, "the approval request")
        alice = Decider(username="alice", groups=["finance"])
        await decide(
            client, handle.id, ApprovalDecision(id=request.id, decision=decision, decided_by=alice, reason="ok")
        )
        await asyncio.wait_for(handle.result(), 120)
    await write(client, out, scenario, handle.id)


def nested_tools_spec(server: FakeOpenAI) -> Any:
    """desk (model router) -> billing (model) asks expert (model) as a tool, which asks clerk (model) as
    a tool: an agent-as-tool turn that starts a child turn after a model call (ords matter there)."""
    server.scripts["h-desk"] = [{"tool_calls": [("transfer_to_billing", {})]}]
    server.scripts["h-billing"] = [{"tool_calls": [("ask_expert", {"input": "is 7 ok?"})]}, {"content": "7 is ok."}]
    server.scripts["h-expert"] = [{"tool_calls": [("ask_clerk", {"input": "check 7"})]}, {"content": "yes"}]
    server.scripts["h-clerk"] = [{"content": "checked"}]
    model = {"baseUrl": server.base_url}
    return AgentTreeSpec.model_validate(
        {
            "root": "desk",
            "agents": [
                {"name": "desk", "children": ["billing"], "model": {**model, "name": "h-desk"}},
                {
                    "name": "billing",
                    "model": {**model, "name": "h-billing"},
                    "tools": [{"name": "ask_expert", "agent": "expert"}],
                },
                {
                    "name": "expert",
                    "model": {**model, "name": "h-expert"},
                    "tools": [{"name": "ask_clerk", "agent": "clerk"}],
                },
                {"name": "clerk", "model": {**model, "name": "h-clerk"}},
            ],
        }
    )


async def main(out: Path, only: set[str]) -> None:
    import test_durable_approvals as approvals
    import test_durable_failures as failures
    import test_durable_llm as llm

    root = Path(tempfile.mkdtemp(prefix="record-histories-"))
    os.environ["DURABLE_TEST_DIR"] = str(root)
    os.environ["AGENT_TREE_MODEL_API_KEY"] = API_KEY
    temporal, pg = Temporal(root).start(), Postgres(root).start()
    (root / "redis").mkdir()
    redis = Redis(root / "redis").start()
    urls = (pg.url, redis.url)
    try:
        store = HistoryStore(pg.url)
        await store.migrate()
        await store.close()
        client = await connect(temporal.address)
        tree, _ = load_tree(str(REPO / "examples" / "invoice" / "agenttree.yaml"))
        question = "Why was invoice #4821 rejected?"
        if not only or "invoice" in only:
            await run_and_record(client, out, "invoice", tree.spec, "invoice", question, urls)
        if not only or "continued" in only:  # continues as new after each root turn (engine v2 and later)
            await run_and_record(client, out, "continued", tree.spec, "invoice", question, urls, 10)
        if only and not only & {"llm-tools", "nested-tools", "cancelled", "approval-llm", "approval-python"}:
            return

        with FakeOpenAI() as server:
            llm.script(server, "replay", [*llm.TOOL_TURNS, {"content": json.dumps(llm.GOOD)}], [])
            spec = llm.llm_tree(server.base_url, "replay")
            await run_and_record(client, out, "llm-tools", spec, "ap", "Why was invoice #4821 rejected?", urls)
            spec = nested_tools_spec(server)
            await run_and_record(client, out, "nested-tools", spec, "ap", "Is invoice 7 ok?", urls)
            if not only or "approval-llm" in only:
                spec = approvals.llm_tree(server, "replay")
                await run_with_decision(client, out, "approval-llm", spec, "Refund invoice 4821", urls, "approve")
        if not only or "approval-python" in only:
            spec = approvals.python_tree()
            await run_with_decision(client, out, "approval-python", spec, "refund", urls, "reject")

        namespace, key = unique("cancel"), unique("k")
        queues = failures.queues(namespace, "office", "intake", "bookkeeper")
        async with in_process_workers(client, queues, *urls):
            handle = await failures.start_books(client, namespace, key)
            await wait_for(lambda: (root / f"holding-{key}").exists(), "the gated tool call to start")
            await handle.cancel()
            try:
                await asyncio.wait_for(handle.result(), 60)
            except Exception as exc:  # the cancelled run's failure is the point
                print(f"cancelled: {type(exc).__name__}", file=sys.stderr)
        await write(client, out, "cancelled", handle.id)
    finally:
        redis.stop()
        pg.cleanup()
        temporal.stop()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    asyncio.run(main(Path(sys.argv[1]).resolve(), set(sys.argv[2:])))
