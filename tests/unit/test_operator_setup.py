"""kopf settings, the digest diff-base, the handler registry and the `agent-tree operator` command line."""

from __future__ import annotations

import kopf
import pytest
from agent_tree_operator import main as operator_main
from agent_tree_operator import preflight
from agent_tree_operator.adapters.kube import MANAGED_SELECTOR, KubeError
from agent_tree_operator.config import FINALIZER, OperatorConfig
from agent_tree_operator.handlers import runs as runs_handlers
from agent_tree_operator.handlers.setup import DigestDiffBaseStorage, configure

from agent_tree import naming
from agent_tree.cli import main


def body(spec: dict, status: dict | None = None, annotations: dict | None = None) -> kopf.Body:
    return kopf.Body(
        {
            "apiVersion": "agenttree.io/v1alpha1",
            "kind": "AgentTree",
            "metadata": {
                "name": "t",
                "namespace": "n",
                "uid": "u",
                "resourceVersion": "1",
                "annotations": annotations or {},
            },
            "spec": spec,
            "status": status or {},
        }
    )


def test_settings():
    settings = kopf.OperatorSettings()
    configure(settings, OperatorConfig(worker_limit=7))
    assert settings.persistence.finalizer == FINALIZER
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert isinstance(settings.persistence.diffbase_storage, DigestDiffBaseStorage)
    assert settings.queueing.worker_limit == 7
    assert settings.watching.server_timeout == 300 and settings.watching.client_timeout == 330
    assert settings.posting.loggers is False and settings.posting.reporting_component == "agent-tree-operator"
    assert settings.peering.standalone is True
    deployments = kopf.Resource("apps", "v1", "deployments", namespaced=True)
    runs = kopf.Resource("agenttree.io", "v1alpha1", "agentruns", namespaced=True)
    trees = kopf.Resource("agenttree.io", "v1alpha1", "agenttrees", namespaced=True)
    assert settings.watching.label_selectors.collect(deployments) == [MANAGED_SELECTOR]
    # Finished AgentRuns are never listed nor watched (issue 11 item 6); trees are all watched.
    assert settings.watching.label_selectors.collect(runs) == ["agenttree.io/finished!=true"]
    assert settings.watching.label_selectors.collect(trees) == []
    assert settings.watching.chunk_size == 500


def test_diffbase_is_a_small_digest_of_the_spec_only():
    storage = DigestDiffBaseStorage(prefix="kopf.agenttree.io", key="last-handled-configuration")
    big = {"root": "a", "agents": [{"name": "a", "entrypoint": "m:f", "instructions": "x" * 100_000}]}
    essence = storage.build(body=body(big))
    assert set(essence) == {"digest"} and len(essence["digest"]) == 16
    assert storage.build(body=body(big, status={"ready": "1/1"})) == essence  # status is not essence
    changed = {**big, "maxSteps": 3}
    assert storage.build(body=body(changed)) != essence


def test_agentruns_keep_no_diffbase_so_kopf_does_not_patch_each_new_run_for_one():
    storage = DigestDiffBaseStorage(
        prefix="kopf.agenttree.io", key="last-handled-configuration", stateless=frozenset({"AgentRun"})
    )
    run = kopf.Body({**body({"input": "x"}), "kind": "AgentRun"})
    assert storage.fetch(body=run) == storage.build(body=run)  # "unchanged": no create/update cause
    patch = kopf.Patch()
    storage.store(body=run, patch=patch, essence=storage.build(body=run))
    assert not patch
    tree = body({"root": "a"})
    assert storage.fetch(body=tree) is None  # trees keep theirs (their reconcile handlers read it)
    storage.store(body=tree, patch=patch, essence=storage.build(body=tree))
    assert "kopf.agenttree.io/last-handled-configuration" in patch["metadata"]["annotations"]


def run_body(phase: str | None, labels: dict | None = None, ttl: int | None = None, finalizers=None) -> dict:
    spec = {"treeRef": {"name": "t"}, "input": "x"} | ({"ttlSecondsAfterFinished": ttl} if ttl is not None else {})
    return {
        "apiVersion": "agenttree.io/v1alpha1",
        "kind": "AgentRun",
        "metadata": {
            "name": "r",
            "namespace": "n",
            "uid": "u",
            "resourceVersion": "7",
            "labels": labels or {},
            "finalizers": finalizers if finalizers is not None else [FINALIZER],
        },
        "spec": spec,
        "status": {"phase": phase} if phase else {},
    }


@pytest.mark.parametrize(
    ("case", "phase", "labels", "ttl", "retire"),
    [
        ("finished, no TTL", "Succeeded", None, None, True),
        ("failed", "Failed", None, None, True),
        ("cancelled, other labels kept", "Cancelled", {"team": "ap"}, None, True),
        ("running", "Running", None, None, False),
        ("new (no status)", None, None, None, False),
        ("finished with a TTL: its daemon still deletes it", "Succeeded", None, 60, False),
        ("already labelled", "Succeeded", {"agenttree.io/finished": "true"}, None, False),
    ],
)
def test_which_runs_are_retired(case, phase, labels, ttl, retire):
    raw = kopf.Body(run_body(phase, labels, ttl))
    assert runs_handlers.retirable(status=raw.status, spec=raw.spec, labels=raw.metadata.labels) is retire, case


async def test_retiring_labels_the_run_in_the_same_json_patch_that_releases_the_finalizer():
    """The label takes the run out of the operator's watch; it must never land without the release."""
    from kopf._cogs.structs import finalizers

    raw = run_body("Succeeded", {"team": "ap"})
    patch = kopf.Patch()
    await runs_handlers.retire_run(patch=patch)
    patch.fns.append(lambda b: finalizers.allow_deletion(body=b, finalizer=FINALIZER))  # what kopf adds
    assert not dict(patch)  # no merge patch (that would be a separate request, before the JSON patch)
    ops = patch.as_json_patch(raw)
    touched = {op["path"] for op in ops}
    expected = {"/metadata/labels/agenttree.io~1finished", "/metadata/labels/agenttree.io~1run", "/metadata/finalizers"}
    assert touched == expected, ops
    after = dict(raw)
    for fn in patch.fns:
        fn(after)
    assert after["metadata"]["labels"] == {"team": "ap", "agenttree.io/finished": "true", "agenttree.io/run": "r"}
    assert not after["metadata"].get("finalizers")


async def test_a_finalizer_left_over_from_a_conflicted_patch_never_rides_along_with_the_label():
    """Seen on the real platform: a run finished before kopf's first PATCH (adding the finalizer) landed;
    kopf kept that function for the next cycle, which also labelled the run: the run left the watch
    holding a finalizer, and its namespace could not be deleted."""
    from kopf._cogs.structs import finalizers

    raw = run_body("Succeeded", finalizers=[])  # kopf's first PATCH never landed
    leftover = kopf.Patch(fns=[lambda b: finalizers.block_deletion(body=b, finalizer=FINALIZER)])
    patch = kopf.Patch(leftover)  # what kopf starts the next cycle with (memory.remaining_patch)
    await runs_handlers.retire_run(patch=patch)
    after = dict(raw)
    for fn in patch.fns:
        fn(after)
    assert after["metadata"]["labels"]["agenttree.io/finished"] == "true"
    assert after["metadata"]["labels"]["agenttree.io/run"] == naming.run_label(after["metadata"]["name"])
    assert FINALIZER not in (after["metadata"].get("finalizers") or [])
    other = run_body("Succeeded", finalizers=["example.com/keep", FINALIZER])
    runs_handlers.mark_finished(other)
    assert other["metadata"]["finalizers"] == ["example.com/keep"]  # only ours is released


def test_handlers_are_registered():
    registry = kopf.get_default_registry()
    ids = {h.id for h in registry._changing.get_all_handlers()}
    assert {"reconcile", "cancel"} <= ids
    # Runs have a daemon (and so a finalizer while unfinished); trees have none: the autoscaler is one
    # background task fed by tree events, so deleting a tree never waits for the operator.
    assert {h.id for h in registry._spawning.get_all_handlers()} == {"follow"}
    assert {"phases", "autoscale", "retire"} <= {h.id for h in registry._watching.get_all_handlers()}
    assert {"agenttrees_idx", "workers_idx"} <= {h.id for h in registry._indexing.get_all_handlers()}
    assert operator_main.run  # importing main registered them


def test_operator_command_line(monkeypatch):
    seen = {}

    def fake_run(config, **kwargs):
        seen.update(kwargs, config=config)
        return 0

    monkeypatch.setattr(operator_main, "run", fake_run)
    monkeypatch.setattr(preflight, "check_kubernetes", lambda: "v1.0.0")  # no API server here
    monkeypatch.setenv("AGENT_TREE_WATCH_NAMESPACE", "team-a,team-b")
    assert main(["operator", "--standalone", "--liveness=http://0.0.0.0:8080/healthz"]) == 0
    assert seen["liveness"] == "http://0.0.0.0:8080/healthz" and seen["namespaces"] is None
    assert seen["config"].watch_namespaces == ("team-a", "team-b")
    assert main(["operator", "-n", "x", "-n", "y*"]) == 0 and seen["namespaces"] == ("x", "y*")
    assert main(["operator", "-A"]) == 0 and seen["namespaces"] == ()


def test_operator_command_reports_bad_config(monkeypatch, capsys):
    monkeypatch.setenv("AGENT_TREE_STATUS_INTERVAL_MS", "soon")
    assert main(["operator"]) == 2
    assert "AGENT_TREE_STATUS_INTERVAL_MS='soon' is not an integer" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("status", "message", "rejected"),
    [
        (422, "spec.template...: Invalid value", True),
        (500, "failed to create typed patch object (ns/x; apps/v1, Kind=Deployment): .spec...", True),
        (500, "etcdserver: request timed out", False),
        (409, "conflict", False),
        (0, "ConnectionRefusedError", False),
    ],
)
def test_which_api_errors_are_final(status, message, rejected):
    assert KubeError(status, message, "PATCH", "/x").rejected is rejected


def test_command_line_namespaces_become_the_configuration(monkeypatch):
    """`-n x` is what the operator watches AND what it reports (the startup log reads the config)."""
    seen = {}
    monkeypatch.setattr(operator_main.metrics, "serve", lambda port: None)
    monkeypatch.setattr(operator_main.kopf, "run", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(operator_main, "build_context", lambda config: type("Ctx", (), {"config": config})())
    config = OperatorConfig.from_env({"AGENT_TREE_WATCH_NAMESPACE": "team-a"})
    assert operator_main.run(config, namespaces=("x", "y*")) == 0
    assert seen["namespaces"] == ["x", "y*"] and seen["clusterwide"] is False
    assert seen["memo"].ctx.config.watch_namespaces == ("x", "y*")
    assert operator_main.run(config, namespaces=()) == 0
    assert seen["clusterwide"] is True and seen["memo"].ctx.config.watch_namespaces == ()


def test_names_labels_and_annotations_the_operator_writes_come_from_naming():
    """No hand-written ``agenttree.io/...`` or managed-by key in the operator (issue 11 item 4)."""
    import ast
    import re
    from pathlib import Path

    import agent_tree_operator

    pattern = re.compile(r"^(agenttree\.io/|app\.kubernetes\.io/managed-by)")
    found = []
    for path in sorted(Path(agent_tree_operator.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and pattern.match(node.value):
                found.append(f"{path.name}:{node.lineno}: {node.value}")
    assert not found, "use agent_tree.naming:\n" + "\n".join(found)
