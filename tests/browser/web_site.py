"""What the browser tests share: where screenshots go, the test tree's name, and the Web handle.

A module of its own, not the conftest: ``from conftest import ...`` in a test resolves to whichever
conftest Python imported first under that name (tests/e2e's, when the whole suite runs).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "e2e"))
from api_process import ApiProcess
from platformlib import REPO, Platform, wait_for
from playwright.sync_api import Browser, BrowserContext

# Screenshots: docs/img (what README and docs/web.md show) only when asked, so that a test run leaves
# the checkout as it was: AGENT_TREE_SCREENSHOTS=docs/img pytest tests/browser
IMG = Path(os.environ.get("AGENT_TREE_SCREENSHOTS") or REPO / "build" / "screenshots")
if not IMG.is_absolute():
    IMG = REPO / IMG
TREE = "web-invoice"


@dataclass
class Web:
    """The API, the namespace and its users (ServiceAccount tokens issued by the API server)."""

    platform: Platform
    api: ApiProcess
    ns: str
    tokens: dict[str, str]
    gates: Path
    browser: Browser

    def context(self, who: str | None = "alice", scheme: str = "light") -> BrowserContext:
        """A browser context (its own session storage), signed in as ``who`` (None: signed out)."""
        ctx = self.browser.new_context(
            base_url=self.api.base_url, viewport={"width": 1280, "height": 1000}, color_scheme=scheme
        )
        ctx.set_default_timeout(30_000)
        if who:
            ctx.add_init_script(f"sessionStorage.setItem('agent-tree.token', {json.dumps(self.tokens[who])})")
        return ctx

    def call(self, method: str, path: str, body: Any = None, who: str = "alice") -> Any:
        req = urllib.request.Request(
            self.api.url(f"/api/v1/namespaces/{self.ns}{path}"),
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.tokens[who]}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: {e.code} {e.read().decode(errors='replace')}") from None

    def create_run(self, name: str, invoice: str) -> None:
        spec = {"treeRef": {"name": TREE}, "input": f"Why was invoice #{invoice} rejected?", "timeoutSeconds": 900}
        self.call("POST", "/runs", {"name": name, "spec": spec})

    def open_gate(self, tool: str, invoice: str) -> None:
        (self.gates / f"{tool}-{invoice}").touch()

    def run(self, name: str) -> dict:
        return self.call("GET", f"/runs/{name}")

    def phase(self, name: str, phase: str, timeout: float = 180) -> dict:
        return wait_for(lambda: (r := self.run(name))["phase"] == phase and r, timeout, f"run {name} {phase}")
