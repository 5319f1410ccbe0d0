"""`agent-tree runs` and `history` after the AgentRuns are gone (issue 10 item 8), on the local platform.

A real operator process (watching `cli-*`) runs the invoice tree on worker pods; the runs are then
deleted from Kubernetes, and the CLI still lists them from PostgreSQL with the phase, steps and
tokens their status had. The operator's start also passes the new Kubernetes preflight for real.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
import yaml
from operator_process import AGENT_TREE, OperatorProcess, apply_crds, namespace, ok, running
from platformlib import REPO, Platform, wait_for

pytestmark = pytest.mark.e2e

INVOICE = REPO / "examples" / "invoice"


@pytest.fixture(scope="module")
def operator(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(platform)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with running(OperatorProcess(platform, log, "cli-*")) as op:
        yield op


def agent_tree(platform: Platform, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(AGENT_TREE), *args], env=platform.process_env(), capture_output=True, text=True, timeout=60, cwd=REPO
    )


def run_doc(name: str, **spec: object) -> dict:
    return {
        "apiVersion": "agenttree.io/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": name},
        "spec": {"treeRef": {"name": "invoice"}, "input": "Why was invoice #4821 rejected?", **spec},
    }


def final_status(platform: Platform, ns: str, name: str) -> dict:
    def check() -> dict | None:
        status = json.loads(ok(platform.kubectl("get", "agentrun", name, "-n", ns, "-o", "json"))).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed", "Cancelled") else None

    return wait_for(check, 240, f"AgentRun {ns}/{name} to finish")


def test_runs_lists_runs_whose_agentrun_was_deleted(platform: Platform, operator: OperatorProcess) -> None:
    with namespace(platform, operator, "cli") as ns:
        tree = yaml.safe_load((INVOICE / "agenttree.yaml").read_text())
        docs = [tree, run_doc("why-4821"), run_doc("short", maxSteps=1)]
        ok(platform.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs)))
        status = {name: final_status(platform, ns, name) for name in ("why-4821", "short")}
        assert (status["why-4821"]["phase"], status["short"]["phase"]) == ("Succeeded", "Failed"), status

        ok(platform.kubectl("delete", "agentrun", "why-4821", "short", "-n", ns, "--timeout=60s"))
        assert ok(platform.kubectl("get", "agentruns", "-n", ns, "-o", "name")).strip() == ""

        listed = agent_tree(platform, "runs", "-n", ns)
        print(f"\n$ agent-tree runs -n {ns}\n{listed.stdout}{listed.stderr}")
        assert listed.returncode == 0, listed.stderr
        header, *rows = listed.stdout.strip().splitlines()
        assert header.split() == ["NAME", "TREE", "PHASE", "STEPS", "TOKENS", "STARTED", "DURATION"]
        cells = {row.split()[0]: row.split() for row in rows}
        assert set(cells) == {"why-4821", "short"}
        for name, st in status.items():
            assert cells[name][1:5] == ["invoice", st["phase"], str(st["steps"]), str(st.get("tokenUsage") or 0)]
            assert cells[name][6] != "-"  # finished: a duration

        failed = agent_tree(platform, "runs", "-n", ns, "--phase", "Failed", "--json")
        assert [r["name"] for r in json.loads(failed.stdout)["runs"]] == ["short"]
        history = agent_tree(platform, "history", f"{ns}/why-4821")
        assert history.returncode == 0 and "status: completed" in history.stdout, history.stderr
