"""``agent-tree validate``: every bad manifest is rejected with a message naming the field; examples pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent_tree.cli import main

ROOT = Path(__file__).resolve().parents[2]
BAD = sorted((Path(__file__).parent / "manifests" / "bad").glob("*.yaml"))


def expectation(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <message>'"
    return first.removeprefix("# expect: ")


def test_there_are_at_least_twelve_distinct_bad_manifests():
    assert len(BAD) >= 12
    assert len({expectation(p) for p in BAD}) == len(BAD)


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_manifest_is_rejected_naming_the_field(path, capsys):
    assert main(["validate", "-f", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"FAIL {path}")
    assert expectation(path) in err
    assert "{{" not in err and "}}" not in err, "a format string leaked doubled braces into the message"


def test_examples_validate_and_resolve(capsys):
    files = [str(p) for p in sorted((ROOT / "examples").rglob("*.yaml"))]
    assert files
    args = ["validate", "--resolve"]
    for f in files:
        args += ["-f", f]
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "ok   " in out and "AgentTree invoice" in out and "AgentRun why-4821" in out


def test_unresolvable_entrypoint_is_reported_with_resolve(tmp_path, capsys):
    tree = tmp_path / "t.yaml"
    tree.write_text(
        "apiVersion: agenttree.io/v1alpha1\nkind: AgentTree\nmetadata: {name: t}\n"
        "spec:\n  root: s\n  agents:\n  - {name: s, children: [a]}\n  - {name: a, entrypoint: 'no_such_mod:f'}\n"
    )
    assert main(["validate", "-f", str(tree)]) == 0
    capsys.readouterr()
    assert main(["validate", "--resolve", "-f", str(tree)]) == 1
    assert "spec.agents[1].entrypoint: cannot import module 'no_such_mod'" in capsys.readouterr().err


def test_missing_file_and_multi_document_files(tmp_path, capsys):
    assert main(["validate", "-f", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read file" in capsys.readouterr().err
    both = tmp_path / "both.yaml"
    both.write_text((ROOT / "examples/invoice/agenttree.yaml").read_text() + "\n---\n" + (BAD[-1]).read_text())
    assert main(["validate", "-f", str(both)]) == 1
    captured = capsys.readouterr()
    assert f"ok   {both}#0" in captured.out and f"FAIL {both}#1" in captured.err


def test_validate_reads_stdin():
    text = (ROOT / "examples/invoice/agentrun.yaml").read_text()
    proc = subprocess.run(
        [sys.executable, "-m", "agent_tree.cli", "validate", "-f", "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "AgentRun why-4821" in proc.stdout
