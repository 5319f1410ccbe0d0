"""The REST API under load: many SSE clients on live runs, and history pages with 100,000 runs.

Usage (against a running local platform, ``hack/platform up``)::

    .venv/bin/python bench/bench_api.py [--quick] [--json FILE] [--keep]

Sizes (``--quick`` in parentheses; each can be set with its option): ``--runs 20`` (4) live runs,
``--clients 500`` (40) SSE clients spread evenly over them, ``--steps 200`` (30) steps per run at
``--rate 10`` (20) steps/s each, ``--client-procs 4`` (1) client processes; ``--history-runs 100000``
(2000) runs in the history over 10 namespaces with ``--filler-steps 10`` (2) steps each, one run of
``--long-steps 5000`` (500) steps, ``--requests 500`` (20) requests per measured case.

Set-up: a SEPARATE PostgreSQL database (``bch_api_<id>``, migrated by the workers' migrations, dropped
at the end) that ``agent-tree api`` (a real process) reads through ``AGENT_TREE_DATABASE_URL``, and
the platform's Redis; a Kubernetes namespace ``bch-api-<id>`` holding the live runs' AgentRuns (no
operator watches ``bch-*``: nothing starts them) and a ServiceAccount allowed ``get``/``list`` on
agentruns, whose token (``kubectl create token``) every request carries.

1. **Live**: the SSE clients (bench_api_live.py ``clients``: asyncio + httpx, one stream each) follow
   the runs while a publisher process writes their steps as workers do (PostgreSQL through the
   worker's ``HistoryStore``, then XADD through its ``StepStream``), with its send time in each step:
   NOT model calls. Every client must get every step exactly once and in order, then ``end``: any
   miss, duplicate or reordering fails the bench (exit status 1). Delivery lag per step = arrival
   at the client - send time; baseline in the same script on the same runs: one direct Redis
   ``XREAD`` reader per run (bench_api_live.py ``xread``). Also the API process's RSS and CPU, and
   the client processes' own CPU and event-loop delay (to show they were not the bottleneck).
2. **History**: list-runs (first page, a deep page by cursor, tree and phase filters) and the long
   run's steps (first page, a deep page) through the API, against the same SQL on asyncpg
   (bench_api_queries.py), with EXPLAIN ANALYZE of each SQL.

Prints the JSON report (also written to ``--json``) and a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, ClassVar

import bench_api_queries as queries  # same folder: python puts it on sys.path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FULL = {"runs": 20, "clients": 500, "steps": 200, "rate": 10.0, "client_procs": 4,
        "history_runs": 100_000, "filler_steps": 10, "long_steps": 5000, "requests": 500}  # fmt: skip
QUICK = {"runs": 4, "clients": 40, "steps": 30, "rate": 20.0, "client_procs": 1,
         "history_runs": 2000, "filler_steps": 2, "long_steps": 500, "requests": 20}  # fmt: skip
TICK = os.sysconf("SC_CLK_TCK")


def percentiles(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    if not s:
        return {"n": 0}
    return {"n": len(s), "p50_ms": s[len(s) // 2] * 1000, "p99_ms": s[min(len(s) - 1, int(len(s) * 0.99))] * 1000,
            "max_ms": s[-1] * 1000}  # fmt: skip


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def run_wait(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of all threads of ``pid`` (schedstat)."""
    on = wait = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue
        on, wait = on + int(fields[0]), wait + int(fields[1])
    return on / 1e9, wait / 1e9


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def cpu_pressure() -> float:
    """Seconds since boot during which some runnable task waited for a CPU (PSI; 0 without it)."""
    try:
        some = Path("/proc/pressure/cpu").read_text().split("\n", 1)[0]
    except OSError:
        return 0.0
    return int(some.rsplit("total=", 1)[1]) / 1e6


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class ApiProcess:
    """``agent-tree api`` as a process on free ports (its log in ``log``)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.port, self.metrics_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        command = [str(Path(sys.executable).parent / "agent-tree"), "api", "--host", "127.0.0.1",
                   "--port", str(self.port), "--metrics-port", str(self.metrics_port)]  # fmt: skip
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(command, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        wait_for(self.ready, 60, f"the API's /readyz (log: {self.log})")

    def ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, f"the API exited; log: {self.log}"
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{}"):
                    return float(line.rsplit(" ", 1)[1])
        return float("nan")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Child:
    """One role of bench_api_live.py as a process: ``ready`` on its stdout, ``go`` on its stdin."""

    started: ClassVar[list[subprocess.Popen]] = []  # every one, so that main() can stop those left running

    def __init__(self, role: str, config: dict[str, Any], workdir: Path, env: dict[str, str], index: int = 0):
        self.cfg_path, self.out = workdir / f"{role}-{index}.json", workdir / f"{role}-{index}-out.json"
        self.cfg_path.write_text(json.dumps(config))
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "bench_api_live.py"), role, str(self.cfg_path), str(self.out)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
        )  # fmt: skip
        Child.started.append(self.proc)
        self.role = role

    def wait_ready(self, timeout: float) -> None:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not line or line[0].strip() != "ready":
            self.proc.kill()
            raise RuntimeError(f"{self.role} process not ready after {timeout:.0f}s (exit {self.proc.poll()})")

    def go(self) -> None:
        self.proc.stdin.write("go\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def result(self, timeout: float) -> dict[str, Any]:
        code = self.proc.wait(timeout)
        if code != 0:
            raise RuntimeError(f"{self.role} process failed with exit status {code}")
        return json.loads(self.out.read_text())


# --- set-up -------------------------------------------------------------------------------------------


def kube_setup(platform: Any, namespace: str, runs: int) -> tuple[str, list[dict[str, str]]]:
    """The namespace, a reader ServiceAccount (get/list agentruns) and its token, and ``runs`` AgentRuns."""
    from agent_tree import naming

    def ok(*args: str, input: str | None = None) -> str:
        r = platform.kubectl(*args, input=input)
        if r.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {r.stderr}")
        return r.stdout

    if platform.kubectl("get", "crd", "agentruns.agenttree.io").returncode != 0:
        ok("apply", "-f", str(REPO / "crds"))
        ok("wait", "--for=condition=Established", "crd/agentruns.agenttree.io", "--timeout=60s")
    ok("create", "namespace", namespace)
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bch-reader"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "bch-reader"},
         "rules": [{"apiGroups": [naming.GROUP], "resources": ["agentruns"], "verbs": ["get", "list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "bch-reader"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "bch-reader"},
         "subjects": [{"kind": "ServiceAccount", "name": "bch-reader", "namespace": namespace}]},
    ] + [
        {"apiVersion": naming.API_VERSION, "kind": "AgentRun", "metadata": {"name": f"bch-live-{k:02d}"},
         "spec": {"treeRef": {"name": "bch-tree"}, "input": "Why was invoice #4821 rejected?"}}
        for k in range(runs)
    ]  # fmt: skip
    ok("apply", "-n", namespace, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    token = ok("create", "token", "bch-reader", "-n", namespace, "--duration=2h").strip()
    listed = json.loads(ok("get", "agentruns", "-n", namespace, "-o", "json"))["items"]
    out = []
    for obj in sorted(listed, key=lambda o: o["metadata"]["name"]):
        meta = obj["metadata"]
        if meta.get("finalizers") or (obj.get("status") or {}).get("workflowId"):
            raise RuntimeError(f"AgentRun {meta['name']} was picked up by an operator: nothing may watch {namespace}")
        out.append({"name": meta["name"], "uid": meta["uid"],
                    "workflow_id": naming.workflow_id(namespace, meta["name"], meta["uid"])})  # fmt: skip
    return token, out


async def create_database(admin_url: str, name: str) -> str:
    import asyncpg
    from agent_tree_worker.migrate import migrate

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url


async def drop_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# --- 1. live: SSE clients vs direct XREAD readers -------------------------------------------------------


def check_delivery(states: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    """Every client got steps 1..N exactly once, in order, and then ``end``; the first failures named."""
    expected = [str(i) for i in range(1, steps + 1)]
    failures = []
    for s in states:
        ids = s["ids"]
        if ids == expected and s["end"] is not None and not s["error"]:
            continue
        failures.append({
            "run": s["run"], "received": len(ids), "distinct": len(set(ids)), "duplicates": len(ids) - len(set(ids)),
            "in_order": ids == sorted(ids, key=int), "missing": len(set(expected) - set(ids)),
            "end": s["end"] is not None, "error": s["error"],
        })  # fmt: skip
    return {"clients": len(states), "complete": len(states) - len(failures), "failures": failures[:10],
            "failed": len(failures), "events": sum(len(s["ids"]) for s in states)}  # fmt: skip


def live(size: dict[str, Any], api: ApiProcess, env: dict[str, str], base: dict[str, Any], workdir: Path):
    runs = base["runs"]
    follow = [runs[i % len(runs)]["name"] for i in range(size["clients"])]
    procs = max(1, size["client_procs"])
    deadline = 10 * size["steps"] / size["rate"] + 300  # generous: the machine may be shared
    cfg = {**base, "steps": size["steps"], "rate": size["rate"], "deadline_s": deadline}
    publisher = Child("publish", cfg, workdir, env)
    publisher.wait_ready(120)  # the runs' history rows exist: the runs are Running
    assert api.proc is not None
    pid = api.proc.pid
    report: dict[str, Any] = {"api_rss_before_mib": rss_mib(pid)}
    connect_began = time.monotonic()
    clients = [Child("clients", {**cfg, "follow": follow[i::procs]}, workdir, env, i) for i in range(procs)]
    for c in clients:
        c.wait_ready(600)
    report["connect_s"] = time.monotonic() - connect_began
    report["open_streams"] = api.metric("agent_tree_api_open_streams")
    reader = Child("xread", cfg, workdir, env)
    reader.wait_ready(120)
    report["api_rss_connected_mib"] = rss_mib(pid)
    rss: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.25) and api.proc is not None and api.proc.poll() is None:
            rss.append(rss_mib(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0, (busy0, total0), sched0, psi0 = proc_cpu(pid), machine_busy(), run_wait(pid), cpu_pressure()
    began = time.monotonic()
    publisher.go()
    published = publisher.result(deadline)
    got = [c.result(deadline) for c in clients]
    baseline = reader.result(deadline)
    wall = time.monotonic() - began
    cpu1, (busy1, total1), sched1, psi1 = proc_cpu(pid), machine_busy(), run_wait(pid), cpu_pressure()
    stop.set()
    sampler.join()
    states = [s for g in got for s in g["clients"]]
    api_lags = [lag for s in states for lag in s["lags"]]
    base_lags = [lag for s in baseline["clients"] for lag in s["lags"]]
    report.update(
        publisher=published,
        delivery=check_delivery(states, size["steps"]),
        baseline_delivery=check_delivery(baseline["clients"], size["steps"]),
        lag_api=percentiles(api_lags),
        lag_xread=percentiles(base_lags),
        live_wall_s=wall,
        api_cpu_s=cpu1 - cpu0,
        api_cores=(cpu1 - cpu0) / wall,
        api_rss_peak_mib=max(rss or [0.0]),
        api_waiting_for_cpu_s=sched1[1] - sched0[1],
        machine_busy=(busy1 - busy0) / (total1 - total0),
        machine_cpu_pressure=(psi1 - psi0) / wall,
        client_procs=[
            {
                "clients": len(g["clients"]),
                "cpu_s": g["cpu_s"],
                "wall_s": g["wall_s"],
                "cores": g["cpu_s"] / g["wall_s"],
                "loop_delay": g["loop_delay"],
                "connect_s": g["connect_s"],
            }
            for g in got
        ],
        xread_proc={
            "cpu_s": baseline["cpu_s"],
            "cores": baseline["cpu_s"] / baseline["wall_s"],
            "loop_delay": baseline["loop_delay"],
        },
        api_metric_delivered=api.metric("agent_tree_api_event_delivery_lag_seconds_count"),
        api_metric_lag_mean_ms=1000
        * api.metric("agent_tree_api_event_delivery_lag_seconds_sum")
        / max(1.0, api.metric("agent_tree_api_event_delivery_lag_seconds_count")),
    )
    for q in ("p50", "p99"):
        api_ms, xread_ms = report["lag_api"].get(f"{q}_ms"), report["lag_xread"].get(f"{q}_ms")
        report[f"ratio_{q}"] = api_ms / xread_ms if api_ms and xread_ms else float("nan")
    return report


# --- main -----------------------------------------------------------------------------------------------


def main(args: argparse.Namespace, report: dict[str, Any]) -> dict[str, Any]:
    """Run the bench, filling ``report`` as it goes (so a failure still leaves what was measured)."""
    sys.path.insert(0, str(REPO / "hack"))
    import platformlib

    size = {**(QUICK if args.quick else FULL), **{k: v for k, v in vars(args).items() if k in FULL and v is not None}}
    platform, _started = platformlib.ensure_up()
    os.environ.update(platform.env)
    bench_id = uuid.uuid4().hex[:6]
    namespace, database = f"bch-api-{bench_id}", f"bch_api_{bench_id}"
    workdir = Path(tempfile.mkdtemp(prefix=f"bch-api-{bench_id}-"))
    report.update(size=size, namespace=namespace, database=database, workdir=str(workdir))
    api: ApiProcess | None = None
    try:
        url = asyncio.run(create_database(platform.database_url, database))
        print(f"{namespace}: Kubernetes objects, {size['history_runs']} history runs ...", file=sys.stderr, flush=True)
        token, runs = kube_setup(platform, namespace, size["runs"])
        report["history"] = asyncio.run(
            queries.fill(
                url, namespace, runs=size["history_runs"], filler=size["filler_steps"], long=size["long_steps"]
            )
        )
        env = {**platform.process_env(), "AGENT_TREE_DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
        api = ApiProcess(env, workdir / "api.log")
        api.start()
        base = {"api_url": api.url, "token": token, "namespace": namespace, "runs": runs,
                "database_url": url, "redis_url": platform.redis_url}  # fmt: skip
        print(f"live: {size['clients']} SSE clients on {size['runs']} runs ...", file=sys.stderr, flush=True)
        report["live"] = live(size, api, env, base, workdir)
        print(f"history: {size['requests']} requests per case ...", file=sys.stderr, flush=True)
        report["queries"] = asyncio.run(queries.measure(api.url, token, report["history"], size["requests"]))
        report["api_rss_end_mib"] = rss_mib(api.proc.pid)  # type: ignore[union-attr]
        report["machine"] = {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg()}
        return report
    finally:
        for proc in Child.started:
            if proc.poll() is None:
                proc.kill()
        if api is not None:
            api.stop()
        if not args.keep:
            platform.kubectl("delete", "namespace", namespace, "--wait=false")
            asyncio.run(drop_database(platform.database_url, database))


def markdown(r: dict[str, Any]) -> str:
    lv, s = r["live"], r["size"]
    d = lv["delivery"]
    lines = [
        f"| live ({s['clients']} SSE clients, {s['runs']} runs x {s['steps']} steps at {s['rate']:g}/s) "
        "| through the API | direct XREAD (1 reader per run) | ratio |",
        "|---|---:|---:|---:|",
        f"| every client got every step, in order, once | {d['complete']} / {d['clients']} clients "
        f"({d['events']} events) | {lv['baseline_delivery']['complete']} / {lv['baseline_delivery']['clients']} | |",
        f"| delivery lag p50 (ms) | {lv['lag_api']['p50_ms']:.1f} | {lv['lag_xread']['p50_ms']:.1f} | "
        f"{lv['ratio_p50']:.1f} |",
        f"| delivery lag p99 (ms) | {lv['lag_api']['p99_ms']:.1f} | {lv['lag_xread']['p99_ms']:.1f} | "
        f"{lv['ratio_p99']:.1f} |",
        f"| API process CPU while live (cores) | {lv['api_cores']:.2f} | | |",
        f"| API process RSS: before / {s['clients']} streams open / peak (MiB) | {lv['api_rss_before_mib']:.0f} / "
        f"{lv['api_rss_connected_mib']:.0f} / {lv['api_rss_peak_mib']:.0f} | | |",
        "",
        f"| history ({r['history']['runs']} runs, {r['history']['runs_in_namespace']} in the namespace; "
        f"{r['history']['steps']} steps) | API p50 / p99 (ms) | SQL on asyncpg p50 / p99 (ms) | ratio p50 / p99 "
        "| Kubernetes read as the caller p50 (ms) | index |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for c in r["queries"]["cases"]:
        index = next((line.strip() for line in c["explain"] if "Index" in line), "NO INDEX")
        lines.append(
            f"| {c['case']} | {c['api']['p50_ms']:.1f} / {c['api']['p99_ms']:.1f} | {c['sql']['p50_ms']:.2f} / "
            f"{c['sql']['p99_ms']:.2f} | {c['ratio_p50']:.1f} / {c['ratio_p99']:.1f} | {c['kube_read']['p50_ms']:.1f} "
            f"| `{index.split('  (')[0]}` |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (< 2 min; what the e2e test runs)")
    for key, default in FULL.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(default), help=f"(default {default})")
    parser.add_argument("--json", type=Path, help="also write the JSON report here")
    parser.add_argument("--keep", action="store_true", help="keep the namespace and the database")
    parsed = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (namespace, database) on a timeout too
    result: dict[str, Any] = {}
    try:
        main(parsed, result)
    finally:
        text = json.dumps(result, indent=2, default=str)
        if parsed.json:
            parsed.json.write_text(text)
    print(text)
    print()
    print(markdown(result))
    live_ok = result["live"]["delivery"]["failed"] == 0 and result["live"]["baseline_delivery"]["failed"] == 0
    if not live_ok:
        print("FAILED: not every client got every event exactly once and in order", file=sys.stderr)
        sys.exit(1)
