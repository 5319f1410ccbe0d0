"""The local platform itself (hack/): a real API server with CRDs, status
subresource and printer columns; Deployments whose pods become real local
processes; Temporal, PostgreSQL and Redis; the platform CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
import redis.exceptions
from platformlib import FAKE_NODE, REPO, Platform, procs, wait_for
from temporalio import activity, workflow
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from agent_tree.contract.temporal import connect

pytestmark = pytest.mark.e2e

PLATFORM = str(REPO / "hack" / "platform")


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, f"kubectl {r.args[2:]} failed ({r.returncode}):\n{r.stderr}"
    return r.stdout


@pytest.fixture
def namespace(platform: Platform) -> Iterator[str]:
    ns = f"pt-{uuid.uuid4().hex[:8]}"
    ok(platform.kubectl("create", "namespace", ns))
    # pods need the namespace's default ServiceAccount (ServiceAccount admission)
    wait_for(lambda: platform.kubectl("get", "serviceaccount", "default", "-n", ns).returncode == 0, 30,
             f"serviceaccount default in {ns}")  # fmt: skip
    yield ns
    platform.kubectl("delete", "namespace", ns, "--wait=false")


# --- (a) CRD: structural schema, status subresource, printer column ------------

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.platformtest.agenttree.io}
spec:
  group: platformtest.agenttree.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Phase, type: string, jsonPath: .status.phase}
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1, maximum: 10}
              color: {type: string, enum: [red, blue]}
          status:
            type: object
            properties:
              phase: {type: string}
"""


def widget(name: str, spec: dict) -> str:
    return json.dumps({"apiVersion": "platformtest.agenttree.io/v1", "kind": "Widget",
                       "metadata": {"name": name}, "spec": spec})  # fmt: skip


def test_crd_schema_status_subresource_and_printer_column(platform: Platform, namespace: str) -> None:
    k = platform.kubectl
    ok(k("apply", "-f", "-", input=WIDGET_CRD))
    ok(k("wait", "--for=condition=Established", "crd/widgets.platformtest.agenttree.io", "--timeout=60s"))

    # The API server's own validation messages (not kubectl's: --validate=false).
    bad = k("create", "-n", namespace, "--validate=false", "-f", "-", input=widget("bad", {"size": 42}))
    assert bad.returncode != 0
    assert 'The Widget "bad" is invalid' in bad.stderr, bad.stderr
    assert "spec.size: Invalid value: 42: spec.size in body should be less than or equal to 10" in bad.stderr, (
        bad.stderr
    )
    bad = k("create", "-n", namespace, "--validate=false", "-f", "-", input=widget("bad", {"color": "green"}))
    assert bad.returncode != 0
    assert "spec.size: Required value" in bad.stderr, bad.stderr
    assert 'spec.color: Unsupported value: "green": supported values: "red", "blue"' in bad.stderr, bad.stderr
    assert k("get", "widget", "bad", "-n", namespace).returncode != 0  # nothing was stored

    ok(k("create", "-n", namespace, "-f", "-", input=widget("good", {"size": 3, "color": "red"})))
    # status through the main resource is ignored (status subresource) ...
    ok(k("patch", "widget", "good", "-n", namespace, "--type=merge", "-p", '{"status": {"phase": "Sneaky"}}'))
    assert "phase" not in json.loads(ok(k("get", "widget", "good", "-n", namespace, "-o", "json"))).get("status", {})
    # ... and written through /status
    ok(k("patch", "widget", "good", "-n", namespace, "--subresource=status", "--type=merge",
         "-p", '{"status": {"phase": "Shiny"}}'))  # fmt: skip
    table = ok(k("get", "widget", "good", "-n", namespace)).splitlines()
    assert table[0].split() == ["NAME", "PHASE", "SIZE"], table
    assert table[1].split()[:3] == ["good", "Shiny", "3"], table

    # the audit log records the status patch (the operator's tests count them this way)
    def status_patches() -> list[dict]:
        return [e for e in platform.audit_events()
                if e.get("objectRef", {}).get("resource") == "widgets"
                and e["objectRef"].get("namespace") == namespace
                and e["objectRef"].get("subresource") == "status" and e.get("verb") == "patch"]  # fmt: skip

    events = wait_for(status_patches, 10, "the status patch in the audit log")
    assert len(events) == 1 and events[0]["objectRef"]["name"] == "good"
    assert events[0]["responseStatus"]["code"] == 200


# --- (b) Deployments -> pods on the fake node -> local processes -------------------

SLEEPER = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sleeper
  labels: {app.kubernetes.io/part-of: agent-tree}
spec:
  replicas: 3
  selector: {matchLabels: {app: sleeper}}
  template:
    metadata:
      labels: {app: sleeper, app.kubernetes.io/part-of: agent-tree, agenttree.io/agent: sleepy}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: main
        image: agent-tree:0.1.0
        command: [python, -c]
        args:
        - |
          import os, time
          print("env:", os.environ["FROM_VALUE"], os.environ["FROM_SECRET"], os.environ["FROM_CM"],
                os.environ["FROM_FIELD"], os.environ["FROM_LABEL"], os.environ["AGENT_TREE_POD_NAME"], flush=True)
          time.sleep(3600)  # sleeper-marker
        env:
        - {name: FROM_VALUE, value: plain}
        - {name: FROM_SECRET, valueFrom: {secretKeyRef: {name: sleeper, key: token}}}
        - {name: FROM_CM, valueFrom: {configMapKeyRef: {name: sleeper, key: mode}}}
        - {name: FROM_FIELD, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        - {name: FROM_LABEL, valueFrom: {fieldRef: {fieldPath: "metadata.labels['agenttree.io/agent']"}}}
"""


def running_pods(platform: Platform, ns: str) -> list[dict]:
    pods = json.loads(ok(platform.kubectl("get", "pods", "-n", ns, "-l", "app=sleeper", "-o", "json")))["items"]
    return pods


def processes(platform: Platform, ns: str) -> dict[str, dict]:
    return {k.split("/", 1)[1]: v for k, v in platform.pod_processes().items() if k.startswith(f"{ns}/")}


def is_sleeper(pid: int) -> bool:
    try:
        return b"sleeper-marker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_deployment_pods_become_local_processes(platform: Platform, namespace: str) -> None:
    k, ns = platform.kubectl, namespace
    ok(k("create", "secret", "generic", "sleeper", "-n", ns, "--from-literal=token=s3cret"))
    ok(k("create", "configmap", "sleeper", "-n", ns, "--from-literal=mode=fast"))
    ok(k("apply", "-n", ns, "-f", "-", input=SLEEPER))

    def three_running() -> bool:
        pods = running_pods(platform, ns)
        return (len(pods) == 3 and all(p["status"].get("phase") == "Running" and p["spec"].get("nodeName") == FAKE_NODE
                                       and not p["metadata"].get("deletionTimestamp") for p in pods))  # fmt: skip

    wait_for(three_running, 60, "3 Running pods on the fake node")
    names = {p["metadata"]["name"] for p in running_pods(platform, ns)}
    procs_ = wait_for(lambda: (pr := processes(platform, ns)) and set(pr) == names and pr, 30,
                      "one process per Running pod")  # fmt: skip
    assert len(procs_) == 3
    assert all(is_sleeper(p["pid"]) for p in procs_.values()), procs_

    # env resolved from value, secretKeyRef, configMapKeyRef, fieldRef
    for name in names:
        log = platform.logs / "pods" / f"{ns}_{name}.log"
        line = f"env: plain s3cret fast {ns} sleepy {name}"
        wait_for(lambda log=log, line=line: log.exists() and line in log.read_text(), 20, f"{line!r} in {log}")

    # a killed process comes back, as a restarted container would
    victim, before = sorted(procs_.items())[0]
    os.kill(before["pid"], signal.SIGKILL)
    after = wait_for(lambda: (p := processes(platform, ns).get(victim)) and p["pid"] != before["pid"] and p, 30,
                     f"the process of {victim} restarted")  # fmt: skip
    assert after["restarts"] >= 1 and is_sleeper(after["pid"])
    assert not procs.alive(before["pid"], before["start"])

    # scale to 1: exactly one pod, exactly one process
    all_pids = {(p["pid"], p["start"]) for p in processes(platform, ns).values()}
    ok(k("scale", "deployment", "sleeper", "-n", ns, "--replicas=1"))
    wait_for(lambda: len(running_pods(platform, ns)) == 1, 60, "1 pod left after scaling to 1")
    remaining = wait_for(lambda: len(pr := processes(platform, ns)) == 1 and pr, 30, "1 process left")
    ((pod_name, proc),) = remaining.items()
    assert [p["metadata"]["name"] for p in running_pods(platform, ns)] == [pod_name]
    assert sum(procs.alive(pid, st) for pid, st in all_pids) == 1, "the other processes must have ended"

    # deleting the Deployment garbage-collects its ReplicaSet and pods; the process ends
    assert json.loads(ok(k("get", "replicasets", "-n", ns, "-l", "app=sleeper", "-o", "json")))["items"]
    ok(k("delete", "deployment", "sleeper", "-n", ns, "--wait=false"))

    def collected() -> bool:
        rs = json.loads(ok(k("get", "replicasets", "-n", ns, "-o", "json")))["items"]
        return not rs and not running_pods(platform, ns)

    wait_for(collected, 60, "the ReplicaSet and pods garbage-collected")
    wait_for(lambda: not processes(platform, ns) and not procs.alive(proc["pid"], proc["start"]), 30,
             "the last process ended")  # fmt: skip


# --- (c) Temporal, PostgreSQL, Redis ------------------------------------------------


@activity.defn
async def shout(text: str) -> str:
    return text.upper() + "!"


@workflow.defn
class ShoutWorkflow:
    @workflow.run
    async def run(self, text: str) -> str:
        return await workflow.execute_activity(shout, text, start_to_close_timeout=timedelta(seconds=30))


async def test_temporal_workflow_completes(platform: Platform) -> None:
    client = await connect(platform.temporal_address)
    queue = f"platform-test-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[ShoutWorkflow], activities=[shout],
                      workflow_runner=UnsandboxedWorkflowRunner()):  # fmt: skip
        result = await client.execute_workflow(ShoutWorkflow.run, "hello", id=queue, task_queue=queue,
                                               execution_timeout=timedelta(seconds=60))  # fmt: skip
    assert result == "HELLO!"
    desc = await client.get_workflow_handle(queue).describe()
    assert desc.status is not None and desc.status.name == "COMPLETED"


async def test_postgres_answers(platform: Platform) -> None:
    conn = await asyncpg.connect(platform.database_url, timeout=10)
    try:
        assert await conn.fetchval("select 1") == 1
        assert await conn.fetchval("select current_database()") == "agent_tree"
    finally:
        await conn.close()


async def test_redis_stream_round_trip(platform: Platform) -> None:
    r = aioredis.from_url(platform.redis_url, decode_responses=True)
    key = f"agent-tree:run:platform-test-{uuid.uuid4().hex[:8]}"
    try:
        entry_id = await r.xadd(key, {"kind": "step", "n": "1"}, maxlen=100, approximate=True)
        reply = await r.xread({key: "0-0"}, count=10, block=1000)
        assert reply == [[key, [(entry_id, {"kind": "step", "n": "1"})]]]
    finally:
        await r.delete(key)
        await r.aclose()


# --- the platform CLI -----------------------------------------------------------------


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PLATFORM, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})  # fmt: skip


def test_up_is_idempotent_and_status_is_healthy(platform: Platform) -> None:
    r = run("up")
    assert r.returncode == 0, r.stderr
    assert "started" not in r.stderr and r.stderr.count("already up") == 9, r.stderr
    r = run("status")
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("etcd", "apiserver", "controller-manager", "scheduler", "kwok", "podrunner", "temporal",
                 "postgres", "redis"):  # fmt: skip
        (line,) = [x for x in r.stdout.splitlines() if x.split()[:1] == [name]]
        assert line.rstrip().endswith("healthy") and "UNHEALTHY" not in line, line


async def test_restart_postgres_and_stop_start_redis_keep_their_urls(tmp_path: Path) -> None:
    # A private PostgreSQL + Redis (no Kubernetes), not to disturb whoever shares the running platform.
    d = str(tmp_path / "platform")
    r = run("--dir", d, "up", "postgres", "redis")
    assert r.returncode == 0, r.stderr
    try:
        before = Platform(Path(d))
        r = run("--dir", d, "restart", "postgres")
        assert r.returncode == 0, r.stderr
        assert "postgres            started" in r.stderr, r.stderr
        assert Platform(Path(d)).database_url == before.database_url
        conn = await asyncpg.connect(before.database_url, timeout=10)
        assert await conn.fetchval("select current_database()") == "agent_tree"
        await conn.close()

        r = run("--dir", d, "stop", "redis")
        assert r.returncode == 0, r.stderr
        client = aioredis.from_url(before.redis_url)
        with pytest.raises(redis.exceptions.ConnectionError):
            await client.ping()
        await client.aclose()
        rows = {row["component"]: row for row in json.loads(run("--dir", d, "status", "--json").stdout)}
        assert not rows["redis"]["running"] and rows["postgres"]["healthy"], rows
        r = run("--dir", d, "start", "redis")
        assert r.returncode == 0, r.stderr
        assert Platform(Path(d)).redis_url == before.redis_url
        client = aioredis.from_url(before.redis_url)
        assert await client.ping() is True
        await client.aclose()
    finally:
        assert run("--dir", d, "down", "--purge").returncode == 0


def test_failing_component_names_itself_and_its_log(tmp_path: Path) -> None:
    broken = tmp_path / "redis-server"
    broken.write_text("#!/bin/sh\necho 'boom: cannot start' >&2\nexit 3\n")
    broken.chmod(0o755)
    d = tmp_path / "platform"
    r = run("--dir", str(d), "up", "redis", env={"AGENT_TREE_REDIS_SERVER": str(broken)}, timeout=120)
    assert r.returncode == 1
    assert "redis exited while starting" in r.stderr, r.stderr
    assert f"log: {d / 'logs' / 'redis.log'}" in r.stderr and "boom: cannot start" in r.stderr, r.stderr

    # a working one in the same directory; `down` leaves no process behind
    r = run("--dir", str(d), "up", "redis", timeout=120)
    assert r.returncode == 0, r.stderr
    pid = json.loads((d / "state.json").read_text())["components"]["redis"]["pid"]
    assert procs.alive(pid)
    r = run("--dir", str(d), "down", timeout=120)
    assert r.returncode == 0, r.stderr
    assert not procs.alive(pid)
