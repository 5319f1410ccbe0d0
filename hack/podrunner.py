"""Local pod runner of the platform (see docs/development.md).

Watches pods labelled app.kubernetes.io/part-of=agent-tree that are bound to a
fake (kwok) node and runs each as a local process: the first container's
command + args with its env (value, valueFrom secretKeyRef / configMapKeyRef /
fieldRef, envFrom). Working directory: $AGENT_TREE_PODRUNNER_WORKDIR or the repo
root; PATH has the venv's bin first, so `agent-tree ...` resolves. A process
that exits while its pod exists is restarted with backoff (as a kubelet
restarts a container); on deletion (or a deletionTimestamp) it gets SIGTERM,
then SIGKILL after the pod's grace period. kwok owns the pod status; this
runner only records <dir>/podrunner/state.json ('<ns>/<pod>' -> pid) and logs
to <dir>/logs/pods/<ns>_<pod>.log.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

REPO = Path(__file__).resolve().parent.parent
SELECTOR = os.environ.get("AGENT_TREE_PODRUNNER_SELECTOR", "app.kubernetes.io/part-of=agent-tree")
FAKE_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
MAX_GRACE = 30.0
log = logging.getLogger("podrunner")


def proc_start(pid: int) -> str | None:
    """Start time of a live (not zombie) process: with the pid, its identity."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else fields[19]


@dataclass
class Proc:
    key: str  # namespace/name
    uid: str
    argv: list[str]
    env: dict[str, str]
    restart_policy: str
    grace: float
    popen: subprocess.Popen | None = None
    start: str | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0  # monotonic time of the next (re)start
    last_exit: int | None = None
    stopping: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Runner:
    def __init__(self, root: Path, workdir: Path, venv_bin: Path):
        self.root = root
        self.workdir = workdir
        self.venv_bin = venv_bin
        self.logs = root / "logs" / "pods"
        self.state_file = root / "podrunner" / "state.json"
        self.lock = threading.RLock()
        self.procs: dict[str, Proc] = {}
        self.synced = False
        self.stop_event = threading.Event()
        self.core = client.CoreV1Api()
        self.fake_nodes: dict[str, bool] = {}
        self.logs.mkdir(parents=True, exist_ok=True)
        self.state_file.parent.mkdir(parents=True, exist_ok=True)

    # --- state file ----------------------------------------------------------
    def save(self) -> None:
        with self.lock:
            pods = {
                k: {"pid": p.popen.pid, "start": p.start, "uid": p.uid, "restarts": p.restarts, "argv": p.argv,
                    "started_at": p.started_at}
                for k, p in self.procs.items() if p.popen is not None and p.popen.poll() is None
            }  # fmt: skip
            data = {"pid": os.getpid(), "synced": self.synced, "updated_at": time.time(), "pods": pods}
        fd, tmp = tempfile.mkstemp(dir=self.state_file.parent, prefix=".state.")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, self.state_file)

    def kill_leftovers(self) -> None:
        """Processes recorded by a previous runner that was killed without cleanup."""
        try:
            old = json.loads(self.state_file.read_text()).get("pods", {})
        except (OSError, ValueError):
            return
        threads = []
        for key, p in old.items():
            if p.get("pid") and proc_start(p["pid"]) == p.get("start"):
                log.info("stopping leftover process of %s (pid %s)", key, p["pid"])
                threads.append(threading.Thread(target=self._kill_group, args=(p["pid"], p["start"], 10)))
                threads[-1].start()
        for t in threads:
            t.join()

    # --- pods -> desired processes ---------------------------------------------
    def is_fake_node(self, name: str) -> bool:
        if name not in self.fake_nodes:
            try:
                node = self.core.read_node(name)
            except ApiException:
                return False
            ann = node.metadata.annotations or {}
            self.fake_nodes[name] = ann.get(FAKE_NODE_ANNOTATION[0]) == FAKE_NODE_ANNOTATION[1]
        return self.fake_nodes[name]

    def wanted(self, pod: Any) -> bool:
        return (
            pod.metadata.deletion_timestamp is None
            and bool(pod.spec.node_name)
            and (pod.status.phase or "Pending") not in ("Succeeded", "Failed")
            and self.is_fake_node(pod.spec.node_name)
        )

    def on_pod(self, etype: str, pod: Any) -> None:
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        with self.lock:
            current = self.procs.get(key)
            if etype == "DELETED" or not self.wanted(pod):
                if current:
                    self.stop_proc(current, "pod deleted" if etype == "DELETED" else "pod deleting / not runnable")
                return
            if current and current.uid == pod.metadata.uid:
                return  # a container's command does not change in place
            if current:  # same name, new pod
                self.stop_proc(current, "replaced by a new pod of the same name")
            try:
                proc = self.build(pod, key)
            except Exception as e:
                log.error("%s: cannot run: %s", key, e)
                self.pod_log(key, f"podrunner: cannot run this pod: {e}\n")
                return
            self.procs[key] = proc
        self.tick()

    def build(self, pod: Any, key: str) -> Proc:
        c = pod.spec.containers[0]
        if len(pod.spec.containers) > 1:
            log.warning("%s: only the first container (%s) runs locally", key, c.name)
        env = self.container_env(pod, c)
        argv = [expand(a, env) for a in (c.command or []) + (c.args or [])]
        if not c.command:
            raise ValueError(f"container {c.name!r} has no command (an image entrypoint cannot run locally)")
        grace = pod.spec.termination_grace_period_seconds
        return Proc(
            key=key, uid=pod.metadata.uid, argv=argv, env=env, restart_policy=pod.spec.restart_policy or "Always",
            grace=min(float(30 if grace is None else grace), MAX_GRACE),
        )  # fmt: skip

    def container_env(self, pod: Any, c: Any) -> dict[str, str]:
        ns = pod.metadata.namespace
        base = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "TERM")}
        # the platform's addresses (KUBECONFIG for an operator pod, ...); the pod's env overrides them
        for k in ("KUBECONFIG", "TEMPORAL_ADDRESS", "DATABASE_URL", "REDIS_URL", "AGENT_TREE_PLATFORM_DIR"):
            if k in os.environ:
                base[k] = os.environ[k]
        base.update({
            "PATH": f"{self.venv_bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOSTNAME": pod.metadata.name, "PYTHONUNBUFFERED": "1",
            "AGENT_TREE_POD_NAME": pod.metadata.name, "AGENT_TREE_POD_NAMESPACE": ns,
            "AGENT_TREE_POD_UID": pod.metadata.uid, "AGENT_TREE_NODE_NAME": pod.spec.node_name or "",
        })  # fmt: skip
        env: dict[str, str] = {}
        for src in c.env_from or []:
            prefix = src.prefix or ""
            if src.config_map_ref:
                data = self.read_configmap(ns, src.config_map_ref.name, src.config_map_ref.optional)
            elif src.secret_ref:
                data = self.read_secret(ns, src.secret_ref.name, src.secret_ref.optional)
            else:
                continue
            env.update({prefix + k: v for k, v in data.items()})
        for e in c.env or []:
            if e.value_from is None:
                env[e.name] = expand(e.value or "", {**base, **env})
                continue
            vf = e.value_from
            if vf.secret_key_ref:
                ref = vf.secret_key_ref
                value = self.read_secret(ns, ref.name, ref.optional).get(ref.key)
            elif vf.config_map_key_ref:
                ref = vf.config_map_key_ref
                value = self.read_configmap(ns, ref.name, ref.optional).get(ref.key)
            elif vf.field_ref:
                value = field_ref(pod, vf.field_ref.field_path)
            elif vf.resource_field_ref:
                value = "0"
            else:
                value = None
            if value is None:
                optional = getattr(vf.secret_key_ref or vf.config_map_key_ref, "optional", False)
                if not optional:
                    raise ValueError(f"env {e.name}: reference cannot be resolved")
                continue
            env[e.name] = value
        return {**base, **env}

    def read_secret(self, ns: str, name: str, optional: bool | None) -> dict[str, str]:
        try:
            s = self.core.read_namespaced_secret(name, ns)
        except ApiException as e:
            if e.status == 404 and optional:
                return {}
            raise ValueError(f"secret {ns}/{name}: {e.reason}") from e
        return {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}

    def read_configmap(self, ns: str, name: str, optional: bool | None) -> dict[str, str]:
        try:
            cm = self.core.read_namespaced_config_map(name, ns)
        except ApiException as e:
            if e.status == 404 and optional:
                return {}
            raise ValueError(f"configmap {ns}/{name}: {e.reason}") from e
        return dict(cm.data or {})

    # --- processes -----------------------------------------------------------
    def pod_log(self, key: str, text: str) -> Path:
        path = self.logs / (key.replace("/", "_") + ".log")
        with open(path, "a") as f:
            f.write(text)
        return path

    def launch(self, p: Proc) -> None:
        path = self.pod_log(key=p.key, text=f"\n=== {time.strftime('%H:%M:%S')} start #{p.restarts}: {p.argv}\n")
        with open(path, "ab") as out:
            try:
                p.popen = subprocess.Popen(
                    p.argv, env=p.env, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                )  # fmt: skip
            except OSError as e:
                out.write(f"podrunner: cannot start: {e}\n".encode())
                p.popen, p.last_exit = None, 127
                p.next_start = time.monotonic() + self.backoff(p)
                p.restarts += 1
                return
        p.start = proc_start(p.popen.pid)
        p.started_at = time.time()
        log.info("%s: started pid %s: %s", p.key, p.popen.pid, " ".join(p.argv))

    @staticmethod
    def backoff(p: Proc) -> float:
        return min(0.5 * 2 ** min(p.restarts, 6), 30.0)

    def tick(self) -> None:
        """Start what should run, restart what exited (with backoff)."""
        now = time.monotonic()
        changed = False
        with self.lock:
            for p in list(self.procs.values()):
                if p.stopping:
                    continue
                if p.popen is not None and p.popen.poll() is not None:  # exited
                    code = p.popen.returncode
                    self.pod_log(p.key, f"=== exited with {code}\n")
                    log.info("%s: pid %s exited with %s", p.key, p.popen.pid, code)
                    ran = time.time() - p.started_at
                    if ran > 60:
                        p.restarts = 0
                    p.popen, p.last_exit = None, code
                    policy_restart = p.restart_policy == "Always" or (p.restart_policy == "OnFailure" and code != 0)
                    p.next_start = now + self.backoff(p) if policy_restart else float("inf")
                    p.restarts += 1
                    changed = True
                if p.popen is None and now >= p.next_start:
                    self.launch(p)
                    changed = True
        if changed:
            self.save()

    def stop_proc(self, p: Proc, why: str) -> None:
        with self.lock:
            if p.stopping:
                return
            p.stopping = True
        log.info("%s: stopping (%s)", p.key, why)

        def run() -> None:
            if p.popen is not None and p.popen.poll() is None:
                self._kill_group(p.popen.pid, p.start, p.grace, p.popen)
                self.pod_log(p.key, f"=== {time.strftime('%H:%M:%S')} stopped ({why})\n")
            with self.lock:
                if self.procs.get(p.key) is p:
                    del self.procs[p.key]
            self.save()

        threading.Thread(target=run, name=f"stop {p.key}", daemon=True).start()

    @staticmethod
    def _kill_group(pid: int, start: str | None, grace: float, popen: subprocess.Popen | None = None) -> None:
        def gone() -> bool:
            if popen is not None:
                return popen.poll() is not None
            return proc_start(pid) != start

        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and not gone():
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # the rest of the group, too
        while not gone():
            time.sleep(0.05)

    def shutdown(self) -> None:
        with self.lock:
            procs = list(self.procs.values())
        threads = []
        for p in procs:
            if p.popen is not None and p.popen.poll() is None:
                t = threading.Thread(target=self._kill_group, args=(p.popen.pid, p.start, p.grace, p.popen))
                t.start()
                threads.append(t)
        for t in threads:
            t.join()
        with self.lock:
            self.procs.clear()
        self.save()

    # --- watch loop ------------------------------------------------------------
    def supervise(self) -> None:
        while not self.stop_event.wait(0.2):
            try:
                self.tick()
            except Exception:
                log.exception("supervise")

    def run(self) -> None:
        self.kill_leftovers()
        self.save()
        threading.Thread(target=self.supervise, name="supervise", daemon=True).start()
        while not self.stop_event.is_set():
            try:
                pods = self.core.list_pod_for_all_namespaces(label_selector=SELECTOR)
                seen = set()
                for pod in pods.items:
                    seen.add(f"{pod.metadata.namespace}/{pod.metadata.name}")
                    self.on_pod("ADDED", pod)
                with self.lock:
                    gone = [p for k, p in self.procs.items() if k not in seen]
                for p in gone:
                    self.stop_proc(p, "pod gone (relist)")
                self.synced = True
                self.save()
                rv = pods.metadata.resource_version
                w = watch.Watch()
                for ev in w.stream(self.core.list_pod_for_all_namespaces, label_selector=SELECTOR,
                                   resource_version=rv, timeout_seconds=300, allow_watch_bookmarks=True):  # fmt: skip
                    if self.stop_event.is_set():
                        w.stop()
                        break
                    if ev["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self.on_pod(ev["type"], ev["object"])
            except ApiException as e:
                if e.status != 410:  # 410 Gone: resourceVersion too old, relist
                    log.warning("watch: %s; relisting in 1s", e.reason)
                    self.stop_event.wait(1)
            except Exception as e:
                log.warning("watch failed: %s; relisting in 1s", e)
                self.stop_event.wait(1)


def field_ref(pod: Any, path: str) -> str | None:
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return ((getattr(pod.metadata, m.group(1)) or {}).get(m.group(2))) or ""
    return {
        "metadata.name": pod.metadata.name,
        "metadata.namespace": pod.metadata.namespace,
        "metadata.uid": pod.metadata.uid,
        "spec.nodeName": pod.spec.node_name,
        "spec.serviceAccountName": pod.spec.service_account_name,
        "status.podIP": pod.status.pod_ip or "",
        "status.hostIP": pod.status.host_ip or "127.0.0.1",
    }.get(path)


def expand(s: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: $$ escapes, unknown references stay as written."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, s)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True, help="platform directory")
    ap.add_argument("--workdir", default=os.environ.get("AGENT_TREE_PODRUNNER_WORKDIR", str(REPO)))
    ap.add_argument("--venv-bin", default=os.environ.get("AGENT_TREE_VENV_BIN", str(Path(sys.executable).parent)))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config.load_kube_config()
    runner = Runner(Path(args.dir), Path(args.workdir), Path(args.venv_bin))

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping every pod process", signum)
        runner.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    watcher = threading.Thread(target=runner.run, name="watch", daemon=True)
    watcher.start()
    runner.stop_event.wait()
    runner.shutdown()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
