"""The one contract (``agent_tree.contract``): layers that only point down, one implementation of each
boundary function, a stream encoding that round-trips, and JSON that v1 histories already carry.

The layer checks parse the sources (``ast``), so an import hidden in a function, a module name handed
to ``importlib.import_module`` or a docstring naming the worker in the operator is found too.
"""

from __future__ import annotations

import ast
import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest
from agent_tree_worker.store import TERMINAL
from pydantic import ValidationError

from agent_tree import contract, events, models
from agent_tree.contract import (
    HOOK_STEP_TYPES,
    MODEL_DELTA,
    RESUME_FIELDS,
    RUN_END,
    RUN_STATUSES,
    STEP_TYPES,
    STREAM_ENTRY_LIMIT,
    Progress,
    RunInput,
    RunResult,
    decode_step,
    encode_model_delta,
    encode_run_end,
    encode_step,
    is_transient,
    run_input,
)
from agent_tree.contract.temporal import DATA_CONVERTER

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "agent_tree"
OPERATOR = ROOT / "operator" / "agent_tree_operator"
WORKER = ROOT / "worker" / "agent_tree_worker"
CONTRACT = CORE / "contract"
# Every Python source of the repository that could hold a second implementation.
SOURCE_DIRS = [CORE, OPERATOR, WORKER, ROOT / "tests", ROOT / "bench", ROOT / "hack", ROOT / "examples"]
SKIP = {"__pycache__", "build", ".venv"}
HISTORY = ROOT / "tests" / "unit" / "histories" / "v1" / "invoice" / "00-AgentRunWorkflow.json"
# The core CLI finds the worker's and the operator's subcommands by module name (console entry point
# of the whole distribution); the core imports nothing of them otherwise.
PLUGIN_NAMES = {
    ("agent_tree/cli.py", "agent_tree_worker.cli"),
    ("agent_tree/cli.py", "agent_tree_operator.cli"),
    ("agent_tree/cli.py", "agent_tree_operator.commands.budget"),
    ("agent_tree/cli.py", "agent_tree_api.cli"),
}


def sources(*roots: Path) -> Iterator[Path]:
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if not SKIP & set(path.relative_to(ROOT).parts):
                yield path


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports: import statements anywhere (functions too), and the string
    arguments of ``importlib.import_module(...)`` / ``__import__(...)``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                found.append((node.lineno, str(node.args[0].value)))
    return found


def imports_of(package: str, *roots: Path) -> list[str]:
    pattern = re.compile(rf"^{package}(\.|$)")
    return [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sources(*roots)
        for line, module in imported_modules(path)
        if pattern.match(module)
    ]


# --- layers ------------------------------------------------------------------------------------
def test_the_operator_never_names_the_worker() -> None:
    # Not in an import, not in a docstring: `grep -rn agent_tree_worker operator/` finds nothing.
    assert imports_of("agent_tree_worker", OPERATOR) == []
    named = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in sorted((ROOT / "operator").rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
        if "agent_tree_worker" in line
    ]
    assert named == []


def test_the_worker_never_imports_the_operator() -> None:
    assert imports_of("agent_tree_operator", WORKER) == []


def test_the_core_imports_neither_the_worker_nor_the_operator() -> None:
    assert imports_of("agent_tree_worker", CORE) == [] and imports_of("agent_tree_operator", CORE) == []
    # Nor does it name one of their modules anywhere (e.g. to import it by a computed name), except
    # the CLI's plugin list.
    named = {
        (str(path.relative_to(ROOT)), node.value)
        for path in sources(CORE)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"agent_tree_(worker|operator)(\.\w+)*", node.value)
    }
    assert named <= PLUGIN_NAMES


def test_the_pure_contract_does_not_import_temporalio() -> None:
    # Workflow code and the embedded runtime import it; only its `temporal` module talks to Temporal.
    bad = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sources(CONTRACT)
        if path.name != "temporal.py"
        for line, module in imported_modules(path)
        if module.split(".")[0] == "temporalio"
    ]
    assert bad == []


# --- one implementation -------------------------------------------------------------------------
def module_level_defs(name: str) -> list[str]:
    return [
        str(path.relative_to(ROOT))
        for path in sources(*SOURCE_DIRS)
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name
    ]


@pytest.mark.parametrize(
    ("name", "home"),
    [
        ("start_run", "agent_tree/contract/temporal.py"),
        ("run_input", "agent_tree/contract/run.py"),
        ("spec_revision", "agent_tree/contract/run.py"),
        ("connect", "agent_tree/contract/temporal.py"),
        ("encode_step", "agent_tree/contract/steps.py"),
        ("decode_step", "agent_tree/contract/steps.py"),
        ("encode_model_delta", "agent_tree/contract/steps.py"),
        ("is_transient", "agent_tree/contract/steps.py"),
    ],
)
def test_one_definition_of_each_boundary_function(name: str, home: str) -> None:
    assert module_level_defs(name) == [home]


def calls(attr: str) -> Iterator[tuple[Path, ast.Call]]:
    for path in sources(*SOURCE_DIRS):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attr:
                yield path, node


def test_only_the_contract_starts_a_run_workflow() -> None:
    # A method that wraps client.start_workflow(AgentRunWorkflow, ...) would be a second start_run.
    def names_the_run_workflow(arg: ast.expr) -> bool:
        text = ast.unparse(arg)
        return "RUN_WORKFLOW" in text or "AgentRunWorkflow" in text or text == "WORKFLOW"

    starts = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for attr in ("start_workflow", "execute_workflow")
        for path, node in calls(attr)
        if node.args and names_the_run_workflow(node.args[0])
    ]
    assert starts == [f"agent_tree/contract/temporal.py:{_line_of('client.start_workflow(')}"]


def test_every_temporal_client_speaks_the_contracts_converter() -> None:
    # Client.connect without the Pydantic data converter cannot carry the typed contract.
    direct = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path, node in calls("connect")
        if isinstance(node.func.value, ast.Name) and node.func.value.id == "Client"
    ]
    assert direct == [f"agent_tree/contract/temporal.py:{_line_of('Client.connect(')}"]
    # Test servers and replayers that make their own client or decode histories say which converter.
    without = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in sources(*SOURCE_DIRS)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and ast.unparse(node.func).split(".")[-1] in ("Replayer", "start_local", "start_time_skipping")
        and "data_converter" not in {k.arg for k in node.keywords}
    ]
    assert without == []


def _line_of(text: str) -> int:
    lines = (CONTRACT / "temporal.py").read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


# --- the step vocabulary ----------------------------------------------------------------------------
def test_one_step_vocabulary() -> None:
    assert events.EVENT_TYPES == HOOK_STEP_TYPES and set(HOOK_STEP_TYPES) < set(STEP_TYPES)
    assert RUN_END not in STEP_TYPES  # the stream's end marker is not a step of the run
    # No module keeps its own list of step types (a tuple/list/set literal of them): they use the
    # contract's names, so a new step type is added in one place.
    own_lists = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}"
        for path in sources(CORE, OPERATOR, WORKER)
        if CONTRACT not in path.parents
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Tuple | ast.List | ast.Set)
        and len(node.elts) >= 2
        and all(isinstance(e, ast.Constant) and e.value in STEP_TYPES for e in node.elts)
    ]
    assert own_lists == []
    # Nor compares with, or builds an event from, a step type spelled out: it uses the constant.
    spelled = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}"
        for path in sources(CORE, OPERATOR, WORKER)
        if CONTRACT not in path.parents
        for node in ast.walk(ast.parse(path.read_text()))
        if (
            isinstance(node, ast.Compare)
            and any(
                isinstance(c, ast.Constant) and c.value in (*STEP_TYPES, RUN_END)
                for c in [node.left, *node.comparators]
            )
        )
        or (
            isinstance(node, ast.Dict)
            and any(
                isinstance(k, ast.Constant)
                and k.value == "type"
                and isinstance(v, ast.Constant)
                and v.value in STEP_TYPES
                for k, v in zip(node.keys, node.values, strict=True)
            )
        )
    ]
    assert spelled == []


STEPS = [
    {"ord": [1], "type": "agent_start", "agent": "supervisor", "data": {"type": "agent_start", "input": "Why?"}},
    {"ord": [2, 1, 3], "type": "tool_end", "agent": "a", "data": {"type": "tool_end", "output": {"x": "é→"}}},
    {"ord": [4], "type": "model_usage", "agent": None, "data": {"type": "model_usage", "total_tokens": 7}},
]


@pytest.mark.parametrize("step", [{**s, "ts": "2026-12-02T08:00:00+00:00"} for s in STEPS], ids=lambda s: s["type"])
def test_a_stream_encoded_step_round_trips(step: dict) -> None:
    entry = encode_step(step)
    assert all(isinstance(v, str) for v in entry.values())  # what XADD takes
    assert decode_step(entry) == step
    # Redis hands the fields back as bytes.
    assert decode_step({k.encode(): v.encode() for k, v in entry.items()}) == step


def test_a_step_over_the_stream_entry_limit_keeps_its_small_fields() -> None:
    step = {**STEPS[1], "data": {"type": "tool_end", "tool": "t", "output": "x" * (STREAM_ENTRY_LIMIT + 1)}, "ts": ""}
    back = decode_step(encode_step(step))
    assert back["data"] == {"type": "tool_end", "tool": "t", "truncated": True}
    assert decode_step(encode_run_end({"status": "completed", "answer": "a"}))["type"] == RUN_END


def test_a_model_delta_is_a_transient_entry_without_ord() -> None:
    assert MODEL_DELTA not in STEP_TYPES  # never a step: never in PostgreSQL
    ts = "2026-12-02T08:00:00+00:00"
    entry = encode_model_delta(agent="a", model="m", call="3.2", seq=4, text="Hé, ", ts=ts)
    assert all(isinstance(v, str) for v in entry.values()) and "ord" not in entry
    want = {
        "type": MODEL_DELTA,
        "agent": "a",
        "ts": ts,
        "data": {"agent": "a", "model": "m", "call": "3.2", "seq": 4, "text": "Hé, "},
    }
    raw = {k.encode(): v.encode() for k, v in entry.items()}
    assert decode_step(entry) == want and decode_step(raw) == want
    # Told apart decoded or raw (what Redis hands back), and steps / the end marker are not transient.
    assert is_transient(want) and is_transient(entry) and is_transient(raw)
    step = {**STEPS[0], "ts": ts}
    assert not is_transient(decode_step(encode_step(step))) and not is_transient(encode_step(step))
    assert not is_transient(decode_step(encode_run_end({"status": "completed", "answer": "a"})))
    assert contract.MODEL_DELTA == MODEL_DELTA and contract.TRANSIENT_TYPES == (MODEL_DELTA,)


# --- typed input, progress and result against committed v1 histories ---------------------------------
def v1_payload(event_key: str, field: str) -> bytes:
    history = json.loads(HISTORY.read_text())
    attrs = next(e[event_key] for e in history["events"] if event_key in e)
    return base64.b64decode(attrs[field]["payloads"][0]["data"])


def test_run_input_json_is_what_v1_histories_carry() -> None:
    raw = v1_payload("workflowExecutionStartedEventAttributes", "input")
    v1 = json.loads(raw)
    inp = DATA_CONVERTER.payload_converter.from_payloads(
        DATA_CONVERTER.payload_converter.to_payloads([v1]), [RunInput]
    )[0]
    assert isinstance(inp, RunInput)
    ours = json.loads(DATA_CONVERTER.payload_converter.to_payloads([inp])[0].data)
    # Same keys, byte for byte, and the same values (v1 sorted keys; JSON objects are unordered).
    assert sorted(ours) == sorted(v1)
    assert sorted(RunInput.model_fields) == sorted([*v1, *RESUME_FIELDS])  # those two: only when set
    assert ours == v1
    # The builder makes the same input (the spec comes back with today's defaults filled in).
    built = json.loads(
        run_input(
            inp.namespace, inp.tree, inp.spec, name=inp.name, uid=inp.uid, input=inp.input, revision=inp.revision
        ).model_dump_json()
    )
    assert list(built) == [f for f in RunInput.model_fields if f not in RESUME_FIELDS]
    assert {k: v for k, v in built.items() if k != "spec"} == {k: v for k, v in v1.items() if k != "spec"}


def test_the_v1_result_parses_as_run_result() -> None:
    v1 = json.loads(v1_payload("workflowExecutionCompletedEventAttributes", "result"))
    result = RunResult.model_validate(v1)
    assert result.status == "completed" and result.final_agent == "verifier" and result.steps == 3
    assert result.model_dump(mode="json") == v1
    with pytest.raises(ValidationError, match="status"):
        RunResult.model_validate({**v1, "status": "done"})
    # Every status the policy ends a run with, and cancelled; the history's final statuses are these.
    assert set(get_args(models.RunStatus)) | {"cancelled"} == set(RUN_STATUSES) == set(TERMINAL)


def test_progress_reads_both_casings() -> None:
    v1 = {"phase": "Running", "currentAgent": "triage", "steps": 2, "tokenUsage": 40, "plan": None}
    v2 = {"phase": "Running", "current_agent": "triage", "steps": 2, "token_usage": 40, "plan": None}
    assert Progress.model_validate(v1) == Progress.model_validate(v2) == Progress(**v2)
    # written in snake_case; run control adds what a run waits on and its usage
    assert Progress.model_validate(v1).model_dump() == {**v2, "approvals": [], "paused": None, "usage": {}}


def test_the_names_in_committed_histories_are_the_contracts() -> None:
    text = HISTORY.read_text()
    for name in (contract.RUN_WORKFLOW, contract.START_RUN, contract.FINISH_RUN):
        assert f'"{name}"' in text


def test_a_spec_without_the_newer_fields_dumps_as_before_they_existed() -> None:
    """approval (tools), pricing (models) and budgets (tree) are left out while unset: the revision hash
    of such a tree and the spec a run snapshots stay what workers of the previous version accept
    (their models forbid unknown fields; tests/integration/test_upgrade.py runs them)."""
    from agent_tree.spec import AgentTreeSpec

    plain = {
        "root": "desk",
        "agents": [
            {"name": "desk", "children": ["billing"]},
            {"name": "billing", "model": {"name": "m"}, "tools": [{"name": "lookup", "entrypoint": "m:lookup"}]},
        ],
    }
    text = json.dumps(AgentTreeSpec.model_validate(plain).model_dump(mode="json"))
    assert not [key for key in ("approval", "pricing", "budgets") if f'"{key}"' in text], text
    used = json.loads(json.dumps(plain))
    used["budgets"] = {"maxTokens": 9}
    used["agents"][1]["model"]["pricing"] = {"inputPerMillionTokens": 1, "outputPerMillionTokens": 2}
    used["agents"][1]["tools"][0]["approval"] = {"required": True}
    dumped = AgentTreeSpec.model_validate(used).model_dump(mode="json")
    assert dumped["budgets"]["maxTokens"] == 9 and dumped["agents"][1]["tools"][0]["approval"]["required"] is True
    assert dumped["agents"][1]["model"]["pricing"]["outputPerMillionTokens"] == 2
    assert AgentTreeSpec.model_validate(dumped).model_dump(mode="json") == dumped  # round trip
