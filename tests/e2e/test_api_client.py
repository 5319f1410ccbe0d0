"""The client and ``agent-tree ... --server`` end to end (issue 13 item 5): `agent-tree api` as a real
process on the local platform, the operator as a process (watching ``cli-*``), the invoice tree on
worker pods, and a caller whose token the real API server issued (``kubectl create token``) with a
Role allowing runs and trees. The CLI submits a run through the API, follows it to the end, shows its
history and lists it, exactly as the local commands show them; fork and retry create AgentRuns as the
caller; and every curl block of docs/api.md's "curl" section runs against the same API.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator

import pytest
from api_process import ApiProcess, running_api, service_account
from operator_process import AGENT_TREE, OperatorProcess, apply_crds, namespace, ok, running
from platformlib import REPO, Platform, wait_for

pytestmark = pytest.mark.e2e

INVOICE = REPO / "examples" / "invoice" / "agenttree.yaml"
QUESTION = "Why was invoice #4821 rejected?"
ROLE = [
    {"apiGroups": ["agenttree.io"], "resources": ["agentruns"], "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": ["agenttree.io"], "resources": ["agenttrees"], "verbs": ["get", "list"]},
    {"apiGroups": ["agenttree.io"], "resources": ["agentapprovals"], "verbs": ["get", "list"]},
]


@pytest.fixture(scope="module")
def operator(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(platform)
    with running(OperatorProcess(platform, tmp_path_factory.mktemp("operator") / "operator.log", "cli-*")) as op:
        yield op


@pytest.fixture(scope="module")
def api(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    with running_api(ApiProcess(platform, tmp_path_factory.mktemp("api") / "api.log")) as process:
        yield process


def caller(platform: Platform, ns: str, name: str) -> str:
    """A ServiceAccount with the Role above, and a token the API server issued for it."""
    return service_account(platform, ns, name, rules=ROLE, duration="1h")


def cli(platform: Platform, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**platform.process_env(), **(env or {})}
    return subprocess.run([str(AGENT_TREE), *args], env=full, capture_output=True, text=True, timeout=300, cwd=REPO)


def phase(platform: Platform, ns: str, name: str) -> str | None:
    run = json.loads(ok(platform.kubectl("get", "agentrun", name, "-n", ns, "-o", "json")))
    return (run.get("status") or {}).get("phase")


def finished(platform: Platform, ns: str, name: str) -> str:
    return wait_for(
        lambda: p if (p := phase(platform, ns, name)) in ("Succeeded", "Failed", "Cancelled") else None,
        240,
        f"AgentRun {ns}/{name} to finish",
    )


def test_the_cli_drives_a_run_through_the_api(platform: Platform, operator: OperatorProcess, api: ApiProcess) -> None:
    with namespace(platform, operator, "cli") as ns:
        ok(platform.kubectl("apply", "-n", ns, "-f", str(INVOICE)))
        token = caller(platform, ns, "cli-app")
        remote = {"AGENT_TREE_SERVER": api.base_url, "AGENT_TREE_TOKEN": token}

        made = cli(platform, "submit", "-f", str(INVOICE), "--namespace", ns, "-i", QUESTION, "--name", "cli-run",
                   env=remote)  # fmt: skip
        assert made.returncode == 0 and made.stdout.strip() == "cli-run", made.stderr
        assert f"as system:serviceaccount:{ns}:cli-app" in made.stderr
        spec = json.loads(ok(platform.kubectl("get", "agentrun", "cli-run", "-n", ns, "-o", "json")))["spec"]
        assert (spec["treeRef"], spec["input"]) == ({"name": "invoice"}, QUESTION)

        followed = cli(platform, "logs", "-f", f"{ns}/cli-run", env=remote)
        assert followed.returncode == 0 and followed.stderr.strip() == "# run ended: completed", followed.stderr
        assert finished(platform, ns, "cli-run") == "Succeeded"
        local = cli(platform, "logs", f"{ns}/cli-run")  # PostgreSQL directly: the same lines
        assert local.returncode == 0 and followed.stdout == local.stdout and local.stdout.count("\n") >= 5

        shown = cli(platform, "history", f"{ns}/cli-run", "--token", token, "--server", api.base_url)
        local = cli(platform, "history", f"{ns}/cli-run")
        assert shown.returncode == 0, shown.stderr
        table = shown.stdout.split("\n\n", 1)[1]
        assert table == local.stdout.split("\n\n", 1)[1] and "STEP" in table  # the step table, identical
        assert "status: Succeeded" in shown.stdout and f"({ns}/cli-run, tree invoice @ " in shown.stdout

        listed = cli(platform, "runs", "-n", ns, env=remote)
        assert listed.returncode == 0 and re.search(r"^cli-run\s+invoice\s+Succeeded\s", listed.stdout, re.M)

        steps = json.loads(cli(platform, "history", f"{ns}/cli-run", "--json", env=remote).stdout)["steps"]
        lookup = next(i for i, s in enumerate(steps, 1) if s["type"] == "tool_end")
        forked = cli(platform, "fork", f"{ns}/cli-run", "--step", str(lookup), "--name", "cli-fork", env=remote)
        assert forked.returncode == 0 and forked.stdout.strip() == "cli-fork", forked.stderr
        assert finished(platform, ns, "cli-fork") == "Succeeded"

        # Retry of a run with no failed step: the API creates the AgentRun as the caller, the operator
        # fails it with the documented message (docs/run-control.md).
        retried = cli(platform, "retry", f"{ns}/cli-run", "--name", "cli-retry", env=remote)
        assert retried.returncode == 0 and retried.stdout.strip() == "cli-retry", retried.stderr
        assert finished(platform, ns, "cli-retry") == "Failed"

        refused = cli(platform, "runs", "-n", "kube-system", env=remote)
        assert refused.returncode == 1 and "403 Forbidden" in refused.stderr


def documents(text: str) -> list[dict]:
    """The JSON bodies curl printed one after the other (without newlines between them)."""
    decoder, out, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        value, i = decoder.raw_decode(text, i)
        out.append(value)
    return out


def curl_blocks() -> list[str]:
    section = (REPO / "docs" / "api.md").read_text().split("\n## curl\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def test_every_curl_example_of_the_docs_works(platform: Platform, operator: OperatorProcess, api: ApiProcess) -> None:
    blocks = curl_blocks()
    assert len(blocks) == 8
    with namespace(platform, operator, "cli") as ns:
        ok(platform.kubectl("apply", "-n", ns, "-f", str(INVOICE)))
        env = {**platform.process_env(), "API": api.base_url, "NS": ns, "TOKEN": caller(platform, ns, "app")}
        outputs = []
        for block in blocks:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], env=env, capture_output=True, text=True,
                                  timeout=300)  # fmt: skip
            assert done.returncode == 0, f"{block}\n{done.stderr}"
            outputs.append(done.stdout)
            if "runs/why-4821/events" in block and "Last-Event-ID" not in block:
                assert finished(platform, ns, "why-4821") == "Succeeded"
        whoami, created, live, resumed, listed, approvals, forks, cancelled = outputs
        me, trees, tree = documents(whoami)
        assert me["username"] == f"system:serviceaccount:{ns}:app"
        assert [t["name"] for t in trees["items"]] == ["invoice"] and tree["name"] == "invoice"
        assert documents(created)[0]["name"] == "why-4821"
        assert live.count("\nevent: end\n") == 1 and live.startswith("retry: ") and "event: snapshot" in live
        ids = re.findall(r"^id: (\S+)$", live, flags=re.M)
        after3 = ids[ids.index("3") + 1 :]
        halves = resumed.split("event: end\n")[:2]
        assert [re.findall(r"^id: (\S+)$", h, flags=re.M) for h in halves] == [after3, after3] and after3
        runs, run, second = documents(listed)  # the first steps page went into $CURSOR
        assert [r["name"] for r in runs["items"]] == ["why-4821"] and run["phase"] == "Succeeded"
        assert [s["number"] for s in second["items"]] == list(range(6, 6 + len(second["items"]))) and second["items"]
        listing, approve, reject = documents(approvals)
        assert listing == {"items": []}
        assert approve["status"] == reject["status"] == 409 and "has no approval 'a1b2c3'" in approve["message"]
        assert [d["name"] for d in documents(forks)] == ["why-4822", "why-4821-again"]
        assert cancelled.strip() == "202"
