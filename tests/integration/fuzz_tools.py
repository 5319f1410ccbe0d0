"""The tool of the worker-process fuzz test (tests/integration/test_fuzz_worker_process.py): it builds
the generated value the model asked for by ``kind`` inside the worker process and returns (or raises) it."""

from __future__ import annotations

from typing import Any


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


KINDS = {
    "text": lambda n: "plain text " * max(1, n),
    "nul": lambda n: {"note": "a\x00b", "k\x00": n},
    "surrogate": lambda n: ["a\ud800b", "\udfff"],
    "huge": lambda n: "x" * (300_000 + n),
    "nested": lambda n: _nested(50 + n),
    "too-deep": lambda n: _nested(5000),
    "bytes": lambda n: b"\xff\xfe" * (n + 1),
    "nan": lambda n: {"value": float("nan")},
    "set": lambda n: {1, 2, n},
    "object": lambda n: object(),
    "big-int": lambda n: 2**200 + n,
    "none": lambda n: None,
}


def generated(kind: str, n: int = 0) -> Any:
    """The value of ``kind`` (see :data:`KINDS`); ``raise`` raises, an unknown kind is a KeyError."""
    if kind == "raise":
        raise RuntimeError(f"generated failure \x00 \ud800 #{n}")
    return KINDS[kind](int(n))
