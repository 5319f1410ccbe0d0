"""Fixtures of the durable-runs integration tests: Temporal, PostgreSQL, Redis, a fake model endpoint.

Services: when the local platform's env is set (``TEMPORAL_ADDRESS``, ``DATABASE_URL``,
``REDIS_URL``, as ``hack/platform up`` writes them) they are reused; otherwise private instances
start on free loopback ports. Tests that restart PostgreSQL or stop Redis always use private
instances (``private_postgres``, ``private_redis``) so they never disturb a shared platform.
Nothing is skipped: a service that cannot start fails the test with the reason.
Helpers (workers, runs, polling) are in ``durable_support.py``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from agent_tree_worker.store import HistoryStore
from durable_support import API_KEY
from fake_openai import FakeOpenAI
from services import Postgres, Redis, Temporal
from temporalio.client import Client

from agent_tree.contract.temporal import connect


def _env(*names: str) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


@pytest.fixture(scope="session")
def service_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def temporal_address(service_root: Path) -> Iterator[str]:
    shared = _env("AGENT_TREE_TEMPORAL_ADDRESS", "TEMPORAL_ADDRESS")
    if shared:
        yield shared
        return
    server = Temporal(service_root).start()
    yield server.address
    server.stop()


@pytest.fixture(scope="session")
def database_url(service_root: Path) -> Iterator[str]:
    shared = _env("AGENT_TREE_DATABASE_URL", "DATABASE_URL")
    if shared:
        yield shared
        return
    pg = Postgres(service_root).start()
    yield pg.url
    pg.cleanup()


@pytest.fixture(scope="session")
def redis_url(service_root: Path) -> Iterator[str]:
    shared = _env("AGENT_TREE_REDIS_URL", "REDIS_URL")
    if shared:
        yield shared
        return
    (service_root / "redis").mkdir()
    server = Redis(service_root / "redis").start()
    yield server.url
    server.stop()


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[Postgres]:
    pg = Postgres(tmp_path).start()
    yield pg
    pg.cleanup()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Redis]:
    (tmp_path / "redis").mkdir()
    server = Redis(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def client(temporal_address: str) -> Client:
    return await connect(temporal_address)


@pytest.fixture(scope="session")
async def store(database_url: str) -> AsyncIterator[HistoryStore]:
    s = HistoryStore(database_url)
    await s.migrate()
    yield s
    await s.close()


@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    monkeypatch.setenv("AGENT_TREE_MODEL_API_KEY", API_KEY)
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def test_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DURABLE_TEST_DIR", str(tmp_path))
    return tmp_path
