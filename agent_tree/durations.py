"""How a duration is shown to people: one format for `kubectl get agentruns` and `agent-tree runs`."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    """Like kubectl's AGE / DURATION columns: ``4s``, ``1m32s``, ``2h3m``, ``3d4h`` (negative reads 0s)."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"
