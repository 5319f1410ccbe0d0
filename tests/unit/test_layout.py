"""Project layout rules that, when broken, break the whole test run or the packaging."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_test_module_basenames_are_unique():
    # tests/ has no __init__.py (pytest's default "prepend" import mode), so two test files with the
    # same name in different folders make collection of the whole suite fail.
    names = Counter(p.name for p in (ROOT / "tests").rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []


def test_source_roots_are_not_packages():
    # A package named `operator` would shadow Python's standard library module.
    assert not (ROOT / "operator" / "__init__.py").exists()
    assert not (ROOT / "worker" / "__init__.py").exists()
    assert not (ROOT / "api" / "__init__.py").exists()
    assert (ROOT / "operator" / "agent_tree_operator" / "__init__.py").exists()
    assert (ROOT / "worker" / "agent_tree_worker" / "__init__.py").exists()
    assert (ROOT / "api" / "agent_tree_api" / "__init__.py").exists()
