"""Resolving ``package.module:attribute`` entrypoints to Python callables."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

ENTRYPOINT_RE = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
)


class EntrypointError(LookupError):
    """An entrypoint that is malformed, cannot be imported, or is not callable."""


def resolve(entrypoint: str) -> Callable[..., Any]:
    """Import ``module:attr`` and return the callable.

    Raises:
        EntrypointError: with a message that says what to fix.
    """
    if not ENTRYPOINT_RE.match(entrypoint):
        raise EntrypointError(
            f"malformed entrypoint {entrypoint!r}: expected 'package.module:function' "
            "(a dotted module path, a colon, then an attribute)"
        )
    module_name, _, attr_path = entrypoint.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise EntrypointError(
            f"cannot import module {module_name!r} of entrypoint {entrypoint!r}: {exc}; "
            "check the module name and that its folder is on PYTHONPATH"
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise EntrypointError(f"module {module_name!r} has no attribute {attr_path!r}") from exc
    if not callable(obj):
        raise EntrypointError(f"entrypoint {entrypoint!r} is not callable (got {type(obj).__name__})")
    return obj
