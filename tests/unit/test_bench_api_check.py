"""bench/bench_api.py fails the bench unless every client got every step exactly once, in order, then ``end``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_api import check_delivery


def client(ids: list[str], end: bool = True, error: str | None = None) -> dict:
    return {"run": "r", "ids": ids, "end": {"status": "completed"} if end else None, "error": error}


def test_a_complete_client_passes():
    report = check_delivery([client(["1", "2", "3"]), client(["1", "2", "3"])], 3)
    assert (report["complete"], report["failed"], report["events"]) == (2, 0, 6)


@pytest.mark.parametrize(
    ("received", "end", "error", "what"),
    [
        (["1", "3"], True, None, {"missing": 1}),
        (["1", "2", "2", "3"], True, None, {"duplicates": 1}),
        (["1", "3", "2"], True, None, {"in_order": False}),
        (["1", "2", "3"], False, None, {"end": False}),
        (["1", "2", "3"], True, "told to reconnect (fell behind)", {"error": "told to reconnect (fell behind)"}),
    ],
)
def test_a_missing_duplicate_reordered_or_unfinished_stream_fails(received, end, error, what):
    report = check_delivery([client(["1", "2", "3"]), client(received, end, error)], 3)
    assert (report["complete"], report["failed"]) == (1, 1)
    failure = report["failures"][0]
    assert {k: failure[k] for k in what} == what
