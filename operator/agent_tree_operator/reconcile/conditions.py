"""Kubernetes-style conditions: set them without losing ``lastTransitionTime`` when nothing changed."""

from __future__ import annotations

import datetime as dt
from typing import Any


def now_iso(now: dt.datetime | None = None) -> str:
    """RFC 3339 UTC timestamp with second precision, as Kubernetes writes them."""
    now = now or dt.datetime.now(dt.UTC)
    return now.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def condition(type_: str, status: bool | str, reason: str, message: str = "") -> dict[str, Any]:
    """A condition without timestamps (``merge_conditions`` adds them)."""
    if isinstance(status, bool):
        status = "True" if status else "False"
    return {"type": type_, "status": status, "reason": reason, "message": message}


def merge_conditions(
    old: list[dict[str, Any]] | None,
    new: list[dict[str, Any]],
    now: str,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """The ``new`` conditions, keeping each old ``lastTransitionTime`` whose status did not change.

    Conditions in ``old`` of types not in ``new`` are dropped: the reconciler owns the whole list.
    """
    previous = {c.get("type"): c for c in old or []}
    out = []
    for cond in new:
        before = previous.get(cond["type"])
        since = before.get("lastTransitionTime") if before and before.get("status") == cond["status"] else None
        item = {**cond, "lastTransitionTime": since or now}
        if generation is not None:
            item["observedGeneration"] = generation
        out.append(item)
    return out


def same_conditions(old: list[dict[str, Any]] | None, new: list[dict[str, Any]] | None) -> bool:
    """Equal ignoring timestamps: the test for 'is a status write needed'.

    ``observedGeneration`` counts only when ``new`` carries it (conditions built without one are
    stamped with the generation when written).
    """
    old, new = old or [], new or []
    if len(old) != len(new):
        return False
    for a, b in zip(old, new, strict=True):
        for field in ("type", "status", "reason", "message"):
            if a.get(field, "") != b.get(field, ""):
                return False
        if "observedGeneration" in b and a.get("observedGeneration") != b["observedGeneration"]:
            return False
    return True


def get(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    for c in conditions or []:
        if c.get("type") == type_:
            return c
    return None
