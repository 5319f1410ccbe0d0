"""Fuzzing ``agent-tree validate`` (docs/reliability.md, "Fuzzing"): generated AgentTree / AgentRun
manifests - valid, one mutation away from valid, random - never crash it, every rejection names the
field at fault, and the CLI's verdict is the model's (:func:`agent_tree.spec.parse_manifest`).

Reduced in the normal test run; ``AGENT_TREE_FUZZ_EXAMPLES=1000 pytest -m fuzz tests/unit`` is the full one."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import pytest
import yaml
from fuzz_manifests import MUTATIONS, corpus, dump, fuzz_settings, manifests, names_a_field
from hypothesis import given

from agent_tree.cli import build_parser
from agent_tree.spec import ManifestError, parse_manifest

pytestmark = pytest.mark.fuzz
PARSER = build_parser()  # what ``agent-tree validate`` runs (built once: it imports every plugin)


def offline(doc: object) -> list[str]:
    """The problems ``parse_manifest`` finds (empty: valid)."""
    try:
        parse_manifest(doc, "doc")
    except ManifestError as exc:
        return exc.errors
    return []


def validate_cli(text: str) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.yaml"
        path.write_text(text)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = PARSER.parse_args(["validate", "-f", str(path)])
            rc = args.func(args)
    return rc, err.getvalue()


@fuzz_settings()
@given(manifests())
def test_validate_never_crashes_and_every_rejection_names_a_field(example):
    label, doc = example
    text = dump(doc)
    problems = offline(yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    rc, err = validate_cli(text)
    assert rc == (1 if problems else 0), err
    if label == "valid":
        assert problems == [], f"a generated valid manifest was rejected: {problems}"
    if isinstance(doc, dict):  # (a document that is not a mapping has no fields to name)
        unnamed = [p for p in problems if not names_a_field(p)]
        assert unnamed == [], f"{label}: rejections that name no field: {unnamed}"
        for problem in problems:
            assert problem.split("\n")[0] in err


def test_the_generator_covers_every_kind_and_most_mutations_are_rejected():
    docs = corpus(130)
    labels = [label for label, _ in docs]
    assert {"valid", "random"} <= set(labels)
    assert {label.removeprefix("mutated:") for label in labels if label.startswith("mutated:")} == set(MUTATIONS)
    mutated = [doc for label, doc in docs if label.startswith("mutated:")]
    rejected = sum(1 for doc in mutated if offline(doc))
    # Some mutations leave a manifest valid (a huge string where no limit applies, a wrong type that
    # is still a string): most must not.
    assert rejected / len(mutated) > 0.8, rejected
