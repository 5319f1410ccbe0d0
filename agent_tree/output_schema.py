"""``outputSchema``: the one checker of an agent's output against its JSON Schema, used everywhere.

Model agents check their final reply with it (and ask the model for a repair), Python agents'
HandoffResult payloads are checked with it (in both executors, through ``run_turn``), and
``agent-tree validate`` / the operator refuse a schema that is not a JSON Schema with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jsonschema

MAX_ERRORS = 10


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not a valid JSON Schema (of its own ``$schema`` draft), or None."""
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = json_path("", exc.absolute_path)
        return f"not a valid JSON Schema: {exc.message}" + (f" (at {where})" if where else "")
    return None


def json_path(root: str, parts: Iterable[Any]) -> str:
    """``root`` followed by ``.key`` / ``[index]`` for each part (``payload.lines[0].amount``)."""
    out = root
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_errors(schema: dict[str, Any], instance: Any, root: str = "") -> list[str]:
    """Every violation of ``schema`` by ``instance`` as ``path: message`` (at most ``MAX_ERRORS``).

    Paths start at ``root`` (``"payload"`` gives ``payload.amount: 'x' is not of type 'number'``);
    a violation of the whole instance is reported at ``root`` or, without one, at ``(root)``.
    """
    problem = schema_problem(schema)
    if problem is not None:
        return [f"the agent's outputSchema is {problem}"]
    validator = jsonschema.validators.validator_for(schema)(schema)
    found = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{json_path(root, err.absolute_path) or '(root)'}: {err.message}" for err in found[:MAX_ERRORS]]


def payload_violation(agent: str, schema: dict[str, Any] | None, status: str, payload: Any) -> dict[str, Any] | None:
    """The failed turn a handoff becomes when its payload violates the agent's ``outputSchema``.

    Returns None when there is no schema, the handoff is already ``failed`` (its own reason is kept),
    or the payload is valid; otherwise ``{"status": "failed", "summary", "payload": {"validation_errors"}}``
    to update the handoff with.
    """
    if schema is None or status == "failed":
        return None
    errors = validation_errors(schema, payload, "payload")
    if not errors:
        return None
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return {
        "status": "failed",
        "summary": f"agent {agent!r} handed back a payload that does not match its outputSchema: {errors[0]}{more}",
        "payload": {"validation_errors": errors},
    }
