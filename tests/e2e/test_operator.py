"""The operator end to end on the local platform (hack/): a real API server with the generated CRDs,
`agent-tree operator` as a real process, workers as pods the pod runner runs as processes, and real
Temporal, PostgreSQL and Redis.

The operator here watches only namespaces named ``opt-*`` (kopf namespace glob), so it never touches
what other test sessions create on the same platform. Every wait polls with a deadline.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from operator_process import OperatorProcess, apply_crds, held_supervisor, invoice_tree, namespace, ok, running
from platformlib import REPO, Platform, wait_for

from agent_tree import naming

pytestmark = pytest.mark.e2e

INVOICE = REPO / "examples" / "invoice"
BAD = REPO / "tests" / "unit" / "manifests" / "bad"
INTERVAL_MS = 1000  # the operator's default AGENT_TREE_STATUS_INTERVAL_MS
RUN_DEADLINE = 180.0


class Operator(OperatorProcess):
    """The operator of these tests: it watches the ``opt-*`` namespaces."""

    def __init__(self, platform: Platform, log: Path) -> None:
        super().__init__(platform, log, "opt-*")


@pytest.fixture(scope="module")
def crds(platform: Platform) -> None:
    apply_crds(platform)


@pytest.fixture(scope="module")
def operator(platform: Platform, crds: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    with running(Operator(platform, tmp_path_factory.mktemp("operator") / "operator.log")) as op:
        yield op


@pytest.fixture
def ns(platform: Platform, operator: Operator) -> Iterator[str]:
    with namespace(platform, operator, "opt") as name:
        yield name


# --- helpers ---------------------------------------------------------------------------------------


def get(platform: Platform, ns: str, kind: str, name: str | None = None, *args: str) -> Any:
    r = platform.kubectl("get", kind, *([name] if name else []), "-n", ns, "-o", "json", *args)
    return json.loads(ok(r))


def exists(platform: Platform, ns: str, kind: str, name: str) -> bool:
    return platform.kubectl("get", kind, name, "-n", ns).returncode == 0


def apply(platform: Platform, ns: str, docs: Any) -> subprocess.CompletedProcess:
    text = docs if isinstance(docs, str) else yaml.safe_dump_all(docs if isinstance(docs, list) else [docs])
    return platform.kubectl("apply", "-n", ns, "-f", "-", input=text)


def run_manifest(name: str = "why-4821", invoice: str = "4821", **spec: Any) -> dict:
    return {
        "apiVersion": "agenttree.io/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": name},
        "spec": {"treeRef": {"name": "invoice"}, "input": f"Why was invoice #{invoice} rejected?", **spec},
    }


def condition(obj: dict, type_: str) -> dict:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return {}


def tree_ready(platform: Platform, ns: str, name: str = "invoice") -> dict:
    def check() -> dict | None:
        tree = get(platform, ns, "agenttree", name)
        gen_ok = (tree.get("status") or {}).get("observedGeneration") == tree["metadata"]["generation"]
        return tree if gen_ok and condition(tree, "Ready").get("status") == "True" else None

    return wait_for(check, 90, f"AgentTree {ns}/{name} Ready")


def pending_observed(status: dict) -> bool:
    """Pending as the operator wrote it (the CRD's default status is Pending too, without observedGeneration)."""
    return status.get("phase") == "Pending" and bool(status.get("observedGeneration"))


def run_status(
    platform: Platform, ns: str, name: str, predicate: Callable[[dict], bool], what: str, timeout: float = RUN_DEADLINE
) -> dict:
    def check() -> dict | None:
        run = get(platform, ns, "agentrun", name)
        return run if predicate(run.get("status") or {}) else None

    return wait_for(check, timeout, f"AgentRun {ns}/{name}: {what}")


def temporal_describe(platform: Platform, workflow_id: str) -> dict:
    r = subprocess.run(
        [str(platform.bin / "temporal"), "workflow", "describe", "-w", workflow_id,
         f"--address={platform.temporal_address}", "-o", "json"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def workflow_state(platform: Platform, workflow_id: str) -> tuple[str, bool]:
    d = temporal_describe(platform, workflow_id)
    status = d["workflowExecutionInfo"]["status"].removeprefix("WORKFLOW_EXECUTION_STATUS_")
    return status, bool((d.get("workflowExtendedInfo") or {}).get("cancelRequested"))


def events_of(platform: Platform, ns: str, name: str) -> list[dict]:
    r = platform.kubectl("get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}", "-o", "json")
    return json.loads(ok(r))["items"]


def audit_writes(platform: Platform, ns: str, resource: str = "agentruns") -> list[dict]:
    out = []
    for event in platform.audit_events():
        ref = event.get("objectRef") or {}
        if (
            ref.get("namespace") == ns
            and ref.get("resource") == resource
            and event.get("stage") == "ResponseComplete"
            and event.get("verb") in ("create", "update", "patch", "delete")
            and (event.get("responseStatus") or {}).get("code", 500) < 300
        ):
            out.append(event)
    return out


def iso_seconds(value: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# --- AgentTree -------------------------------------------------------------------------------------


def test_invoice_tree_runs_one_worker_deployment_per_agent(platform: Platform, ns: str) -> None:
    ok(apply(platform, ns, invoice_tree()))

    def deployments() -> dict | None:
        items = get(
            platform,
            ns,
            "deployments",
            None,
            "-l",
            "app.kubernetes.io/managed-by=agent-tree-operator",
            "--show-managed-fields",
        )
        found = {d["metadata"]["name"]: d for d in items["items"]}
        return found if len(found) == 4 else None

    found = wait_for(deployments, 60, "4 worker Deployments")
    replicas = {name: d["spec"]["replicas"] for name, d in found.items()}
    assert replicas == {
        "invoice-supervisor": 1,
        "invoice-triage": 1,
        "invoice-invoice-specialist": 2,
        "invoice-verifier": 1,
    }
    tree = tree_ready(platform, ns)
    for name, dep in found.items():
        agent = name.removeprefix("invoice-")
        assert dep["metadata"]["ownerReferences"][0]["uid"] == tree["metadata"]["uid"]
        assert dep["metadata"]["labels"] == naming.worker_labels("invoice", agent)
        managers = {m["manager"] for m in dep["metadata"]["managedFields"]}
        assert "agent-tree-operator" in managers  # server-side apply with our field manager
    assert tree["status"]["ready"] == "4/4"
    assert [a["name"] for a in tree["status"]["agents"]] == ["supervisor", "triage", "invoice-specialist", "verifier"]

    # The pods are real local processes running `agent-tree worker --task-queue <the agent's queue>`.
    def processes() -> dict | None:
        procs = {k: v for k, v in platform.pod_processes().items() if k.startswith(f"{ns}/")}
        return procs if len(procs) == 5 else None

    procs = wait_for(processes, 60, "5 worker processes")
    queues = Counter()
    for info in procs.values():
        argv = Path(f"/proc/{info['pid']}/cmdline").read_bytes().split(b"\0")
        text = [a.decode() for a in argv if a]
        assert "worker" in text and "--task-queue" in text, text
        queues[text[text.index("--task-queue") + 1]] += 1
    assert queues == {
        naming.task_queue(ns, "invoice", a): n
        for a, n in [("supervisor", 1), ("triage", 1), ("invoice-specialist", 2), ("verifier", 1)]
    }

    table = ok(platform.kubectl("get", "atree", "-n", ns))
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "ROOT", "AGENTS", "READY", "AGE"]
    assert row.split()[:4] == ["invoice", "supervisor", "4/4", "True"]


def test_removing_an_agent_deletes_its_deployment(platform: Platform, ns: str) -> None:
    ok(apply(platform, ns, invoice_tree()))
    tree_ready(platform, ns)
    wait_for(lambda: exists(platform, ns, "deployment", "invoice-verifier"), 30, "the verifier Deployment")

    def drop_verifier(tree: dict) -> None:
        agents = tree["spec"]["agents"]
        tree["spec"]["agents"] = [a for a in agents if a["name"] != "verifier"]
        agents[0]["children"] = [c for c in agents[0]["children"] if c != "verifier"]

    ok(apply(platform, ns, invoice_tree(drop_verifier)))
    wait_for(lambda: not exists(platform, ns, "deployment", "invoice-verifier"), 60, "invoice-verifier deleted")
    tree = tree_ready(platform, ns)
    assert tree["status"]["ready"] == "3/3"
    for agent in ("supervisor", "triage", "invoice-specialist"):
        assert exists(platform, ns, "deployment", f"invoice-{agent}")
    reasons = {e["reason"] for e in events_of(platform, ns, "invoice")}
    assert "AgentRemoved" in reasons


# --- AgentRun --------------------------------------------------------------------------------------


def test_run_pending_until_its_tree_exists_then_succeeds_and_is_watchable(
    platform: Platform, ns: str, tmp_path: Path
) -> None:
    watch_log = tmp_path / "watch.txt"
    with open(watch_log, "w") as out:
        watch = subprocess.Popen(
            [str(platform.bin / "kubectl"), f"--kubeconfig={platform.kubeconfig}", "get", "agentruns", "-n", ns, "-w"],
            stdout=out, stderr=subprocess.STDOUT, env=platform.process_env(),
        )  # fmt: skip
    try:
        # The run comes first: no tree yet, so it waits, saying why.
        ok(apply(platform, ns, run_manifest()))
        pending = run_status(platform, ns, "why-4821", pending_observed, "Pending, observed by the operator", 60)
        cond = condition(pending, "Succeeded")
        assert cond["status"] == "Unknown" and cond["reason"] == "TreeNotFound"
        assert "spec.treeRef.name" in cond["message"]

        ok(apply(platform, ns, invoice_tree()))
        r = platform.kubectl("wait", "-n", ns, "--for=condition=Succeeded", "agentrun/why-4821",
                             f"--timeout={int(RUN_DEADLINE)}s", timeout=RUN_DEADLINE + 30)  # fmt: skip
        assert r.returncode == 0, r.stderr
    finally:
        wait_for(lambda: "Succeeded" in watch_log.read_text(), 30, "the watch to print Succeeded")
        watch.terminate()
        watch.wait(10)

    run = get(platform, ns, "agentrun", "why-4821")
    status = run["status"]
    assert status["phase"] == "Succeeded"
    assert status["answer"].startswith("Invoice #4821 rejected due to missing PO number")
    assert status["currentAgent"] == "verifier" and status["steps"] == 3
    assert status["result"]["invoice_id"] == "4821" and status["result"]["verified"] is True
    assert status["plan"]["route"] == ["triage", "invoice-specialist", "verifier"]
    tree = get(platform, ns, "agenttree", "invoice")
    assert status["treeRevision"] == tree["status"]["revision"]
    assert status["workflowId"] == naming.workflow_id(ns, "why-4821", run["metadata"]["uid"])
    assert status["startedAt"] and status["completedAt"] and status["duration"]
    assert condition(run, "Failed")["status"] == "False"
    assert len(json.dumps(status)) < 8192  # a summary, not the history

    lines = watch_log.read_text().splitlines()
    assert lines[0].split() == ["NAME", "TREE", "PHASE", "AGENT", "STEPS", "AGE", "DURATION", "WAITING"]
    rows = [line.split() for line in lines[1:] if line.startswith("why-4821")]
    phases = [row[2] for row in rows if len(row) > 2 and row[2] in ("Pending", "Running", "Succeeded")]
    firsts = list(dict.fromkeys(phases))
    assert firsts == ["Pending", "Running", "Succeeded"], lines
    # A Running row has no DURATION yet (6 cells): it is empty until the run finishes.
    agents = [row[3] for row in rows if len(row) >= 6 and row[2] in ("Running", "Succeeded")]
    assert len(set(agents)) >= 2, f"the current agent never changed in the watch:\n{watch_log.read_text()}"
    print(f"\n`kubectl get agentruns -w` ({len(rows)} rows):\n" + watch_log.read_text())

    reasons = [e["reason"] for e in events_of(platform, ns, "why-4821")]
    assert {"Started", "Handoff", "Succeeded"} <= set(reasons), reasons
    assert (
        reasons.count("Handoff") >= 3
        or sum(e.get("count", 1) for e in events_of(platform, ns, "why-4821") if e["reason"] == "Handoff") >= 3
    )


def test_twenty_runs_at_once_succeed_with_few_status_patches(platform: Platform, ns: str) -> None:
    ok(apply(platform, ns, invoice_tree()))
    tree_ready(platform, ns)
    invoices = ["4790", "4821", "4822", "4823", "4824", "4825"]
    runs = [run_manifest(f"run-{i:02d}", invoices[i % len(invoices)]) for i in range(20)]
    began = time.monotonic()
    ok(apply(platform, ns, runs))

    def all_done() -> list[dict] | None:
        items = get(platform, ns, "agentruns")["items"]
        done = [r for r in items if (r.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Cancelled")]
        return items if len(done) == 20 else None

    items = wait_for(all_done, 300, "20 AgentRuns finished", interval=0.5)
    wall = time.monotonic() - began
    phases = Counter(r["status"]["phase"] for r in items)
    assert phases == {"Succeeded": 20}, {r["metadata"]["name"]: r["status"].get("message") for r in items}

    # Count what reached the API server, from its audit log (one JSON event per request).
    wait_for(lambda: len([e for e in audit_writes(platform, ns) if e["objectRef"].get("subresource") == "status"])
             >= 40, 30, "the audit log to hold the status patches")  # fmt: skip
    writes = audit_writes(platform, ns)
    status_patches = Counter(
        e["objectRef"]["name"] for e in writes if e["verb"] == "patch" and e["objectRef"].get("subresource") == "status"
    )
    other_writes = Counter(
        e["objectRef"]["name"]
        for e in writes
        if e["objectRef"].get("subresource") is None and e["userAgent"].startswith("kopf")
    )
    r = redis.Redis.from_url(platform.redis_url)
    report = []
    for run in sorted(items, key=lambda x: x["metadata"]["name"]):
        name, status = run["metadata"]["name"], run["status"]
        seconds = iso_seconds(status["completedAt"]) - iso_seconds(run["metadata"]["creationTimestamp"])
        # Running and the final write at once, progress at most once per interval (plan_write);
        # +1 for second-granularity timestamps.
        bound = 2 + math.ceil(seconds / (INTERVAL_MS / 1000))
        steps_streamed = r.xlen(naming.stream_key(status["workflowId"]))
        report.append((name, status_patches[name], bound, round(seconds, 1), steps_streamed, other_writes[name]))
        assert 1 <= status_patches[name] <= bound, report[-1]
        assert status_patches[name] < steps_streamed, f"{name}: a status patch per step ({report[-1]})"
    total = sum(status_patches.values())
    print(
        f"\n20 AgentRuns in {wall:.1f}s; status patches per run (name, patches, bound, seconds, "
        f"stream entries, kopf metadata writes):"
    )
    for row in report:
        print("  ", row)
    print(
        f"   total status patches {total} (mean {total / 20:.2f}, max {max(status_patches.values())}); "
        f"kopf metadata writes {sum(other_writes.values())}"
    )
    assert max(status_patches.values()) <= 6


def test_deleting_a_running_run_cancels_its_workflow(platform: Platform, ns: str) -> None:
    ok(apply(platform, ns, invoice_tree(held_supervisor)))
    tree_ready(platform, ns)
    ok(apply(platform, ns, run_manifest("doomed")))
    status = run_status(platform, ns, "doomed", lambda s: s.get("phase") == "Running", "Running")["status"]
    workflow_id = status["workflowId"]
    assert workflow_state(platform, workflow_id) == ("RUNNING", False)

    ok(platform.kubectl("delete", "agentrun", "doomed", "-n", ns, "--timeout=60s", timeout=90))
    assert not exists(platform, ns, "agentrun", "doomed")
    assert workflow_state(platform, workflow_id) == ("RUNNING", True)  # cancellation requested

    # Once a supervisor worker exists, the workflow sees the cancellation and ends CANCELED.
    ok(apply(platform, ns, invoice_tree()))
    wait_for(lambda: workflow_state(platform, workflow_id)[0] == "CANCELED", 90, f"workflow {workflow_id} CANCELED")


def test_editing_the_tree_during_a_run_does_not_change_that_run(platform: Platform, ns: str) -> None:
    ok(apply(platform, ns, invoice_tree(held_supervisor)))
    first = tree_ready(platform, ns)["status"]["revision"]
    ok(apply(platform, ns, run_manifest()))
    running = run_status(platform, ns, "why-4821", lambda s: s.get("phase") == "Running", "Running")
    assert running["status"]["treeRevision"] == first

    # maxSteps: 1 would end the run after triage (max_steps_reached) if the run followed the edit.
    def one_step(tree: dict) -> None:
        tree["spec"]["maxSteps"] = 1

    ok(apply(platform, ns, invoice_tree(one_step)))
    second = wait_for(
        lambda: (
            (get(platform, ns, "agenttree", "invoice").get("status") or {}).get("revision") != first
            and get(platform, ns, "agenttree", "invoice")["status"]["revision"]
        ),
        60,
        "the new revision",
    )
    assert second != first
    done = run_status(platform, ns, "why-4821", lambda s: s.get("phase") in ("Succeeded", "Failed"), "finished")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["treeRevision"] == first and done["status"]["steps"] == 3


def test_operator_killed_mid_run_converges_after_restart(platform: Platform, operator: Operator, ns: str) -> None:
    ok(apply(platform, ns, invoice_tree(held_supervisor)))
    tree_ready(platform, ns)
    ok(apply(platform, ns, run_manifest()))
    status = run_status(platform, ns, "why-4821", lambda s: s.get("phase") == "Running", "Running")["status"]
    operator.kill()
    try:
        # While the operator is dead, give the run a worker: it completes in Temporal; the CR lags behind.
        ok(platform.kubectl("scale", "deployment", "invoice-supervisor", "-n", ns, "--replicas=1"))
        wait_for(lambda: workflow_state(platform, status["workflowId"])[0] == "COMPLETED", RUN_DEADLINE,
                 "the workflow to complete while the operator is down")  # fmt: skip
        assert get(platform, ns, "agentrun", "why-4821")["status"]["phase"] == "Running"
    finally:
        operator.start()
    done = run_status(platform, ns, "why-4821", lambda s: s.get("phase") == "Succeeded", "Succeeded after restart", 60)
    assert done["status"]["answer"].startswith("Invoice #4821 rejected")
    assert done["status"]["treeRevision"] == status["treeRevision"]


def test_deletion_while_the_operator_is_down_completes_when_it_is_back(
    platform: Platform, operator: Operator, ns: str
) -> None:
    ok(apply(platform, ns, invoice_tree(held_supervisor)))
    tree_ready(platform, ns)
    ok(apply(platform, ns, run_manifest("orphan")))
    workflow_id = run_status(platform, ns, "orphan", lambda s: s.get("phase") == "Running", "Running")["status"][
        "workflowId"
    ]
    operator.kill()
    try:
        ok(platform.kubectl("delete", "agentrun", "orphan", "-n", ns, "--wait=false"))
        run = get(platform, ns, "agentrun", "orphan")
        assert run["metadata"]["deletionTimestamp"] and run["metadata"]["finalizers"] == ["agenttree.io/operator"]
    finally:
        operator.start()
    wait_for(lambda: not exists(platform, ns, "agentrun", "orphan"), 60, "the deletion to complete")
    assert workflow_state(platform, workflow_id) == ("RUNNING", True)


def test_cancel_annotation(platform: Platform, ns: str) -> None:
    ok(apply(platform, ns, invoice_tree(held_supervisor)))
    tree_ready(platform, ns)
    ok(apply(platform, ns, run_manifest("stop-me")))
    run_status(platform, ns, "stop-me", lambda s: s.get("phase") == "Running", "Running")
    ok(platform.kubectl("annotate", "agentrun", "stop-me", "-n", ns, "agenttree.io/cancel=true"))
    ok(apply(platform, ns, invoice_tree()))  # a worker to act on the cancellation
    done = run_status(platform, ns, "stop-me", lambda s: s.get("phase") == "Cancelled", "Cancelled")
    assert condition(done, "Succeeded")["reason"] == "Cancelled"


def test_finished_run_is_deleted_after_its_ttl(platform: Platform, ns: str) -> None:
    ok(apply(platform, ns, invoice_tree()))
    tree_ready(platform, ns)
    ok(apply(platform, ns, run_manifest("brief", ttlSecondsAfterFinished=3)))
    done = run_status(platform, ns, "brief", lambda s: s.get("phase") == "Succeeded", "Succeeded")
    finished = iso_seconds(done["status"]["completedAt"])
    wait_for(lambda: not exists(platform, ns, "agentrun", "brief"), 60, "the TTL deletion")
    assert time.time() >= finished + 3 - 1  # not before its TTL (1 s: timestamps have second granularity)


# --- bad manifests -----------------------------------------------------------------------------------

# Rejected at admission by the API server (schema, CEL); the expected text names the field.
ADMISSION = {
    "01-no-root.yaml": "spec.root: Required value",
    "02-root-not-defined.yaml": "spec.root: no agent named boss",
    "03-unknown-child.yaml": "spec.agents[*].children: every child must be an agent defined in spec.agents",
    "04-duplicate-agent.yaml": "spec.agents: agent names must be unique",
    "06-malformed-entrypoint.yaml": "spec.agents[1].entrypoint",
    "07-wrong-type-replicas.yaml": "spec.agents[1].worker.replicas in body must be of type integer",
    "08-bad-agent-name.yaml": "spec.agents[1].name",
    "09-unknown-field.yaml": 'unknown field "spec.agents[1].tool"',
    "10-leaf-without-behaviour.yaml": "spec.agents[1]: Required value: an agent needs an entrypoint",
    "11-tool-without-target.yaml": "spec.agents[1].tools[0]: Invalid value: a tool needs exactly one of entrypoint",
    "12-entrypoint-and-model.yaml": "spec.agents[1]: Forbidden: set either entrypoint",
    "13-autoscale-min-above-max.yaml": "spec.agents[1].worker.autoscale.minReplicas",
    "14-two-parents.yaml": "each agent has at most one parent",
    "15-unknown-agent-tool.yaml": "spec.agents[*].tools[*].agent",
    "17-run-without-treeref.yaml": "spec.treeRef is required (unless spec.forkFrom names a run",
    "18-run-empty-input.yaml": "spec.input",
    "22-context-not-object.yaml": "spec.context",
    "23-bad-metadata-name.yaml": "metadata.name",
}


@pytest.fixture(scope="module")
def bad_ns(platform: Platform, operator: Operator) -> Iterator[str]:
    with namespace(platform, operator, "opt-bad") as name:
        yield name


@pytest.mark.parametrize("file", sorted(ADMISSION))
def test_bad_manifest_rejected_at_admission(platform: Platform, operator: Operator, bad_ns: str, file: str) -> None:
    r = platform.kubectl("apply", "-n", bad_ns, "-f", str(BAD / file))
    assert r.returncode != 0, f"{file} was admitted"
    assert ADMISSION[file] in r.stderr, r.stderr
    assert operator.alive()


def test_more_bad_manifests_rejected_at_admission(platform: Platform, operator: Operator, bad_ns: str) -> None:
    cases = {
        "maxSteps as a string": (run_manifest("typed", maxSteps="3"), "spec.maxSteps in body must be of type integer"),
        "a negative timeout": (run_manifest("neg", timeoutSeconds=-1), "spec.timeoutSeconds"),
        "a tree name longer than 63": (
            invoice_tree(lambda t: t["metadata"].update(name="x" * 64)),
            "metadata.name: an AgentTree name must be",
        ),
        "an agent listing itself as a child": (
            invoice_tree(lambda t: t["spec"]["agents"][1].update(children=["triage"])),
            "spec.agents[1].children: Invalid value: an agent cannot list itself",
        ),
        "a malformed resource quantity": (
            invoice_tree(lambda t: t["spec"]["agents"][1].update(worker={"resources": {"requests": {"cpu": "lots"}}})),
            "spec.agents[1].worker.resources.requests.cpu in body should match",
        ),
        "the root as a child": (
            invoice_tree(lambda t: t["spec"]["agents"][1].update(children=["supervisor"])),
            "the root supervisor cannot be a child",
        ),
    }
    for what, (doc, expected) in cases.items():
        r = apply(platform, bad_ns, doc)
        assert r.returncode != 0, f"{what} was admitted"
        assert expected in r.stderr, f"{what}: {r.stderr[:2000]}"
    # A 2 MB input: `kubectl create` (apply would also copy it into an annotation and exceed the API
    # server's 3 MiB request limit before the schema is even checked).
    r = platform.kubectl("create", "-n", bad_ns, "-f", "-",
                         input=yaml.safe_dump(run_manifest("big", input="x" * (2 * 1024 * 1024))))  # fmt: skip
    assert r.returncode != 0 and "spec.input: Too long: may not be more than 65536 bytes" in r.stderr, r.stderr[:500]
    # The spec of a run is immutable.
    ok(apply(platform, bad_ns, run_manifest("frozen")))
    r = platform.kubectl("patch", "agentrun", "frozen", "-n", bad_ns, "--type=merge", "-p",
                         '{"spec": {"input": "something else"}}')  # fmt: skip
    assert r.returncode != 0 and "spec is immutable after creation" in r.stderr, r.stderr
    assert operator.alive()


def degraded(platform: Platform, ns: str, name: str, reason: str) -> dict:
    def check() -> dict | None:
        tree = get(platform, ns, "agenttree", name)
        cond = condition(tree, "Degraded")
        return cond if cond.get("status") == "True" and cond.get("reason") == reason else None

    return wait_for(check, 60, f"AgentTree {name} Degraded/{reason}")


def test_bad_trees_the_schema_cannot_catch_surface_as_conditions(
    platform: Platform, operator: Operator, bad_ns: str
) -> None:
    # A cycle and an unreachable agent: admitted (CEL cannot follow paths), reported by the operator.
    for file, name, expected in [
        ("05-cycle.yaml", "t", "spec.agents: cycle a -> b -> a"),
        ("16-unreachable-agent.yaml", "u", "spec.agents[2]: agent 'lonely' is not reachable from root 'sup'"),
    ]:
        doc = yaml.safe_load((BAD / file).read_text())
        doc["metadata"]["name"] = name
        ok(apply(platform, bad_ns, doc))
        cond = degraded(platform, bad_ns, name, "InvalidSpec")
        assert expected in cond["message"], cond
        assert condition(get(platform, bad_ns, "agenttree", name), "Ready")["status"] == "False"
        assert not get(platform, bad_ns, "deployments", None, "-l", f"agenttree.io/tree={name}")["items"]

    # A worker env var the Deployment API refuses (valueFrom is free-form in the CRD): the condition names
    # the agent, the other agents keep running, and nothing loops.
    def two_sources(tree: dict) -> None:
        tree["metadata"]["name"] = "envy"
        tree["spec"]["agents"][1]["worker"] = {
            "env": [
                {
                    "name": "TOKEN",
                    "valueFrom": {
                        "secretKeyRef": {"name": "s", "key": "k"},
                        "fieldRef": {"fieldPath": "metadata.name"},
                    },
                }
            ]
        }

    ok(apply(platform, bad_ns, invoice_tree(two_sources)))
    cond = degraded(platform, bad_ns, "envy", "ApplyFailed")
    assert cond["message"].startswith("spec.agents[1] (triage): Deployment envy-triage rejected"), cond
    assert "valueFrom" in cond["message"]
    wait_for(lambda: exists(platform, bad_ns, "deployment", "envy-verifier"), 30, "the other agents' Deployments")

    # A model agent whose key Secret does not exist yet: Degraded, retried, healed once it exists.
    def model_agent(tree: dict) -> None:
        tree["metadata"]["name"] = "secretive"
        tree["spec"]["agents"][1] = {
            "name": "triage",
            "model": {"name": "gpt-4o-mini", "apiKeySecretRef": {"name": "llm-key", "key": "k"}},
        }

    ok(apply(platform, bad_ns, invoice_tree(model_agent)))
    cond = degraded(platform, bad_ns, "secretive", "SecretNotFound")
    assert "spec.agents[1].model.apiKeySecretRef: Secret 'llm-key' not found" in cond["message"]
    ok(platform.kubectl("create", "secret", "generic", "llm-key", "-n", bad_ns, "--from-literal=k=v"))
    wait_for(lambda: condition(get(platform, bad_ns, "agenttree", "secretive"), "Degraded").get("status") == "False",
             90, "the tree to heal once the Secret exists")  # fmt: skip

    # A run on a tree that does not exist: Pending with the reason, as a condition.
    ok(apply(platform, bad_ns, run_manifest("lost", treeRef={"name": "nowhere"})))
    pending = run_status(platform, bad_ns, "lost", pending_observed, "Pending, observed by the operator", 60)
    assert condition(pending, "Succeeded")["reason"] == "TreeNotFound"
    # ... and a run on an invalid tree.
    ok(apply(platform, bad_ns, run_manifest("stuck", treeRef={"name": "t"})))
    pending = run_status(platform, bad_ns, "stuck", pending_observed, "Pending, observed by the operator", 60)
    assert condition(pending, "Succeeded")["reason"] == "TreeInvalid"
    assert "spec.agents: cycle" in condition(pending, "Succeeded")["message"]
    assert operator.alive() and operator.healthy()
