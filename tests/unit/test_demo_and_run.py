"""The invoice example answers each question correctly, embedded, through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent_tree.cli import main

ROOT = Path(__file__).resolve().parents[2]
TREE = ROOT / "examples" / "invoice" / "agenttree.yaml"

CASES = {
    "4821": ("Invoice #4821 rejected due to missing PO number. (policy AP-4)", "rejected"),
    "4822": ("Invoice #4822 rejected due to amount mismatch with the PO. (policy AP-7)", "rejected"),
    "4823": ("Invoice #4823 rejected due to duplicate invoice. (policy AP-9)", "rejected"),
    "4824": ("Invoice #4824 was approved and paid; it was not rejected. (policy AP-1)", "approved"),
    "4825": (
        "Invoice #4825 is on hold: awaiting second approval above the EUR 50,000 threshold. (policy AP-12)",
        "on_hold",
    ),
    "9999": ("Invoice #9999 was not found in the ERP; please check the number.", "unknown"),
}


@pytest.mark.parametrize("invoice", sorted(CASES))
def test_demo_answers_each_invoice(invoice, capsys):
    assert main(["demo", "--invoice", invoice, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    answer, decision = CASES[invoice]
    assert data["result"]["answer"] == answer
    assert data["result"]["status"] == "completed"
    assert data["result"]["payload"]["decision"] == decision
    assert data["result"]["plan"]["strategy"] == "triage → specialist → verifier"


def test_demo_event_sequence_for_4821(capsys):
    main(["demo", "--json"])
    events = json.loads(capsys.readouterr().out)["events"]
    tools = [e["tool"] for e in events if e["type"] == "tool_start"]
    assert tools == ["erp_lookup", "policy_search", "verify_answer"]
    handoffs = [(e["agent"], e["status"]) for e in events if e["type"] == "handoff"]
    assert handoffs == [("triage", "needs_more_info"), ("invoice-specialist", "needs_more_info"), ("verifier", "ok")]


def test_question_without_invoice_number_is_answered_by_triage(capsys):
    assert main(["run", "-f", str(TREE), "--input", "Can you help me with a payment?", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["result"]
    assert result["final_agent"] == "triage" and "invoice number" in result["answer"]


def test_run_streams_readable_lines_then_the_answer():
    proc = subprocess.run(
        [sys.executable, "-m", "agent_tree.cli", "run", "-f", str(TREE), "--input", "Why was invoice #4822 rejected?"],
        capture_output=True,
        text=True,
        cwd="/",
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == '> supervisor started: "Why was invoice #4822 rejected?"'
    assert '  * tool erp_lookup({"invoice_id": "4822"})' in lines
    assert any(line.startswith("~ handoff verifier -> supervisor [ok]") for line in lines)
    assert "answer: Invoice #4822 rejected due to amount mismatch with the PO. (policy AP-7)" in lines
    assert "status: completed" in lines
    assert lines[-2].startswith("plan:   {")


def test_run_uses_the_agentrun_in_the_file_when_no_input(tmp_path, capsys):
    both = tmp_path / "both.yaml"
    run = (ROOT / "examples/invoice/agentrun.yaml").read_text().replace("4821", "4823")
    both.write_text(TREE.read_text().replace("invoice_agents:", "invoice_agents:") + "\n---\n" + run)
    sys.path.insert(0, str(TREE.parent))
    try:
        assert main(["run", "-f", str(both), "--json"]) == 0
    finally:
        sys.path.remove(str(TREE.parent))
    assert "#4823 rejected due to duplicate" in json.loads(capsys.readouterr().out)["result"]["answer"]


def test_run_reports_bad_input_clearly(tmp_path, capsys):
    assert main(["run", "-f", str(tmp_path / "missing.yaml"), "--input", "x"]) == 1
    assert "cannot read file" in capsys.readouterr().err
    assert main(["run", "-f", str(TREE), "--context", "novalue", "--input", "x"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main(["run", "-f", str(TREE)]) == 2
    assert "--input is required" in capsys.readouterr().err


@pytest.mark.parametrize(("manifest", "code", "stream", "text"), [
    ("examples/invoice/agentrun.yaml", 0, "stdout", "ok   "),
    ("tests/unit/manifests/bad/03-unknown-child.yaml", 1, "stderr", "unknown agent 'ghost'"),
])  # fmt: skip
def test_console_script_keeps_exit_code_and_output_when_it_skips_finalization(manifest, code, stream, text):
    # With Temporal's bridge loaded, run() leaves through os._exit: output must still be flushed.
    script = "import sys, temporalio.client; from agent_tree.cli import run; sys.argv[0] = 'agent-tree'; run()"
    proc = subprocess.run([sys.executable, "-c", script, "validate", "-f", manifest],
                          capture_output=True, text=True, cwd=ROOT, check=False)  # fmt: skip
    assert proc.returncode == code, proc.stderr
    assert text in getattr(proc, stream)
