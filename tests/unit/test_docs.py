"""Claims in docs/ that the code can contradict: checked against the code, so they cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from agent_tree_operator.config import OperatorConfig

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "agent-tree" / "templates" / "_rbac_rules.tpl"


def chart_rules() -> set[tuple[str, str, frozenset[str]]]:
    """(group, resource, verbs) of every rule in the chart's RBAC template, template directives dropped."""
    lines = [line for line in RULES.read_text().splitlines() if "{{" not in line and "*/" not in line]
    text = "\n".join(line for line in lines if line.startswith(("-", " ", "#")))
    out = set()
    for rule in yaml.safe_load(text):
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.add((group, resource, frozenset(rule["verbs"])))
    return out


def documented_rules() -> set[tuple[str, str, frozenset[str]]]:
    """The Permissions table of docs/operator.md, in the same shape."""
    section = (ROOT / "docs" / "operator.md").read_text().split("## Permissions", 1)[1].split("\n## ", 1)[0]
    out = set()
    for row in re.findall(r"^\| (.+?) \| (.+?) \| (.+?) \|$", section, flags=re.M):
        group, resources, verbs = row
        if group in ("API group", "---"):
            continue
        group = "" if group == "core" else group.strip("`")
        verb_set = frozenset(v.strip() for v in re.sub(r"\(.*?\)", "", verbs).split(","))
        for resource in re.findall(r"`([^`]+)`", resources):
            out.add((group, resource, verb_set))
    return out


def test_operator_permissions_table_matches_the_chart():
    documented, granted = documented_rules(), chart_rules()
    assert granted, "no rules parsed from the chart"
    assert documented == granted, (
        f"documented but not granted: {sorted(documented - granted)}; granted but not documented: "
        f"{sorted(granted - documented)}"
    )


def test_health_port_default_in_contracts_is_the_codes():
    row = next(
        line for line in (ROOT / "docs" / "contracts.md").read_text().splitlines() if "AGENT_TREE_HEALTH_PORT" in line
    )
    assert row.rstrip(" |").endswith(f"`{OperatorConfig.health_port}`")


def test_durable_runs_doc_sources_the_platform_env_file():
    text = (ROOT / "docs" / "durable-runs.md").read_text()
    assert "exports the env" not in text
    assert "hack/platform envfile" in text
