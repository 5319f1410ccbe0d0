"""Reading AgentTree / AgentRun manifests from YAML files (``-`` for stdin), for the CLI's commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from agent_tree.spec import AgentRunManifest, AgentTreeManifest, ManifestError, parse_manifest

__all__ = ["load_documents", "load_tree"]


def load_documents(path: str) -> list[tuple[str, Any]]:
    """All YAML documents of a file (``-`` for stdin), each with a ``file#index`` label."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise ManifestError(path, [f"cannot read file: {exc.strerror}"]) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(path, [f"not valid YAML: {exc}"]) from None
    if not docs:
        raise ManifestError(path, ["the file holds no YAML document"])
    return [(f"{path}#{i}" if len(docs) > 1 else path, d) for i, d in enumerate(docs)]


def load_tree(path: str) -> tuple[AgentTreeManifest, list[AgentRunManifest]]:
    """The AgentTree of a file, plus any AgentRuns in it."""
    trees, runs = [], []
    for label, doc in load_documents(path):
        manifest = parse_manifest(doc, label)
        (trees if isinstance(manifest, AgentTreeManifest) else runs).append(manifest)
    if len(trees) != 1:
        raise ManifestError(path, [f"expected exactly one AgentTree, found {len(trees)}"])
    return trees[0], runs
