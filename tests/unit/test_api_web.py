"""The web view's serving (api/agent_tree_api/routes/web.py) and packaging (pyproject, Dockerfile).

The bundle itself is built by hack/build-web.sh and driven in a real browser by tests/browser/.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from agent_tree_api.app import create_app
from agent_tree_api.auth import Auth
from agent_tree_api.routes.web import STATIC_DIR
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]


class _Services:
    """Just enough of Services: auth refuses before it would ask Kubernetes."""

    def __init__(self) -> None:
        self.auth = Auth(None, token_ttl=0, access_ttl=0, allow_anonymous=False)  # type: ignore[arg-type]

    async def close(self) -> None:
        return None


async def _services() -> _Services:
    return _Services()


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    (tmp_path / "index.html").write_text('<!doctype html><script type="module" src="/static/app.js"></script>')
    (tmp_path / "app.js").write_text("console.log('agent-tree')")
    (tmp_path / "app.css").write_text("body{}")
    (tmp_path / "secret.txt").write_text("not part of the bundle")
    return tmp_path


def client(static_dir: Path) -> TestClient:
    return TestClient(create_app(_services, static_dir=static_dir))  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["/", "/ui/ns/team-a/runs", "/ui/ns/team-a/runs/why-1", "/ui/ns/team-a/trees/invoice"])
def test_index_and_client_routes_return_the_page_without_a_token(bundle: Path, path: str) -> None:
    with client(bundle) as c:
        resp = c.get(path)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in resp.text
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp  # nothing from a CDN


def test_assets_are_served_with_their_types_and_nothing_else_is(bundle: Path) -> None:
    with client(bundle) as c:
        js, css = c.get("/static/app.js"), c.get("/static/app.css")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        for path in ("/static/secret.txt", "/static/..%2Fsecret.txt", "/static/index.html"):
            assert c.get(path).status_code == 404, path


def test_data_calls_still_need_a_token(bundle: Path) -> None:
    with client(bundle) as c:
        resp = c.get("/api/v1/whoami")
    assert resp.status_code == 401
    assert "bearer token is required" in resp.json()["message"]


def test_a_missing_bundle_says_how_to_build_it(tmp_path: Path) -> None:
    with client(tmp_path) as c:
        for path in ("/", "/ui/ns/a/runs", "/static/app.js"):
            resp = c.get(path)
            assert resp.status_code == 503, path
            assert "hack/build-web.sh" in resp.text and "npm ci && npm run build" in resp.text


def test_the_package_ships_the_bundle_and_the_image_builds_it() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "static/*" in project["tool"]["setuptools"]["package-data"]["agent_tree_api"]
    assert STATIC_DIR == ROOT / "api" / "agent_tree_api" / "static"
    docker = (ROOT / "Dockerfile").read_text()
    build = docker.index("npm run build")
    assert docker.index("COPY web ./web") < docker.index("npm ci") < build < docker.index("/opt/venv/bin/pip install .")
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "api/agent_tree_api/static/" in ignored and "web/node_modules/" in ignored


def test_the_toolchain_is_small_and_pinned() -> None:
    package = json.loads((ROOT / "web" / "package.json").read_text())
    assert set(package["devDependencies"]) == {"typescript", "esbuild"}
    assert not package.get("dependencies"), "the page ships no runtime libraries"
    for name, version in package["devDependencies"].items():
        assert version[0].isdigit(), f"{name} {version}: pin an exact version"
    lock = json.loads((ROOT / "web" / "package-lock.json").read_text())
    assert lock["packages"][""]["devDependencies"] == package["devDependencies"]
