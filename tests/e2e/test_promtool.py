"""Prometheus' own linter on live scrapes: `promtool check metrics` is clean on the operator's
`/metrics` and on every worker's, after a real invoice run through the operator.

promtool comes from hack/build-promtool.sh (github.com/prometheus/prometheus/cmd/promtool built from
the Go module proxy, cached like helm). The operator is a real process watching `prom-*`
namespaces; workers are pods the platform's pod runner runs as processes, with
``AGENT_TREE_METRICS_PORT=auto`` (the port is read from the pod's log).
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest
import yaml
from operator_process import OperatorProcess, apply_crds, namespace, ok, running
from platformlib import REPO, Platform, built_tool, wait_for

pytestmark = pytest.mark.e2e

INVOICE = REPO / "examples" / "invoice"
PORT_LINE = re.compile(rb"agent-tree worker: metrics on port (\d+)")
AGENTS = ("supervisor", "triage", "invoice-specialist", "verifier")


@pytest.fixture(scope="module")
def promtool() -> str:
    return built_tool("build-promtool.sh")


@pytest.fixture(scope="module")
def operator(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(platform)
    with running(OperatorProcess(platform, tmp_path_factory.mktemp("operator") / "operator.log", "prom-*")) as op:
        yield op


@pytest.fixture
def ns(platform: Platform, operator: OperatorProcess) -> Iterator[str]:
    with namespace(platform, operator, "prom", cleanup_timeout=120) as name:
        yield name


def get(platform: Platform, ns: str, *args: str) -> dict:
    return json.loads(ok(platform.kubectl("get", *args, "-n", ns, "-o", "json")))


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def check_metrics(promtool: str, text: str) -> subprocess.CompletedProcess:
    """`promtool check metrics` reads the exposition from stdin; exit 0 and no output = clean."""
    return subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)


def worker_ports(platform: Platform, ns: str) -> dict[str, int] | None:
    """'<pod>' -> metrics port of one ready worker pod per agent, once every agent has one."""
    found: dict[str, int] = {}
    for key in platform.pod_processes():
        pod_ns, pod = key.split("/", 1)
        log = platform.logs / "pods" / f"{pod_ns}_{pod}.log"
        text = log.read_bytes() if log.exists() else b""
        ports = PORT_LINE.findall(text)
        if pod_ns == ns and ports and b"agent-tree worker ready" in text:
            found[pod] = int(ports[-1])
    agents = {a for a in AGENTS if any(p.startswith(f"invoice-{a}-") for p in found)}
    return found if agents == set(AGENTS) else None


def test_promtool_is_clean_on_live_operator_and_worker_metrics(
    platform: Platform, operator: OperatorProcess, ns: str, promtool: str
) -> None:
    tree = yaml.safe_load((INVOICE / "agenttree.yaml").read_text())
    # One autoscaled agent, so the operator also exports the autoscaler's per-agent series.
    verifier = next(a for a in tree["spec"]["agents"] if a["name"] == "verifier")
    verifier["worker"] = {"autoscale": {"minReplicas": 1, "maxReplicas": 2, "targetBacklogPerReplica": 2}}
    ok(platform.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(tree)))
    run = yaml.safe_load((INVOICE / "agentrun.yaml").read_text())
    ok(platform.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(run)))
    name = run["metadata"]["name"]

    def finished() -> str | None:
        phase = (get(platform, ns, "agentrun", name).get("status") or {}).get("phase")
        return phase if phase in ("Succeeded", "Failed", "Cancelled") else None

    assert wait_for(finished, 300, f"AgentRun {ns}/{name} finished") == "Succeeded"
    ports = wait_for(lambda: worker_ports(platform, ns), 60, "a worker of every agent with its metrics port")

    def polled() -> str | None:
        # The autoscaler polls every AGENT_TREE_AUTOSCALE_INTERVAL_SECONDS (5 s by default): a run that
        # finishes within one interval of the tree's creation can beat its first poll.
        text = scrape(operator.metrics_port)
        return text if "agent_tree_autoscaler_desired_replicas{" in text else None

    scrapes = {"operator": wait_for(polled, 30, "the autoscaler's series of the verifier")}
    scrapes.update({f"worker {pod}": scrape(port) for pod, port in sorted(ports.items())})
    # The scrapes hold what the run moved: the linter sees real series, not an empty registry.
    assert 'agent_tree_operator_reconciles_total{kind="AgentRun",result="finished"}' in scrapes["operator"]
    assert "agent_tree_autoscaler_desired_replicas{" in scrapes["operator"]
    assert any("agent_tree_worker_tool_calls_total{" in text for text in scrapes.values())
    assert any("temporal_" in text for key, text in scrapes.items() if key.startswith("worker"))

    problems = {}
    for what, text in scrapes.items():
        proc = check_metrics(promtool, text)
        print(f"promtool check metrics, {what}: exit {proc.returncode}, {len(text.splitlines())} lines scraped")
        if proc.returncode != 0 or proc.stdout.strip() or proc.stderr.strip():
            problems[what] = f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
    assert not problems, "promtool check metrics is not clean:\n" + "\n".join(
        f"--- {what}\n{out}" for what, out in problems.items()
    )


def test_promtool_reports_a_broken_exposition(promtool: str) -> None:
    """The check can fail: a counter without `_total` and a metric without HELP are reported."""
    bad = "# TYPE agent_tree_bad_counter counter\nagent_tree_bad_counter 1\n"
    proc = check_metrics(promtool, bad)
    assert proc.returncode != 0 and "agent_tree_bad_counter" in proc.stdout + proc.stderr, proc
