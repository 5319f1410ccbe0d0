"""Fixtures of the reduced fault suite: one private stack (bench/faultsuite/stack.py) for the module.

The stack is the suite's own Temporal dev server (on a SQLite file), PostgreSQL, Redis, etcd +
kube-apiserver, operator and workers on free loopback ports; the tests kill and restart those, never
the shared platform's, so other test modules and other sessions on the platform are not disturbed.
Everything is stopped when the module ends, also when a test failed.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from faultsuite.stack import Stack


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with Stack(tmp_path_factory.mktemp("faults"), kube=True) as s:
        yield s
