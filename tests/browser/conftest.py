"""Fixtures of the browser tests: the local platform (as tests/e2e), Debian's chromium driven by
Playwright (never a downloaded browser), the operator and `agent-tree api` as processes, and a
namespace with an AgentTree whose workers run as local processes (the platform's pod runner)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "e2e"))
import platformlib
from agent_tree_api.routes.web import STATIC_DIR
from api_process import ApiProcess
from operator_process import INVOICE, OperatorProcess, apply_crds, namespace, ok, running
from platformlib import REPO, Platform, wait_for
from playwright.sync_api import Browser, Playwright, sync_playwright
from web_site import IMG, TREE, Web  # noqa: F401 - IMG and TREE: what the tests import

CHROMIUM = Path(os.environ.get("AGENT_TREE_CHROMIUM", "/usr/bin/chromium"))
POD_PYTHONPATH = os.pathsep.join(
    str(REPO / p) for p in ("examples/invoice", "tests/browser", "", "worker", "operator", "api")
)


@pytest.fixture(scope="session")
def platform() -> Iterator[Platform]:
    try:
        p, started = platformlib.ensure_up()
    except platformlib.PlatformError as e:
        pytest.fail(f"the local platform could not start:\n{e}", pytrace=False)
    saved = {k: os.environ.get(k) for k in [*p.env, "PATH"]}
    os.environ.update(p.env)
    os.environ["PATH"] = f"{p.bin}{os.pathsep}{os.environ.get('PATH', '')}"
    yield p
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if started:
        platformlib.stop(p.dir, started)


@pytest.fixture(scope="module")  # closed before other modules: its loop breaks asyncio tests after it
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (hack/test installs it)", pytrace=False)
    if not (STATIC_DIR / "index.html").exists():
        pytest.fail(f"the web view is not built ({STATIC_DIR}): run hack/build-web.sh", pytrace=False)
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")  # closed before other modules: its loop breaks asyncio tests after it
def browser(playwright: Playwright) -> Iterator[Browser]:
    # Debian's chromium, headless; --no-sandbox: the tests run as root in CI.
    b = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
    yield b
    b.close()


def tree_manifest(gates: Path, alice: str) -> dict:
    tree = yaml.safe_load((INVOICE / "agenttree.yaml").read_text())
    tree["metadata"]["name"] = TREE
    spec = tree["spec"]
    spec["maxSteps"] = 8
    spec["worker"]["env"] = [
        {"name": "PYTHONPATH", "value": POD_PYTHONPATH},
        {"name": "WEB_GATE_DIR", "value": str(gates)},
    ]
    for agent in spec["agents"]:
        agent.pop("worker", None)  # one worker per agent
        for tool in agent.get("tools", []):
            if tool["name"] == "erp_lookup" and agent["name"] == "invoice-specialist":
                tool["entrypoint"] = "web_tools:erp_lookup"
                tool["timeoutSeconds"] = 300
            if tool["name"] == "verify_answer":
                tool["approval"] = {"required": True, "approvers": {"users": [alice]}}
    return tree


@pytest.fixture(scope="module")
def web(platform: Platform, browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    apply_crds(platform)
    ok(platform.kubectl("wait", "--for=condition=Established", "crd/agentapprovals.agenttree.io", "--timeout=60s"))
    work = tmp_path_factory.mktemp("web")
    gates = Path("/tmp") / f"web-gates-{uuid.uuid4().hex[:8]}"  # the worker processes must reach it
    gates.mkdir(mode=0o777)
    with running(OperatorProcess(platform, work / "operator.log", "web-*")) as op:
        with namespace(platform, op, "web", cleanup_timeout=120) as ns:
            role = {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "web-runs"},
                "rules": [
                    {
                        "apiGroups": ["agenttree.io"],
                        "resources": ["agenttrees", "agentruns", "agentapprovals"],
                        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
                    }
                ],
            }
            ok(platform.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(role)))
            for sa in ("alice", "stranger"):
                ok(platform.kubectl("create", "serviceaccount", sa, "-n", ns))
            ok(platform.kubectl("create", "rolebinding", "web-alice", "-n", ns, "--role=web-runs",
                                f"--serviceaccount={ns}:alice"))  # fmt: skip
            tokens = {
                sa: ok(platform.kubectl("create", "token", sa, "-n", ns, "--duration=2h")).strip()
                for sa in ("alice", "stranger")
            }
            alice = f"system:serviceaccount:{ns}:alice"
            ok(platform.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(tree_manifest(gates, alice))))

            def ready() -> bool:
                obj = json.loads(ok(platform.kubectl("get", "agenttree", TREE, "-n", ns, "-o", "json")))
                conditions = {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}
                return conditions.get("Ready") == "True"

            wait_for(ready, 180, f"AgentTree {ns}/{TREE} Ready")
            api = ApiProcess(platform, work / "api.log")
            api.start()
            try:
                yield Web(platform, api, ns, tokens, gates, browser)
            finally:
                api.stop()
                print(f"\nAPI log: {api.log}")
    shutil.rmtree(gates, ignore_errors=True)
