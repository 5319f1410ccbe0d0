"""Every CLI command facing a dead service ends with ONE line naming the service, the address and the
variable that sets it, exit 3, no traceback (``--debug`` shows one); passwords are never printed
(issue 10 item 12).

The commands run as real subprocesses of the ``agent-tree`` console script (so ``agent_tree.cli:run``
and its ``os._exit`` path are what is tested), pointed at a loopback port that is bound but not
listening: connecting to it is refused, as with a stopped service. They start all at once so the
module takes about as long as its slowest command.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
from agent_tree_worker import reach
from redis import exceptions as redis_errors
from temporalio.service import RPCError, RPCStatusCode

from agent_tree.settings import Settings
from agent_tree.unavailable import ServiceUnavailable, reason, redact, url_address

ROOT = Path(__file__).resolve().parents[2]
AGENT_TREE = str(Path(sys.executable).parent / "agent-tree")
TREE = str(ROOT / "examples" / "invoice" / "agenttree.yaml")
PASSWORD = "s3cret-pw"
CLEAN_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}


@pytest.fixture(scope="module")
def dead_port() -> Iterator[int]:
    """A loopback port that refuses connections for the whole module (bound, never listening)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def cases(port: int, kubeconfig: Path) -> dict[str, tuple[list[str], dict[str, str], str, str]]:
    """name -> (argv, env, service, variable)."""
    pg = {"AGENT_TREE_DATABASE_URL": f"postgresql://agent:{PASSWORD}@127.0.0.1:{port}/agent_tree"}
    return {
        "history": (["history", "ns/run"], pg, "PostgreSQL", "AGENT_TREE_DATABASE_URL"),
        "runs": (["runs"], pg, "PostgreSQL", "AGENT_TREE_DATABASE_URL"),
        "logs": (["logs", "agentrun.ns.run.u"], pg, "PostgreSQL", "AGENT_TREE_DATABASE_URL"),
        "logs-follow-postgres": (["logs", "-f", "agentrun.ns.run.u"], pg, "PostgreSQL", "AGENT_TREE_DATABASE_URL"),
        "db-migrate": (["db", "migrate"], pg, "PostgreSQL", "AGENT_TREE_DATABASE_URL"),
        # the platform's env file sets the unprefixed variable: the message names that one
        "db-purge": (
            ["db", "purge", "--older-than", "30d"],
            {"DATABASE_URL": pg["AGENT_TREE_DATABASE_URL"]},
            "PostgreSQL",
            "DATABASE_URL",
        ),
        "submit": (
            ["submit", "-f", TREE, "-i", "hi"],
            {"AGENT_TREE_TEMPORAL_ADDRESS": f"127.0.0.1:{port}"},
            "Temporal",
            "AGENT_TREE_TEMPORAL_ADDRESS",
        ),
        "logs-follow-redis": (
            ["logs", "-f", "agentrun.ns.run.u"],
            {"AGENT_TREE_REDIS_URL": f"redis://default:{PASSWORD}@127.0.0.1:{port}/0"},
            "Redis",
            "AGENT_TREE_REDIS_URL",
        ),
        "operator": (
            ["operator", "-n", "cli-none"],
            {"KUBECONFIG": str(kubeconfig)},
            "the Kubernetes API",
            "KUBECONFIG",
        ),
    }


def kubeconfig_for(port: int, path: Path) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: dead\n"
        f"clusters: [{{name: dead, cluster: {{server: 'https://127.0.0.1:{port}', insecure-skip-tls-verify: true}}}}]\n"
        f"users: [{{name: u, user: {{token: {PASSWORD}}}}}]\n"
        "contexts: [{name: dead, context: {cluster: dead, user: u}}]\n"
    )
    return path


def run(argv: list[str], env: dict[str, str]) -> tuple[int, str, float]:
    """(exit code, stderr, seconds) of one ``agent-tree`` process."""
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [AGENT_TREE, *argv], env={**CLEAN_ENV, **env}, capture_output=True, text=True, cwd=ROOT, timeout=120
        )
    except subprocess.TimeoutExpired as exc:
        return -9, f"{exc.stderr or ''}\n<killed after 120 s>", 120.0
    return proc.returncode, proc.stderr, time.monotonic() - t0


@pytest.fixture(scope="module")
def results(
    request: pytest.FixtureRequest, dead_port: int, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[tuple[int, str, float], tuple[int, str, float]]]:
    """The selected cases, each plain and with ``--debug``, six processes at a time (they mostly wait)."""
    selected = {
        item.callspec.params["name"]
        for item in request.session.items
        if item.module is request.module and "name" in getattr(getattr(item, "callspec", None), "params", {})
    }
    table = cases(dead_port, kubeconfig_for(dead_port, tmp_path_factory.mktemp("kube") / "config"))
    jobs = [(name, extra) for name in sorted(selected) for extra in ([], ["--debug"])]
    with ThreadPoolExecutor(max_workers=6) as pool:
        done = list(pool.map(lambda job: run([*table[job[0]][0], *job[1]], table[job[0]][1]), jobs))
    by_job = dict(zip(((n, bool(e)) for n, e in jobs), done, strict=True))
    return {name: (by_job[name, False], by_job[name, True]) for name in selected}


@pytest.mark.parametrize("name", list(cases(0, Path("/dev/null"))))
def test_dead_service_is_one_line_naming_service_address_and_variable(
    name: str, dead_port: int, results: dict[str, tuple[tuple[int, str, float], tuple[int, str, float]]]
) -> None:
    _, _, service, variable = cases(dead_port, Path("/dev/null"))[name]
    plain, debug = results[name]

    code, err, seconds = plain
    assert code == 3, err
    assert "Traceback" not in err
    assert err.count("\n") == 1, f"expected exactly one line on stderr:\n{err}"
    assert err.startswith(f"agent-tree: cannot reach {service} at ")
    assert f"127.0.0.1:{dead_port}" in err and f"({variable})" in err
    assert err.rstrip().endswith("connection refused"), err
    assert PASSWORD not in err
    # A hang (e.g. `logs -f` polling a dead database forever) is killed at 120 s. The retry itself is
    # bounded in test_cli_retry_is_bounded; the rest is interpreter start-up, slow on a loaded machine.
    assert seconds < 90, f"{name} took {seconds:.1f}s to give up"

    code, err, _ = debug
    assert code == 3, err
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1] == plain[1].strip()


# --- the pieces, without subprocesses -------------------------------------------------------------


def test_redact_hides_every_password_in_urls() -> None:
    assert redact("postgresql://agent:pw@db:5432/x") == "postgresql://agent:***@db:5432/x"
    assert (
        redact("redis://:pw@r:6379/0 and postgres://u:p%40ss@h/d") == "redis://:***@r:6379/0 and postgres://u:***@h/d"
    )
    assert redact("postgresql://agent@db/x") == "postgresql://agent@db/x"


def test_url_address_is_host_and_port_only() -> None:
    assert url_address("postgresql://agent:pw@db.example:5433/agent_tree?sslmode=require") == "db.example:5433"
    assert url_address("redis://[::1]:6379/0") == "[::1]:6379"
    assert url_address("not a url") == "not a url"


def test_reason_is_short() -> None:
    assert reason(ConnectionRefusedError(111, "Connect call failed")) == "connection refused"
    assert reason(socket.gaierror(-2, "Name or service not known")) == "cannot resolve the host name"
    assert reason(TimeoutError()) == "timed out"
    assert reason(redis_errors.ConnectionError("Error 111 connecting to 127.0.0.1:1.")) == "connection refused"
    assert reason(RuntimeError("Failed client connect: ... ConnectionRefused ...")) == "connection refused"


def test_settings_remember_which_variable_set_a_value() -> None:
    s = Settings.from_env({"DATABASE_URL": "postgresql://x/y", "AGENT_TREE_REDIS_URL": "redis://r"})
    assert s.variable("database_url") == "DATABASE_URL"
    assert s.variable("redis_url") == "AGENT_TREE_REDIS_URL"
    assert s.variable("temporal_address") == "AGENT_TREE_TEMPORAL_ADDRESS"  # the default
    assert Settings.from_env({"AGENT_TREE_DATABASE_URL": "a", "DATABASE_URL": "b"}).variable("database_url") == (
        "AGENT_TREE_DATABASE_URL"
    )
    assert s == Settings.from_env({"AGENT_TREE_DATABASE_URL": "postgresql://x/y", "REDIS_URL": "redis://r"})


def test_translate_maps_each_library_error_to_its_service() -> None:
    settings = Settings.from_env(
        {
            "AGENT_TREE_DATABASE_URL": f"postgresql://u:{PASSWORD}@db:5432/x",
            "REDIS_URL": "redis://r:6379/0",
            "AGENT_TREE_TEMPORAL_ADDRESS": "tmp:7233",
        }
    )
    every = ("PostgreSQL", "Redis", "Temporal")

    def mapped(exc: BaseException, used: tuple[str, ...] = every) -> str | None:
        found = reach.translate(exc, settings, used)
        return str(found) if found else None

    assert mapped(ConnectionRefusedError(111, "x")) == (
        "cannot reach PostgreSQL at db:5432 (AGENT_TREE_DATABASE_URL): connection refused"
    )
    assert mapped(asyncpg.InvalidPasswordError("password authentication failed for user")) == (
        "cannot use PostgreSQL at db:5432 (AGENT_TREE_DATABASE_URL): password authentication failed for user"
    )
    assert mapped(asyncpg.UndefinedTableError('relation "runs" does not exist')) == (
        "cannot use PostgreSQL at db:5432 (AGENT_TREE_DATABASE_URL): no agent-tree history schema "
        '(relation "runs" does not exist); run: agent-tree db migrate'
    )
    assert mapped(RPCError("Namespace nope is not found.", RPCStatusCode.NOT_FOUND, b"")) == (
        "cannot use Temporal at tmp:7233 (AGENT_TREE_TEMPORAL_NAMESPACE): no namespace 'default' "
        "(Namespace nope is not found.)"
    )
    assert mapped(redis_errors.ConnectionError("Error 111 connecting")) == (
        "cannot reach Redis at r:6379 (REDIS_URL): connection refused"
    )
    assert mapped(RPCError("unavailable", RPCStatusCode.UNAVAILABLE, b"")) == (
        "cannot reach Temporal at tmp:7233 (AGENT_TREE_TEMPORAL_ADDRESS): unavailable"
    )
    bridge = (
        "Failed client connect: `get_system_info` call error after connection: Status { code: Unimplemented, "
        'message: "grpc-status header missing, mapped from HTTP status code 404", metadata: ...'
    )
    assert mapped(RuntimeError(bridge)).endswith(
        "something answered, but not Temporal's frontend (Unimplemented: grpc-status header missing, "
        "mapped from HTTP status code 404)"
    )
    assert mapped(ConnectionRefusedError(111, "x"), ("Temporal",)) is None  # not a service the command uses
    assert mapped(ValueError("a bug")) is None  # everything else keeps its traceback
    assert mapped(RPCError("nope", RPCStatusCode.NOT_FOUND, b"")) is None


def test_services_context_chains_the_original_error() -> None:
    settings = Settings.from_env({"AGENT_TREE_DATABASE_URL": "postgresql://db/x"})

    async def boom() -> None:
        raise ConnectionRefusedError(111, "Connect call failed")

    with pytest.raises(ServiceUnavailable) as caught, reach.services(settings, "PostgreSQL"):
        asyncio.run(boom())
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    assert caught.value.variable == "AGENT_TREE_DATABASE_URL"


def test_cli_retry_is_bounded(dead_port: int) -> None:
    """The history store a command opens gives up after CLI_RETRY_SECONDS (workers retry 30 s)."""
    from agent_tree_worker.cli import CLI_RETRY_SECONDS, _store

    store = _store(Settings.from_env({"AGENT_TREE_DATABASE_URL": f"postgresql://u@127.0.0.1:{dead_port}/x"}))
    assert store.retry_seconds == CLI_RETRY_SECONDS <= 5

    async def attempt() -> float:
        t0 = time.monotonic()
        with pytest.raises(OSError):
            await store.runs_of_tree("ns", "t")
        await store.close()
        return time.monotonic() - t0

    took = asyncio.run(attempt())
    assert 1.0 <= took < CLI_RETRY_SECONDS + 2, took  # it retried, and gave up within the window
