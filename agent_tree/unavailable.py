"""One error for a service the CLI cannot reach, and the helpers that make its message safe to print.

Every ``agent-tree`` command that talks to PostgreSQL, Temporal, Redis or the Kubernetes API turns a
failure to reach it into :class:`ServiceUnavailable`; ``agent_tree.cli.main`` prints it as ONE line
naming the service, the address and the variable that sets it, and exits with
:data:`EXIT_UNAVAILABLE` (``--debug`` adds the traceback). Addresses are printed without passwords.
"""

from __future__ import annotations

import re
import socket
from urllib.parse import urlsplit

EXIT_UNAVAILABLE = 3  # a service the command needs is down or unreachable (2 = bad usage, 1 = the work failed)
POSTGRES, TEMPORAL, REDIS, KUBERNETES = "PostgreSQL", "Temporal", "Redis", "the Kubernetes API"

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*):[^@/\s]*@")
_REASONS = (
    # (pattern in an error's text, short reason): the texts of asyncpg/OSError, the Temporal core
    # bridge (Rust/tonic) and redis-py for the same few causes.
    (re.compile(r"connection refused|(?:errno|error) 111\b|ConnectionRefused", re.I), "connection refused"),
    (
        re.compile(
            r"name or service not known|nodename nor servname|Temporary failure in name resolution|"
            r"failed to lookup address|dns error|No address associated",
            re.I,
        ),
        "cannot resolve the host name",
    ),
    (re.compile(r"timed? ?out|deadline", re.I), "timed out"),
    (
        re.compile(r"no route to host|network is unreachable|(?:errno|error) 113\b|(?:errno|error) 101\b", re.I),
        "no route to host",
    ),
    (re.compile(r"connection reset|broken pipe|unexpected eof|connection was closed", re.I), "connection reset"),
)


class ServiceUnavailable(RuntimeError):
    """A service the command needs could not be reached (or answered, but cannot be used as configured).

    Attributes:
        service: what it is, e.g. ``PostgreSQL``.
        address: where it was looked for (``host:port`` or a URL), without a password.
        variable: the environment variable (or option) that sets the address.
        reason: a short cause, e.g. ``connection refused``.
        reached: the service answered but refused (credentials, no such database or namespace, no
            schema): the message says "cannot use" instead of "cannot reach".
    """

    def __init__(self, service: str, address: str, variable: str, reason: str, *, reached: bool = False) -> None:
        self.service = service
        self.address = redact(address)
        self.variable = variable
        self.reason = redact(reason)
        verb = "cannot use" if reached else "cannot reach"
        super().__init__(f"{verb} {service} at {self.address} ({variable}): {self.reason}")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced: ``user:pass@`` becomes ``user:***@``."""
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", text)


def url_address(url: str) -> str:
    """The ``host:port`` a service URL points to (no user, no password, no path), or the redacted URL."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return redact(url)
    if not host:
        return redact(url)
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else host


def reason(exc: BaseException) -> str:
    """A short, human reason for a connection failure, e.g. ``connection refused``."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "cannot resolve the host name"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = f"{type(exc).__name__}: {exc}"
    for pattern, short in _REASONS:
        if pattern.search(text):
            return short
    first = (str(exc) or type(exc).__name__).strip().splitlines()[0]
    return redact(first[:200])
