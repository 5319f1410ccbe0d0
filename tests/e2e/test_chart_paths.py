"""The chart's paths a new user takes, on the local platform's real API server and PostgreSQL.

- The README's order: `kubectl apply -f crds/`, then `helm install`. A plain install is refused
  (the CRDs lack Helm's ownership metadata: "invalid ownership metadata"); with
  `--set crds.install=false`, as the README says, it installs.
- History retention: that release has `retention.enabled=true` in a namespace enforcing Pod Security
  `restricted`. `kubectl create job --from=cronjob/...` makes the Job controller create the purge
  pod, which the API server admits under `restricted`. kwok (no kubelet) completes a Job's pod at
  once, so the CronJob's container command, as the live object spells it, runs as a local process
  with its env resolved from the Secret it references; the history database loses the run that
  finished 40 days ago (with its steps and audit rows) and keeps the one that finished yesterday
  and the one still running.

The history database is a fresh database on the platform's PostgreSQL, so a 30-day purge touches
nothing of anyone else's. Namespaces are `prom-chart-*` (no operator is involved: operator.replicas=0).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import yaml
from agent_tree_worker.store import HistoryStore
from operator_process import apply_crds, ok
from platformlib import REPO, Platform, wait_for

pytestmark = pytest.mark.e2e

CHART = REPO / "charts" / "agent-tree"


@pytest.fixture(scope="module")
def helm(platform: Platform, tmp_path_factory: pytest.TempPathFactory):
    proc = subprocess.run([str(REPO / "hack" / "build-helm.sh")], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"hack/build-helm.sh could not provide helm:\n{proc.stderr[-3000:]}", pytrace=False)
    binary = proc.stdout.strip().splitlines()[-1]
    home = tmp_path_factory.mktemp("helm-home")
    env = {**platform.process_env(), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([binary, *args], capture_output=True, text=True, timeout=300, env=env)

    return run


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="module")
def history_db(platform: Platform) -> Iterator[str]:
    """A fresh database on the platform's PostgreSQL (its URL), dropped afterwards."""
    name = f"prom_retention_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(platform.database_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(platform.database_url, name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class Release:
    name: str
    namespace: str
    fullname: str


@pytest.fixture(scope="module")
def release(platform: Platform, helm, history_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    """The README's order: the repo's CRDs by kubectl, then the chart (crds.install=false), retention on."""
    suffix = uuid.uuid4().hex[:6]
    rel = Release(name=f"prom-{suffix}", namespace=f"prom-chart-{suffix}", fullname=f"prom-{suffix}-agent-tree")
    apply_crds(platform)  # `kubectl apply -f crds/` + wait until Established
    ok(platform.kubectl("create", "namespace", rel.namespace))
    ok(platform.kubectl("label", "namespace", rel.namespace, "pod-security.kubernetes.io/enforce=restricted",
                        "pod-security.kubernetes.io/enforce-version=latest"))  # fmt: skip
    ok(platform.kubectl("-n", rel.namespace, "create", "secret", "generic", "history-db",
                        f"--from-literal=dsn={history_db}"))  # fmt: skip
    values = {
        "operator": {"replicas": 0},
        "postgresql": {"existingSecret": "history-db", "existingSecretKey": "dsn"},
        "retention": {"enabled": True, "olderThan": "30d"},
        "api": {"enabled": False},  # the API in a restricted namespace: tests/e2e/test_helm_api.py
    }
    values_file = tmp_path_factory.mktemp("values") / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    plain = f"prom-plain-{suffix}"
    try:
        # A plain install after `kubectl apply -f crds/`: Helm refuses to adopt the CRDs.
        refused = helm("install", plain, str(CHART), "-n", rel.namespace, "-f", str(values_file))
        assert refused.returncode != 0, "helm install adopted CRDs applied by kubectl without being asked to"
        assert "invalid ownership metadata" in refused.stderr, refused.stderr
        assert "customresourcedefinitions" in refused.stderr.lower() or "CustomResourceDefinition" in refused.stderr
        # The README's command.
        installed = helm("install", rel.name, str(CHART), "-n", rel.namespace, "-f", str(values_file),
                         "--set", "crds.install=false")  # fmt: skip
        assert installed.returncode == 0, installed.stderr
        yield rel
    finally:
        helm("uninstall", plain, "-n", rel.namespace)
        helm("uninstall", rel.name, "-n", rel.namespace, "--wait", "--timeout", "60s")
        platform.kubectl("delete", "namespace", rel.namespace, "--wait=false")


def run_row(workflow_id: str, ns: str) -> dict[str, Any]:
    return {"workflow_id": workflow_id, "run_id": f"r-{workflow_id}", "namespace": ns, "name": workflow_id,
            "uid": uuid.uuid4().hex, "tree": "invoice", "revision": "rev1", "root": "supervisor",
            "input": "Why was invoice #4821 rejected?", "context": {}}  # fmt: skip


async def seed(url: str, ns: str) -> None:
    """Three runs with steps and audit rows: finished 40 days ago, finished yesterday, still running."""
    store = HistoryStore(url, retry_seconds=5)
    try:
        await store.migrate()
        for wid in ("old", "recent", "running"):
            await store.start_run(run_row(wid, ns), actor="test")
            await store.write_steps(wid, [
                {"ord": [1], "type": "agent_start", "agent": "supervisor", "data": {"type": "agent_start"}},
                {"ord": [2], "type": "agent_end", "agent": "supervisor", "data": {"type": "agent_end", "status": "ok"}},
            ])  # fmt: skip
        for wid in ("old", "recent"):
            await store.finish_run(wid, {"status": "completed", "answer": "x", "steps": 2}, actor="test")
    finally:
        await store.close()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("UPDATE runs SET finished_at = now() - interval '40 days' WHERE workflow_id = 'old'")
        await conn.execute("UPDATE runs SET finished_at = now() - interval '1 day' WHERE workflow_id = 'recent'")
    finally:
        await conn.close()


async def counts(url: str) -> dict[str, dict[str, int]]:
    conn = await asyncpg.connect(url)
    try:
        out: dict[str, dict[str, int]] = {}
        for table, column in (("runs", "workflow_id"), ("steps", "run_id"), ("audit_log", "run_id")):
            rows = await conn.fetch(f"SELECT {column} AS id, count(*) AS n FROM {table} GROUP BY {column}")
            out[table] = {r["id"]: r["n"] for r in rows}
        return out
    finally:
        await conn.close()


def test_readme_order_installs_the_chart_without_its_crds(platform: Platform, release: Release, helm) -> None:
    """The refusal of a plain install and the success of the README's one are asserted by the fixture."""
    status = helm("status", release.name, "-n", release.namespace, "-o", "json")
    assert json.loads(ok(status))["info"]["status"] == "deployed"
    crd = json.loads(ok(platform.kubectl("get", "crd", "agentruns.agenttree.io", "-o", "json")))
    owner = (crd["metadata"].get("annotations") or {}).get("meta.helm.sh/release-name")
    assert owner != release.name, "the release took the CRDs although crds.install=false"
    cron = json.loads(ok(platform.kubectl("-n", release.namespace, "get", "cronjob",
                                          f"{release.fullname}-retention", "-o", "json")))  # fmt: skip
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_retention_job_purges_old_history_and_keeps_the_rest(
    platform: Platform, release: Release, history_db: str, tmp_path: Path
) -> None:
    asyncio.run(seed(history_db, release.namespace))
    before = asyncio.run(counts(history_db))
    assert set(before["runs"]) == {"old", "recent", "running"} and before["steps"]["old"] == 2
    assert before["audit_log"]["old"] == 2  # run_started, run_finished

    # The Job the CronJob makes: its pod is admitted under Pod Security `restricted`.
    job = f"purge-{uuid.uuid4().hex[:6]}"
    cron_name = f"{release.fullname}-retention"
    ok(platform.kubectl("-n", release.namespace, "create", "job", job, f"--from=cronjob/{cron_name}"))

    def pod() -> dict[str, Any] | None:
        items = json.loads(ok(platform.kubectl("-n", release.namespace, "get", "pods", "-l", f"job-name={job}",
                                               "-o", "json")))["items"]  # fmt: skip
        return items[0] if items else None

    try:
        admitted = wait_for(pod, 60, f"the pod of Job {job}")
    except BaseException:
        r = platform.kubectl("-n", release.namespace, "get", "events", "--sort-by=.lastTimestamp")
        print(r.stdout + r.stderr)
        raise
    (container,) = admitted["spec"]["containers"]
    assert container["command"] == ["agent-tree", "db", "purge", "--older-than", "30d"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True

    # kwok completes a Job's pod at once (no kubelet here), so the container's command runs as a local
    # process, exactly as the live CronJob spells it, with its env resolved from the Secret it names.
    cron = json.loads(ok(platform.kubectl("-n", release.namespace, "get", "cronjob", cron_name, "-o", "json")))
    (spec,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(tmp_path)}
    for entry in spec["env"]:
        ref = entry["valueFrom"]["secretKeyRef"]
        secret = json.loads(ok(platform.kubectl("-n", release.namespace, "get", "secret", ref["name"], "-o", "json")))
        env[entry["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    proc = subprocess.run(spec["command"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"{' '.join(spec['command'])}: {proc.stdout.strip()}")
    assert proc.stdout.startswith("deleted: 1 runs, 2 steps"), proc.stdout

    after = asyncio.run(counts(history_db))
    assert set(after["runs"]) == {"recent", "running"}
    assert "old" not in after["steps"] and "old" not in after["audit_log"]
    assert after["steps"] == {"recent": 2, "running": 2}
    assert after["audit_log"]["recent"] == 2 and after["audit_log"]["running"] == 1
