"""The parts a fault scenario runs on, all private to it so it can kill and restart any of them.

Temporal (dev server on a SQLite file, so a restart keeps the runs), PostgreSQL and Redis on free
loopback ports (tests/integration/services.py); optionally a Kubernetes control plane of its own
(etcd + kube-apiserver from hack/platformlib, in a private platform directory) with the CRDs and
``agent-tree operator`` as a process; workers as ``agent-tree worker`` processes (one per agent, the
way the pod runner runs a Deployment's pod); a fake OpenAI endpoint whose calls are slow enough to be
killed in the middle. Nothing here touches the shared platform of ``hack/platform``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import fault_agents as fa
import platformlib
from durable_support import WorkerProcess, worker_env
from fake_openai import FakeOpenAI
from platformlib import procs
from services import Postgres, Redis, Temporal, free_port

from agent_tree.contract.temporal import connect
from faultsuite import REPO, SUITE_DIR

AGENT_TREE = Path(sys.executable).parent / "agent-tree"
API_KEY = "sk-fault-suite"
SCRUB = ("TEMPORAL_ADDRESS", "DATABASE_URL", "REDIS_URL", "KUBECONFIG")


class SlowModel(FakeOpenAI):
    """The fake OpenAI endpoint; each call takes ``seconds`` and ``inflight`` counts calls per model."""

    def __init__(self, scripts: dict[str, list[Any]], seconds: float) -> None:
        super().__init__(scripts)
        self.seconds = seconds
        self.inflight: dict[tuple[str, str], int] = {}  # (model, run key) -> calls in progress
        self.calls = 0
        self.httpd.handle_error = lambda *_: None  # a worker killed mid-call breaks its connection: expected

    def answer(self, path: str, body: dict[str, Any], auth: str) -> tuple[int, dict[str, Any]]:
        match = fa.KEY.search(json.dumps(body.get("messages", [])))
        call = (body.get("model", ""), match.group(0) if match else "")
        with self.lock:
            self.inflight[call] = self.inflight.get(call, 0) + 1
            self.calls += 1
        try:
            time.sleep(self.seconds)  # a handler thread per request: this is the model "thinking"
            return super().answer(path, body, auth)
        finally:
            with self.lock:
                self.inflight[call] -= 1

    def in_progress(self) -> list[tuple[str, str]]:
        with self.lock:
            return [call for call, n in self.inflight.items() if n > 0]


class ServiceProcess:
    """An ``agent-tree`` command run as its own process group: spawned, probed over HTTP, stopped, measured."""

    name = "process"

    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def spawn(self, args: list[str], env: dict[str, str]) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(AGENT_TREE), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
                start_new_session=True,
            )
        self.starts += 1

    def answers(self, url: str) -> bool:
        """True when ``url`` answers 200; raises when the process has exited (with its log's tail)."""
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"the {self.name} exited ({self.log}):\n{tail(self.log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        self.proc.wait(30)  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)

    def rss_kib(self) -> int:
        alive = self.proc is not None and self.proc.poll() is None
        return procs.rss_kib(procs.group_members(self.proc.pid)) if alive else 0  # type: ignore[union-attr]


class Operator(ServiceProcess):
    """``agent-tree operator`` against the private API server and services, watching ``flt-*``."""

    name = "operator"

    def __init__(self, stack: Stack) -> None:
        super().__init__(stack.root / "operator.log")
        self.stack = stack
        self.health_port = free_port()

    def start(self) -> None:
        env = self.stack.base_env()
        env.update(
            KUBECONFIG=str(self.stack.kube.kubeconfig),
            AGENT_TREE_HEALTH_PORT=str(self.health_port),
            AGENT_TREE_METRICS_PORT="0",
            AGENT_TREE_WORKER_METRICS_PORT="0",
            PYTHONUNBUFFERED="1",
        )
        self.spawn(["operator", "--namespace", "flt-*"], env)

    def healthy(self) -> bool:
        return self.answers(f"http://127.0.0.1:{self.health_port}/healthz")

    async def ready(self, within: float = 90) -> None:
        await poll(self.healthy, "the operator's /healthz", within)


class Stack:
    """``async with Stack(root, kube=True) as s``: services up; everything stopped on exit, even on failure."""

    def __init__(self, root: Path, *, kube: bool = False) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "inflight").mkdir(exist_ok=True)
        self.with_kube = kube
        self.namespace = f"flt-{uuid.uuid4().hex[:6]}"
        self.trees: dict[str, dict[str, Any]] = {}
        self.tree_workers: dict[tuple[str, str], WorkerProcess] = {}
        self.temporal = Temporal(self.root)
        self.postgres = Postgres(self.root)
        (self.root / "redis").mkdir(exist_ok=True)
        self.redis = Redis(self.root / "redis")
        self.model = SlowModel(fa.model_scripts(), 1.0)
        self.kube: platformlib.Platform | None = None
        self.operator: Operator | None = None
        self.workers: list[WorkerProcess] = []
        self.client: Any = None

    async def __aenter__(self) -> Stack:
        try:
            kdir = platformlib.Dir(self.root / "k8s")
            await asyncio.gather(
                asyncio.to_thread(self.temporal.start, str(self.root / "temporal.db")),
                asyncio.to_thread(self.postgres.start),
                asyncio.to_thread(self.redis.start),
                *([asyncio.to_thread(platformlib.up, kdir, ["apiserver"], lambda _m: None)] if self.with_kube else []),
            )
            self.model.__enter__()
            self.client = await connect(self.temporal.address)
            if self.with_kube:
                self.kube = platformlib.Platform(kdir.root)
                r = self.kube.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
                if r.returncode:
                    raise RuntimeError(f"kubectl apply crds: {r.stderr}")
                # `kubectl wait` fails outright while a new CRD has no conditions yet: poll it
                wait = ("wait", "--for=condition=Established", "--timeout=5s", "crd/agenttrees.agenttree.io",
                        "crd/agentruns.agenttree.io")  # fmt: skip
                await poll(lambda: self.kube.kubectl(*wait).returncode == 0, "the CRDs Established", 90, 0.5)
                self.operator = Operator(self)
            await self._trees()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):
                w.stop()
        if self.operator is not None:
            with contextlib.suppress(Exception):
                self.operator.stop()
        if self.kube is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(platformlib.stop, self.kube.dir, None, lambda _m: None)
        with contextlib.suppress(Exception):
            self.model.__exit__(None, None, None)
        for service in (self.redis, self.temporal):
            with contextlib.suppress(Exception):
                service.stop()
        with contextlib.suppress(Exception):
            self.postgres.cleanup()

    # --- environment and workers ---------------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        """os.environ without the shared platform's settings, pointing at this stack's services."""
        env = worker_env(self.temporal.address, self.postgres.url, self.redis.url)
        for name in SCRUB:
            env.pop(name, None)
        env.update(
            # this checkout's packages first (the venv may hold an editable install of another one)
            PYTHONPATH=os.pathsep.join(
                [str(SUITE_DIR), str(REPO), *(str(REPO / p) for p in ("worker", "operator", "api")), env["PYTHONPATH"]]
            ),
            FAULT_DIR=str(self.root),
            AGENT_TREE_MODEL_API_KEY=API_KEY,
            AGENT_TREE_LOG_LEVEL="WARNING",
        )
        return env

    def set_tool_seconds(self, seconds: float) -> None:
        (self.root / "tool-seconds").write_text(str(seconds))

    async def _trees(self) -> None:
        """The Python and the model tree: their workers; with Kubernetes, the namespace, AgentTrees, operator."""
        self.trees = {"py": fa.python_tree(), "llm": fa.model_tree(self.model.base_url)}
        agents = {name: [a["name"] for a in spec["agents"]] for name, spec in self.trees.items()}
        starting = [self.start_workers(self.namespace, name, names) for name, names in agents.items()]
        for name, started in zip(agents, await asyncio.gather(*starting), strict=True):
            self.tree_workers.update({(name, a): w for a, w in started.items()})
        if self.kube is None:
            return
        docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}]
        for name, spec in self.trees.items():
            manifest = {**spec, "agents": [{**a, "worker": {"replicas": 0}} for a in spec["agents"]]}
            docs.append({"apiVersion": "agenttree.io/v1alpha1", "kind": "AgentTree",
                         "metadata": {"name": name, "namespace": self.namespace}, "spec": manifest})  # fmt: skip
        for doc in docs:
            r = self.kube.kubectl("apply", "-f", "-", input=json.dumps(doc))
            if r.returncode:
                raise RuntimeError(f"kubectl apply {doc['kind']}: {r.stderr}")
        self.operator.start()  # type: ignore[union-attr]
        await self.operator.ready()  # type: ignore[union-attr]

    async def start_workers(self, namespace: str, tree: str, agents: list[str]) -> dict[str, WorkerProcess]:
        started = {}
        for agent in agents:
            w = WorkerProcess(namespace, tree, agent, self.base_env(), self.root)
            w.log_dir = self.root / "logs"
            w.log_dir.mkdir(exist_ok=True)
            self.workers.append(w.start())
            started[agent] = w
        for w in started.values():
            await w.ready(120)
        return started

    def worker_rss_kib(self) -> int:
        return procs.rss_kib([w.proc.pid for w in self.workers if w.proc and w.proc.poll() is None])


async def restart_worker(worker: WorkerProcess) -> float:
    """kill -9 then start a replacement (a Deployment's new pod); returns seconds until it is ready."""
    worker.kill()
    began = time.monotonic()
    worker.start()
    await worker.ready(120)
    return time.monotonic() - began


async def poll(check, what: str, within: float, interval: float = 0.2) -> Any:
    """Poll ``check`` (sync or async) until truthy; raise TimeoutError naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:g}s waiting for {what}")
        await asyncio.sleep(interval)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def create_runs(stack: Stack, count: int, prefix: str) -> dict[str, str]:
    """``count`` AgentRuns of the Python tree (no approval) through the API server: name -> the run's key."""
    # 10 hex digits: the soak creates one run at a time (i = 0), and 5 collided after ~1,000 runs
    runs = {f"{prefix}-{i}-{uuid.uuid4().hex[:10]}": f"flt-key-{uuid.uuid4().hex[:10]}" for i in range(count)}
    items = [
        {
            "apiVersion": "agenttree.io/v1alpha1",
            "kind": "AgentRun",
            "metadata": {"name": name, "namespace": stack.namespace},
            "spec": {"treeRef": {"name": "py"}, "input": f"book {key}", "context": {"approval": False}},
        }
        for name, key in runs.items()
    ]
    r = stack.kube.kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))  # type: ignore[union-attr]
    if r.returncode:
        raise RuntimeError(f"kubectl create agentruns: {r.stderr}")
    return runs
