"""kopf settings, the digest diff-base, the handler registry and the `agent-tree operator` command line."""

from __future__ import annotations

import kopf
import pytest
from agent_tree_operator import main as operator_main
from agent_tree_operator import preflight
from agent_tree_operator.adapters.kube import MANAGED_SELECTOR, KubeError
from agent_tree_operator.config import FINALIZER, OperatorConfig
from agent_tree_operator.handlers.setup import DigestDiffBaseStorage, configure

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
    (selector,) = list(settings.watching.label_selectors)
    assert settings.watching.label_selectors[selector] == MANAGED_SELECTOR


def test_diffbase_is_a_small_digest_of_the_spec_only():
    storage = DigestDiffBaseStorage(prefix="kopf.agenttree.io", key="last-handled-configuration")
    big = {"root": "a", "agents": [{"name": "a", "entrypoint": "m:f", "instructions": "x" * 100_000}]}
    essence = storage.build(body=body(big))
    assert set(essence) == {"digest"} and len(essence["digest"]) == 16
    assert storage.build(body=body(big, status={"ready": "1/1"})) == essence  # status is not essence
    changed = {**big, "maxSteps": 3}
    assert storage.build(body=body(changed)) != essence


def test_handlers_are_registered():
    registry = kopf.get_default_registry()
    ids = {h.id for h in registry._changing.get_all_handlers()}
    assert {"reconcile", "cancel"} <= ids
    # Runs have a daemon (and so a finalizer while unfinished); trees have none: the autoscaler is one
    # background task fed by tree events, so deleting a tree never waits for the operator.
    assert {h.id for h in registry._spawning.get_all_handlers()} == {"follow"}
    assert {"phases", "autoscale"} <= {h.id for h in registry._watching.get_all_handlers()}
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
