"""Process and port helpers for the local platform (stdlib only, Linux /proc)."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    """A free loopback port, chosen by the kernel (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether a server could listen on port now (SO_REUSEADDR, as servers do:
    connections of a stopped server in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from field 3 (state) on, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> str | None:
    """The process start time (clock ticks since boot): with the pid, an identity."""
    f = _stat_fields(pid)
    return f[19] if f else None


def _reap(pid: int) -> None:
    # When the process is our own child (the test fixture starts the platform
    # in-process) it stays a zombie until waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def alive(pid: int | None, started: str | None = None) -> bool:
    """True when pid runs (not a zombie) and, if given, has this start time."""
    if not pid:
        return False
    _reap(pid)
    f = _stat_fields(pid)
    if f is None or f[0] in ("Z", "X"):
        return False
    return started is None or f[19] == started


def group_members(pgid: int) -> list[int]:
    """Pids whose process group is pgid."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = _stat_fields(int(entry))
            if f and int(f[2]) == pgid and f[0] not in ("Z", "X"):
                out.append(int(entry))
    return out


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def terminate(pid: int, started: str | None, sig: int = signal.SIGTERM, grace: float = 20.0) -> None:
    """Signal the process group of pid (a session leader we started), wait up
    to grace seconds, then SIGKILL the group. Returns when it is gone."""
    if not alive(pid, started):
        return
    pgid = pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive(pid, started) and not group_members(pgid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (alive(pid, started) or group_members(pgid)):
        time.sleep(0.05)


def spawn(
    argv: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> subprocess.Popen:
    """Start argv detached in its own session (so `down` can signal its whole
    process group and it outlives the command that started it), stdin from
    /dev/null, stdout+stderr appended to log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} start: {' '.join(argv)}\n".encode())
        out.flush()
        kwargs = {}
        if user is not None:
            pw = pwd.getpwnam(user)
            kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
            **kwargs,
        )


def tail(path: Path, lines: int = 25) -> str:
    try:
        data = path.read_bytes()[-16384:].decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(data.splitlines()[-lines:])
