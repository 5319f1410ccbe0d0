"""The platform's directory: paths, state file, lock, PKI, kubeconfig and env file."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import secrets
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import procs

REPO = Path(__file__).resolve().parents[2]
HACK = REPO / "hack"
DEFAULT_DIR = Path.home() / ".cache" / "agent-tree" / "platform"
SERVICE_CIDR = "10.96.0.0/16"
FAKE_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")


class PlatformError(RuntimeError):
    """A component could not be started, stopped or reached; the message says which and where its log is."""


def platform_dir() -> Path:
    return Path(os.environ.get("AGENT_TREE_PLATFORM_DIR") or DEFAULT_DIR).expanduser().absolute()


def venv_bin() -> Path:
    """The venv whose `agent-tree`, `temporal` and python the platform uses."""
    if os.environ.get("AGENT_TREE_VENV"):
        return Path(os.environ["AGENT_TREE_VENV"]) / "bin"
    with contextlib.suppress(OSError):
        if (REPO / ".venv" / "bin" / "python").exists():
            return REPO / ".venv" / "bin"
    return Path(sys.executable).parent


def atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def read_env_file(path: Path) -> dict[str, str]:
    """The `export K=V` lines of an env file written by `up` (PATH excluded)."""
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export ") :].partition("=")
            if key != "PATH":
                env[key] = value.strip("'\"")
    return env


class Dir:
    """Everything under one platform directory."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root or platform_dir()).expanduser().absolute()
        self.logs = self.root / "logs"
        self.pki = self.root / "pki"
        self.config = self.root / "config"
        self.bin = self.root / "bin"
        self.state_file = self.root / "state.json"
        self.kubeconfig = self.root / "kubeconfig"
        self.env_file = self.root / "env"
        self.podrunner_state = self.root / "podrunner" / "state.json"

    # --- state -------------------------------------------------------------
    def load(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {"ports": {}, "components": {}}

    def save(self, state: dict[str, Any]) -> None:
        atomic_write(self.state_file, json.dumps(state, indent=2, sort_keys=True) + "\n")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise up/down/start/stop between processes (CLI, test sessions)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    # --- ports -------------------------------------------------------------
    def ports_for(self, state: dict[str, Any], keys: tuple[str, ...]) -> None:
        """Keep the saved ports of a component about to start when they are
        still free (so URLs in the env file stay valid across restarts), else
        pick new free ones."""
        ports = state.setdefault("ports", {})
        for key in keys:
            if not (ports.get(key) and procs.port_free(ports[key])):
                taken = set(ports.values())
                port = procs.free_port()
                while port in taken:
                    port = procs.free_port()
                ports[key] = port

    # --- PKI: CA, API server serving cert, service-account key, admin token -
    def ensure_pki(self) -> None:
        pki = self.pki
        pki.mkdir(parents=True, exist_ok=True)
        os.chmod(pki, 0o700)

        def ssl_(*args: str) -> None:
            r = subprocess.run(["openssl", *args], cwd=pki, capture_output=True, text=True)
            if r.returncode:
                raise PlatformError(f"pki: openssl {' '.join(args)} failed: {r.stderr.strip()}")

        if not (pki / "ca.crt").exists():
            ssl_(
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "3650",
                "-subj",
                "/CN=agent-tree-platform-ca",
            )
        if not (pki / "apiserver.crt").exists():
            (pki / "apiserver.ext").write_text(
                "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
                "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
                "extendedKeyUsage=serverAuth\n"
            )
            ssl_(
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "apiserver.key",
                "-out",
                "apiserver.csr",
                "-subj",
                "/CN=kube-apiserver",
            )
            ssl_(
                "x509",
                "-req",
                "-in",
                "apiserver.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "apiserver.crt",
                "-days",
                "3650",
                "-extfile",
                "apiserver.ext",
            )
        if not (pki / "sa.key").exists():
            ssl_("genrsa", "-out", "sa.key", "2048")
            ssl_("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")
        if not (pki / "tokens.csv").exists():
            token = secrets.token_hex(24)
            atomic_write(pki / "tokens.csv", f'{token},admin,admin,"system:masters"\n', 0o600)

    @property
    def admin_token(self) -> str:
        return (self.pki / "tokens.csv").read_text().split(",", 1)[0]

    # --- files written for users --------------------------------------------
    def api_url(self, state: dict[str, Any]) -> str:
        return f"https://127.0.0.1:{state['ports']['apiserver']}"

    def write_kubeconfig(self, state: dict[str, Any]) -> None:
        ca = base64.b64encode((self.pki / "ca.crt").read_bytes()).decode()
        atomic_write(
            self.kubeconfig,
            f"""apiVersion: v1
kind: Config
clusters:
- name: agent-tree-platform
  cluster:
    server: {self.api_url(state)}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    token: {self.admin_token}
contexts:
- name: agent-tree-platform
  context: {{cluster: agent-tree-platform, user: admin, namespace: default}}
current-context: agent-tree-platform
""",
            0o600,
        )

    def env_vars(self, state: dict[str, Any]) -> dict[str, str]:
        ports = state["ports"]
        env = {"AGENT_TREE_PLATFORM_DIR": str(self.root), "AGENT_TREE_PLATFORM_BIN": str(self.bin)}
        if "apiserver" in ports:
            env["KUBECONFIG"] = str(self.kubeconfig)
        if "temporal" in ports:
            env["TEMPORAL_ADDRESS"] = f"127.0.0.1:{ports['temporal']}"
        if "postgres" in ports:
            env["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:{ports['postgres']}/agent_tree"
        if "redis" in ports:
            env["REDIS_URL"] = f"redis://127.0.0.1:{ports['redis']}/0"
        return env

    def write_env(self, state: dict[str, Any]) -> None:
        lines = [
            "# Written by `hack/platform up`. Use: . " + str(self.env_file),
            *(f"export {k}={v}" for k, v in self.env_vars(state).items()),
            f'export PATH="{self.bin}:$PATH"',
        ]
        atomic_write(self.env_file, "\n".join(lines) + "\n")

    def link_bins(self, bins: dict[str, str]) -> None:
        """<dir>/bin: kubectl (same version as the API server), temporal, etcd, kwok."""
        self.bin.mkdir(parents=True, exist_ok=True)
        for name in ("kubectl", "etcd", "kwok", "temporal"):
            link = self.bin / name
            if name not in bins:
                continue
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(bins[name])

    # --- API access (stdlib; the readiness checks and the fake node use it) --
    def api(self, state: dict[str, Any], method: str, path: str, body: Any = None, timeout: float = 5) -> Any:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api_url(state) + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.admin_token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
            raw = resp.read()
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode()


def http_get(url: str, timeout: float = 3, verify: bool = True) -> tuple[int, str]:
    ctx = None
    if url.startswith("https") and not verify:
        ctx = ssl._create_unverified_context()
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (OSError, ValueError) as e:
        return 0, str(e)
