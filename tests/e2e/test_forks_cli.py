"""Retry and fork on the local platform (issue 12 item 6): a real operator process (watching `fk-*`)
runs the invoice tree on worker pods; `agent-tree fork` creates forks through the Kubernetes API as
the caller; a fork Succeeds with status.forkedFrom, also after the source AgentRun was deleted; bad
forks fail (or are refused by the API server) with a message naming the field, and the source's
history is not changed (docs/run-control.md, "Retry and fork")."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from operator_process import AGENT_TREE, OperatorProcess, apply_crds, namespace, ok, running
from platformlib import REPO, Platform, wait_for

pytestmark = pytest.mark.e2e

INVOICE = REPO / "examples" / "invoice"
HERE = Path(__file__).resolve().parent  # worker pods import flaky_tools from here


@pytest.fixture(scope="module")
def operator(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(platform)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with running(OperatorProcess(platform, log, "fk-*")) as op:
        yield op


def agent_tree(platform: Platform, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(AGENT_TREE), *args], env=platform.process_env(), capture_output=True, text=True, timeout=60, cwd=REPO
    )


def final(platform: Platform, ns: str, name: str) -> dict:
    def check() -> dict | None:
        run = json.loads(ok(platform.kubectl("get", "agentrun", name, "-n", ns, "-o", "json")))
        return run if (run.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Cancelled") else None

    return wait_for(check, 240, f"AgentRun {ns}/{name} to finish")


def history(platform: Platform, ref: str) -> dict:
    shown = agent_tree(platform, "history", ref, "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def failed_message(run: dict) -> tuple[str, str]:
    cond = next(c for c in run["status"]["conditions"] if c["type"] == "Failed")
    return cond["reason"], cond["message"]


def test_fork_with_the_cli_also_after_the_source_was_deleted(platform: Platform, operator: OperatorProcess) -> None:
    with namespace(platform, operator, "fk") as ns:
        tree = yaml.safe_load((INVOICE / "agenttree.yaml").read_text())
        source_doc = {
            "apiVersion": "agenttree.io/v1alpha1",
            "kind": "AgentRun",
            "metadata": {"name": "why-4821"},
            "spec": {"treeRef": {"name": "invoice"}, "input": "Why was invoice #4821 rejected?", "maxSteps": 5},
        }
        ok(platform.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all([tree, source_doc])))
        source = final(platform, ns, "why-4821")
        assert source["status"]["phase"] == "Succeeded", source["status"]
        before = history(platform, f"{ns}/why-4821")
        steps = before["steps"]
        # Fork after the specialist's ERP lookup (the STEP number `agent-tree history` prints).
        step = next(i for i, s in enumerate(steps, 1) if s["type"] == "tool_end" and s["data"]["tool"] == "erp_lookup")

        made = agent_tree(platform, "fork", f"{ns}/why-4821", "--step", str(step), "--name", "fk-one")
        assert made.returncode == 0 and made.stdout.strip() == "fk-one", made.stderr
        one = final(platform, ns, "fk-one")
        assert one["status"]["phase"] == "Succeeded", one["status"]
        assert one["status"]["forkedFrom"] == {
            "run": "why-4821",
            "step": step,
            "workflowId": source["status"]["workflowId"],
        }
        assert one["status"]["answer"] == source["status"]["answer"]
        assert one["spec"]["treeRef"] == {"name": "invoice"} and one["spec"]["maxSteps"] == 5  # copied from the source
        forked = history(platform, f"{ns}/fk-one")
        assert [s["ord"] for s in forked["steps"] if s["data"].get("reused")] == [s["ord"] for s in steps[:step]]
        assert forked["run"]["forked_from"] == source["status"]["workflowId"]
        table = agent_tree(platform, "history", f"{ns}/fk-one")
        assert f"steps 1..{step} reused" in table.stdout, table.stdout

        # The source AgentRun is deleted: its history is in PostgreSQL, the fork still works.
        ok(platform.kubectl("delete", "agentrun", "why-4821", "-n", ns, "--timeout=60s"))
        made = agent_tree(platform, "fork", f"{ns}/why-4821", "--step", "3", "--name", "fk-two")
        assert made.returncode == 0, made.stderr
        two = final(platform, ns, "fk-two")
        assert two["status"]["phase"] == "Succeeded", two["status"]
        assert "treeRef" not in two["spec"]  # taken from the history
        assert two["status"]["forkedFrom"]["step"] == 3

        # Bad input: each a clear error naming the field; nothing of the source changes.
        made = agent_tree(platform, "fork", f"{ns}/why-4821", "--step", "999", "--name", "fk-bad-step")
        assert made.returncode == 0, made.stderr
        reason, message = failed_message(final(platform, ns, "fk-bad-step"))
        assert reason == "InvalidForkFrom" and message.startswith("spec.forkFrom.step: run 'why-4821' has"), message
        made = agent_tree(platform, "retry", f"{ns}/never-was", "--name", "fk-bad-run")
        assert made.returncode == 0, made.stderr
        reason, message = failed_message(final(platform, ns, "fk-bad-run"))
        assert reason == "InvalidForkFrom" and message.startswith("spec.forkFrom.run: no run of AgentRun 'never-was'")
        made = agent_tree(platform, "retry", f"{ns}/fk-one", "--name", "fk-bad-retry")  # nothing failed in it
        reason, message = failed_message(final(platform, ns, "fk-bad-retry"))
        assert message.startswith("spec.forkFrom.step: run 'fk-one' has no failed step"), message
        other = {
            "apiVersion": "agenttree.io/v1alpha1",
            "kind": "AgentRun",
            "metadata": {"name": "fk-other-ns"},
            "spec": {"forkFrom": {"run": "default/why-4821"}},
        }
        refused = platform.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(other))
        assert (
            refused.returncode != 0
            and "spec.forkFrom.run must be the name of an AgentRun in this run's namespace" in (refused.stderr)
        ), refused.stderr
        assert platform.kubectl("get", "agentrun", "fk-other-ns", "-n", ns).returncode != 0
        after = history(platform, f"{ns}/why-4821")
        assert after["steps"] == steps and after["run"]["status"] == before["run"]["status"]


def calls(folder: Path, tool: str) -> int:
    path = folder / f"calls-{tool}.log"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_retry_with_the_cli_reruns_the_failed_tool_and_succeeds(
    platform: Platform, operator: OperatorProcess, tmp_path: Path
) -> None:
    tmp_path.chmod(0o777)  # worker pods may run as another user
    tree = {
        "apiVersion": "agenttree.io/v1alpha1",
        "kind": "AgentTree",
        "metadata": {"name": "jobs"},
        "spec": {
            "root": "boss",
            "worker": {
                "replicas": 1,
                "env": [{"name": "PYTHONPATH", "value": str(HERE)}, {"name": "FLAKY_DIR", "value": str(tmp_path)}],
            },
            "agents": [
                {"name": "boss", "description": "Delegates.", "children": ["doer"]},
                {
                    "name": "doer",
                    "description": "Does the job.",
                    "entrypoint": "flaky_tools:careful",
                    "tools": [
                        {"name": "prepare", "entrypoint": "flaky_tools:prepare"},
                        {"name": "flaky", "entrypoint": "flaky_tools:flaky"},
                    ],
                },
            ],
        },
    }
    run = {
        "apiVersion": "agenttree.io/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": "job"},
        "spec": {"treeRef": {"name": "jobs"}, "input": "do job-1"},
    }
    with namespace(platform, operator, "fk") as ns:
        ok(platform.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all([tree, run])))
        source = final(platform, ns, "job")
        assert source["status"]["phase"] == "Failed", source["status"]
        assert (calls(tmp_path, "prepare"), calls(tmp_path, "flaky")) == (1, 1)
        steps = history(platform, f"{ns}/job")["steps"]
        failed = next(i for i, s in enumerate(steps, 1) if s["type"] == "tool_end" and s["data"]["status"] == "error")

        made = agent_tree(platform, "retry", f"{ns}/job")
        assert made.returncode == 0, made.stderr
        name = made.stdout.strip()
        assert name.startswith("job-retry-"), made.stdout
        retried = final(platform, ns, name)
        assert retried["status"]["phase"] == "Succeeded", retried["status"]
        assert retried["status"]["forkedFrom"] == {
            "run": "job",
            "step": failed - 1,
            "workflowId": source["status"]["workflowId"],
        }
        # prepare (before the failed step) came from the history; the flaky tool ran again, live.
        assert (calls(tmp_path, "prepare"), calls(tmp_path, "flaky")) == (1, 2)
        again = history(platform, f"{ns}/{name}")["steps"]
        assert [s["ord"] for s in again if s["data"].get("reused")] == [s["ord"] for s in steps[: failed - 1]]
