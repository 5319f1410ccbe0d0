"""Tool approvals in embedded runs: the callback API, ``agent-tree run --approve-all / --reject-all``,
the terminal, and a model agent reading a rejection (the local fake OpenAI endpoint)."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent_tree import AgentNode, AgentTree, SupervisorOrchestrator, Tool, run_turn, terminal_approver
from agent_tree.cli import main
from agent_tree.compiler import compile_tree
from agent_tree.contract.control import TIMEOUT_DECIDER, ApprovalDecision, ApprovalRequest, Decider
from agent_tree.events import event_hooks, format_event
from agent_tree.spec import AgentTreeSpec

INTEGRATION = Path(__file__).resolve().parent.parent / "integration"
sys.path.insert(0, str(INTEGRATION))
import durable_agents  # noqa: E402
from fake_openai import FakeOpenAI  # noqa: E402


@pytest.fixture(autouse=True)
def evidence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DURABLE_TEST_DIR", str(tmp_path))
    return tmp_path


def tree(approval: dict[str, Any] | None = None) -> dict[str, Any]:
    return durable_agents.refund_tree(approval or {"required": True, "approvers": {"users": ["alice"]}})


async def run(spec: dict[str, Any], **kwargs: Any) -> tuple[Any, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []

    async def sink(event: dict[str, Any]) -> None:
        events.append(event)

    compiled = compile_tree(AgentTreeSpec.model_validate(spec))
    result = await compiled.orchestrator(hooks=event_hooks(sink), **kwargs).run("refund 4821", {"invoice": "4821"})
    return result, events


async def test_the_callback_approves_and_the_tool_runs_once() -> None:
    asked: list[ApprovalRequest] = []

    async def approve(request: ApprovalRequest) -> ApprovalDecision:
        asked.append(request)
        return ApprovalDecision(id="ignored", decision="approve", decided_by=Decider(username="alice"), reason="fine")

    result, events = await run(tree(), approve=approve)
    assert result.status == "completed" and result.answer == "refunded 120"
    assert durable_agents.refunds_done() == ["4821 120"]
    [request] = asked
    assert (request.id, request.agent, request.tool) == ("a1", "refunder", "issue_refund")
    assert request.arguments == {"invoice": "4821", "amount": 120} and request.approvers.users == ["alice"]
    assert request.expires_at is None  # no timeoutSeconds, no deadline: it waits
    kinds = [(e["type"], e.get("id") or e.get("tool")) for e in events if e["type"] != "reasoning"]
    at = kinds.index(("approval_requested", "a1"))
    assert kinds[at : at + 4] == [
        ("approval_requested", "a1"),
        ("approval_decided", "a1"),
        ("tool_start", "issue_refund"),
        ("tool_end", "issue_refund"),
    ]
    decided = next(e for e in events if e["type"] == "approval_decided")
    assert decided["decided_by"]["username"] == "alice" and decided["reason"] == "fine"
    assert format_event(decided) == "  ! approval a1: approved by alice: fine"


@pytest.mark.parametrize(
    "answer", [False, "reject", {"decision": "reject", "reason": "too large", "decided_by": "bob"}]
)
async def test_a_rejected_call_never_runs_and_the_agent_gets_status_rejected(answer: Any) -> None:
    result, events = await run(tree(), approve=lambda request: answer, approver_name="carol")
    assert durable_agents.refunds_done() == []
    who = "bob" if isinstance(answer, dict) else "carol"
    why = ": too large" if isinstance(answer, dict) else " (no reason given)"
    assert result.status == "failed"
    assert result.answer.endswith(
        f"(refunder): refund not issued: the call of tool 'issue_refund' was rejected by {who}{why}"
    )
    end = next(e for e in events if e["type"] == "tool_end" and e["tool"] == "issue_refund")
    assert end["status"] == "rejected"
    # The calls around it ran: the agent went on after the rejection.
    assert len([e for e in events if e["type"] == "tool_end" and e["tool"] == "ledger_step"]) == 2


async def test_without_an_approver_the_call_is_rejected_saying_how_to_approve() -> None:
    result, _ = await run(tree())
    assert durable_agents.refunds_done() == []
    assert "this run has no approver: pass approve=callback to SupervisorOrchestrator" in result.answer
    assert "--approve-all" in result.answer


@pytest.mark.parametrize("on_timeout", ["approve", "reject"])
async def test_on_timeout_applies_when_the_callback_does_not_answer(on_timeout: str) -> None:
    async def never(request: ApprovalRequest) -> bool:
        await asyncio.Event().wait()
        return True

    _, events = await run(tree({"timeoutSeconds": 1, "onTimeout": on_timeout}), approve=never)
    decided = next(e for e in events if e["type"] == "approval_decided")
    assert decided["decided_by"]["username"] == TIMEOUT_DECIDER and decided["decision"] == on_timeout
    assert decided["reason"] == f"no decision within 1s (approval.onTimeout: {on_timeout})"
    assert durable_agents.refunds_done() == (["4821 120"] if on_timeout == "approve" else [])


async def test_a_callback_that_raises_or_answers_nonsense_rejects_with_the_reason() -> None:
    def broken(request: ApprovalRequest) -> Any:
        raise RuntimeError("approval service down")

    result, _ = await run(tree(), approve=broken)
    assert "rejected by embedded: the approval callback raised RuntimeError: approval service down" in result.answer
    result, _ = await run(tree(), approve=lambda request: 42)
    assert "the approval callback returned 42; return an ApprovalDecision" in result.answer
    assert durable_agents.refunds_done() == []


async def test_hand_built_nodes_use_tool_approval_and_run_turn_alone_rejects() -> None:
    """The Python API without a manifest: ``Tool(approval=...)``; a turn run without an orchestrator has
    no approver, so the call is rejected rather than run unasked."""
    ran: list[int] = []
    agent = AgentNode("payer")

    @agent.set_behaviour
    async def pay(ctx: Any) -> Any:
        out = await ctx.call_tool("pay", amount=5)
        return ctx.ok(f"{out.status}: {out.error}")

    agent.add_tool(Tool("pay", func=lambda amount: ran.append(amount), approval={"required": True}))
    root = AgentNode("root")
    root.add_child(agent)
    result = await SupervisorOrchestrator(AgentTree(root), approve=lambda r: True).run("pay")
    assert ran == [5] and result.answer == "ok: None"

    alone = await run_turn(agent, "pay")
    assert ran == [5] and alone.summary.startswith("rejected: tool 'pay' requires approval and nobody can decide")


def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "refunds.yaml"
    doc = {"apiVersion": "agenttree.io/v1alpha1", "kind": "AgentTree", "metadata": {"name": "refunds"}, "spec": tree()}
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("flag", ["--approve-all", "--reject-all", None])
def test_agent_tree_run_flags(flag: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", "-f", str(manifest(tmp_path)), "-i", "refund 4821", "-c", "invoice=4821", "--json"]
    code = main([*args, flag] if flag else args)
    out = json.loads(capsys.readouterr().out)
    decided = next(e for e in out["events"] if e["type"] == "approval_decided")
    if flag == "--approve-all":
        assert code == 0 and durable_agents.refunds_done() == ["4821 120"]
        assert (decided["decision"], decided["reason"]) == ("approve", "--approve-all")
    else:
        assert code == 1 and durable_agents.refunds_done() == []
        # pytest's stdin is no terminal: without a flag nobody can be asked, so the call is rejected.
        reason = "--reject-all" if flag else terminal_approver.NO_TERMINAL
        assert (decided["decision"], decided["reason"]) == ("reject", reason)
        assert reason in out["result"]["answer"]
    assert decided["decided_by"]["username"] == terminal_approver.user()


async def test_the_terminal_asks_and_reads_the_answer_and_reason() -> None:
    request = ApprovalRequest(
        id="a1", agent="refunder", tool="issue_refund", arguments={"amount": 120}, requested_at="2026-01-01T00:00:00"
    )
    err = io.StringIO()
    answer = await terminal_approver.terminal(io.StringIO("y\nlooks right\n"), err)(request)
    assert (answer["decision"], answer["reason"]) == ("approve", "looks right")
    assert 'approval a1: refunder asks to call issue_refund({"amount": 120})' in err.getvalue()
    assert "approve? [y/N]" in err.getvalue()
    for typed in ("n\n\n", "", "maybe\nno idea\n"):  # anything but y/yes (or EOF) rejects
        assert (await terminal_approver.terminal(io.StringIO(typed), io.StringIO())(request))["decision"] == "reject"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AGENT_TREE_MODEL_API_KEY", "sk-unit")
    with FakeOpenAI() as s:
        yield s


def echo_tool_result(request: dict[str, Any]) -> dict[str, Any]:
    """The model's final reply: what the last tool message said (so the answer shows the rejection)."""
    return {"content": f"Refund outcome: {request['messages'][-1]['content']}"}


def model_tree(base_url: str) -> dict[str, Any]:
    return {
        "root": "desk",
        "maxSteps": 2,
        "agents": [
            {"name": "desk", "children": ["refunds"]},
            {
                "name": "refunds",
                "model": {"name": "refunds", "baseUrl": base_url},
                "tools": [
                    {
                        "name": "issue_refund",
                        "entrypoint": "durable_agents:issue_refund",
                        "approval": {"required": True},
                    }
                ],
            },
        ],
    }


async def test_a_model_agent_reads_the_rejection_and_explains(server: FakeOpenAI) -> None:
    server.scripts["refunds"] = [
        {"tool_calls": [("issue_refund", {"invoice": "4821", "amount": 120})]},
        echo_tool_result,
    ]
    reject = {"decision": "reject", "reason": "over the limit", "decided_by": "bob"}
    result, _ = await run(model_tree(server.base_url), approve=lambda r: reject)
    assert durable_agents.refunds_done() == []
    assert result.answer == (
        'Refund outcome: {"status": "rejected", "error": "the call of tool \'issue_refund\' was rejected by bob: '
        'over the limit"}'
    )
