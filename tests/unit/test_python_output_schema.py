"""``outputSchema`` on Python agents (embedded): a payload that violates it fails the turn, naming the
JSON path of each violation, and the supervisor goes on per policy; a schema that is not a JSON Schema
is refused by ``agent-tree validate``."""

from __future__ import annotations

from typing import Any

import pytest

from agent_tree import AgentNode, AgentTree, RunContext, SupervisorOrchestrator
from agent_tree.cli import main
from agent_tree.compiler import compile_tree
from agent_tree.events import event_hooks
from agent_tree.output_schema import validation_errors
from agent_tree.spec import AgentTreeSpec

SCHEMA = {
    "type": "object",
    "required": ["amount"],
    "properties": {
        "amount": {"type": "number"},
        "lines": {"type": "array", "items": {"type": "object", "properties": {"qty": {"type": "integer"}}}},
    },
}


def returns(payload: dict[str, Any], status: str = "ok"):
    def behaviour(ctx: RunContext):
        return ctx.handoff(status, f"{ctx.agent_name} answered", payload)  # type: ignore[arg-type]

    return behaviour


def tree(first_payload: dict[str, Any], *, second: bool = True, first_status: str = "ok") -> AgentTree:
    root = AgentNode("supervisor")
    root.add_child(AgentNode("pricer", returns(first_payload, first_status), output_schema=SCHEMA))
    if second:
        root.add_child(AgentNode("fallback", returns({"amount": 1})))
    return AgentTree(root)


async def run(t: AgentTree) -> tuple[Any, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []

    async def sink(event: dict[str, Any]) -> None:
        events.append(event)

    return await SupervisorOrchestrator(t, hooks=event_hooks(sink)).run("price it"), events


async def test_violating_payload_fails_the_turn_and_the_supervisor_tries_the_next_child() -> None:
    result, events = await run(tree({"amount": "x"}))
    pricer = result.handoffs[0]
    assert pricer.status == "failed"
    assert pricer.summary == (
        "agent 'pricer' handed back a payload that does not match its outputSchema: "
        "payload.amount: 'x' is not of type 'number'"
    )
    assert pricer.payload == {"validation_errors": ["payload.amount: 'x' is not of type 'number'"]}
    # recorded like any other failure: the handoff event carries status and errors
    handoff = next(e for e in events if e["type"] == "handoff" and e["agent"] == "pricer")
    assert handoff["status"] == "failed" and "payload.amount" in handoff["summary"]
    # policy: a failed child -> the next child
    assert result.status == "completed" and result.final_agent == "fallback"


async def test_violation_with_no_next_child_fails_the_run_and_lists_every_error() -> None:
    result, _ = await run(tree({"lines": [{"qty": 1.5}]}, second=False))
    assert result.status == "failed" and result.final_agent == "pricer"
    assert result.payload["validation_errors"] == [
        "payload: 'amount' is a required property",
        "payload.lines[0].qty: 1.5 is not of type 'integer'",
    ]
    assert "(and 1 more)" in result.handoffs[0].summary


async def test_valid_payload_and_failed_handoffs_are_left_alone() -> None:
    ok, _ = await run(tree({"amount": 12.5, "lines": [{"qty": 2}]}))
    assert ok.final_agent == "pricer" and ok.payload == {"amount": 12.5, "lines": [{"qty": 2}]}
    # a failed handoff keeps its own reason (its payload is not the agent's answer)
    failed, _ = await run(tree({"error": "ERP down"}, first_status="failed"))
    assert failed.handoffs[0].summary == "pricer answered" and failed.handoffs[0].payload == {"error": "ERP down"}


async def test_needs_more_info_payload_is_checked_too() -> None:
    result, _ = await run(tree({"amount": "soon"}, first_status="needs_more_info"))
    assert result.handoffs[0].status == "failed"
    assert "amount" not in result.context  # the invalid payload never reached the next child's context


async def test_manifest_outputschema_is_enforced_on_entrypoint_agents(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = AgentTreeSpec.model_validate(
        {
            "root": "s",
            "agents": [
                {"name": "s", "children": ["pricer"]},
                {"name": "pricer", "entrypoint": "pricing:price", "outputSchema": SCHEMA},
            ],
        }
    )
    result = await compile_tree(spec, resolve=lambda ref: returns({"amount": "x"})).orchestrator().run("price it")
    assert result.status == "failed"
    assert result.payload == {"validation_errors": ["payload.amount: 'x' is not of type 'number'"]}


def test_the_model_agents_messages_come_from_the_same_checker() -> None:
    assert validation_errors(SCHEMA, {"amount": "x"}) == ["amount: 'x' is not of type 'number'"]
    assert validation_errors(SCHEMA, {}) == ["(root): 'amount' is a required property"]
    assert validation_errors({"type": "objekt"}, {})[0].startswith(
        "the agent's outputSchema is not a valid JSON Schema"
    )


def test_validate_refuses_a_schema_that_is_not_a_json_schema(tmp_path, capsys) -> None:
    manifest = tmp_path / "t.yaml"
    manifest.write_text(
        "apiVersion: agenttree.io/v1alpha1\nkind: AgentTree\nmetadata: {name: t}\n"
        "spec:\n  root: s\n  agents:\n  - {name: s, children: [a]}\n"
        "  - {name: a, entrypoint: 'm:f', outputSchema: {type: object, properties: {n: {minimum: ten}}}}\n"
    )
    assert main(["validate", "-f", str(manifest)]) == 1
    err = capsys.readouterr().err
    assert "spec.agents[1].outputSchema: not a valid JSON Schema: 'ten' is not of type 'number'" in err
    assert "(at properties.n.minimum)" in err
