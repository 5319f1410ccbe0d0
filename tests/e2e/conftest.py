"""Session fixtures of the e2e tests: the local platform of hack/ (docs/development.md).

`platform` uses the running platform ($AGENT_TREE_PLATFORM_DIR or
~/.cache/agent-tree/platform), starting whatever is not running; at the end of
the session it stops only what it started. It never skips: a platform that
cannot start fails the tests with the component, the reason and its log."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))
import platformlib


@pytest.fixture(scope="session")
def platform() -> Iterator[platformlib.Platform]:
    try:
        p, started = platformlib.ensure_up()
    except platformlib.PlatformError as e:
        pytest.fail(f"the local platform could not start:\n{e}", pytrace=False)
    # in-process clients (kubernetes, kopf, temporalio, agent_tree config) read these
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


@pytest.fixture(scope="session")
def kubectl(platform: platformlib.Platform) -> Callable[..., subprocess.CompletedProcess]:
    """kubectl(*args, input=None) -> CompletedProcess (the platform's kubectl and kubeconfig)."""
    return platform.kubectl
