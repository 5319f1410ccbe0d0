"""OperatorConfig: read once from AGENT_TREE_* variables; errors name the variable."""

from __future__ import annotations

import dataclasses

import pytest
from agent_tree_operator.config import ConfigError, OperatorConfig


def test_defaults():
    config = OperatorConfig.from_env({})
    assert config.watch_namespaces == ()
    assert config.settings.temporal_address == "localhost:7233"
    assert config.status_interval_ms == 1000 and config.status_interval == 1.0
    assert config.health_port == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.worker_image = "x"  # type: ignore[misc]


def test_values_and_platform_fallbacks():
    config = OperatorConfig.from_env(
        {
            "TEMPORAL_ADDRESS": "127.0.0.1:7000",
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "AGENT_TREE_WATCH_NAMESPACE": "team-a, team-b",
            "AGENT_TREE_WORKER_IMAGE": "reg/agent-tree:1",
            "AGENT_TREE_WORKER_RESOURCES": '{"requests": {"cpu": "100m"}, "limits": {}}',
            "AGENT_TREE_STATUS_INTERVAL_MS": "250",
            "AGENT_TREE_HEALTH_PORT": "8080",
        }
    )
    assert config.settings.temporal_address == "127.0.0.1:7000"
    assert config.settings.redis_url == "redis://127.0.0.1:1/0"
    assert config.watch_namespaces == ("team-a", "team-b")
    assert config.worker_image == "reg/agent-tree:1"
    assert config.worker_resources == {"requests": {"cpu": "100m"}}
    assert config.status_interval == 0.25
    assert [e["name"] for e in config.worker_env()] == [
        "AGENT_TREE_TEMPORAL_ADDRESS",
        "AGENT_TREE_TEMPORAL_NAMESPACE",
        "AGENT_TREE_REDIS_URL",
        "AGENT_TREE_METRICS_PORT",
    ]
    assert config.worker_env()[-1]["value"] == "9090"  # the workers' default metrics port


def test_worker_metrics_port_and_autoscale_interval():
    from agent_tree.settings import AUTO_PORT

    assert OperatorConfig.from_env({}).autoscale_interval == 5.0
    assert OperatorConfig.from_env({"AGENT_TREE_AUTOSCALE_INTERVAL_SECONDS": "2"}).autoscale_interval == 2.0
    off = OperatorConfig.from_env({"AGENT_TREE_WORKER_METRICS_PORT": "0"})
    assert off.worker_metrics_port == 0
    assert "AGENT_TREE_METRICS_PORT" not in {e["name"] for e in off.worker_env()}
    auto = OperatorConfig.from_env({"AGENT_TREE_WORKER_METRICS_PORT": "auto"})
    assert auto.worker_metrics_port == AUTO_PORT
    assert {e["name"]: e["value"] for e in auto.worker_env()}["AGENT_TREE_METRICS_PORT"] == "auto"
    # The operator's own port is a different setting; "auto" is accepted there too.
    assert OperatorConfig.from_env({"AGENT_TREE_METRICS_PORT": "auto"}).settings.metrics_port == AUTO_PORT


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"AGENT_TREE_STATUS_INTERVAL_MS": "fast"}, "AGENT_TREE_STATUS_INTERVAL_MS"),
        ({"AGENT_TREE_STATUS_INTERVAL_MS": "1"}, "AGENT_TREE_STATUS_INTERVAL_MS"),
        ({"AGENT_TREE_WATCH_NAMESPACE": "Team_A"}, "AGENT_TREE_WATCH_NAMESPACE"),
        ({"AGENT_TREE_WORKER_IMAGE_PULL_POLICY": "Sometimes"}, "AGENT_TREE_WORKER_IMAGE_PULL_POLICY"),
        ({"AGENT_TREE_WORKER_RESOURCES": "{not json"}, "AGENT_TREE_WORKER_RESOURCES"),
        ({"AGENT_TREE_WORKER_RESOURCES": '{"request": {}}'}, "AGENT_TREE_WORKER_RESOURCES"),
        ({"AGENT_TREE_METRICS_PORT": "x"}, "AGENT_TREE_METRICS_PORT"),
        ({"AGENT_TREE_METRICS_PORT": "-1"}, "AGENT_TREE_METRICS_PORT"),
        ({"AGENT_TREE_WORKER_METRICS_PORT": "70000"}, "AGENT_TREE_WORKER_METRICS_PORT"),
        ({"AGENT_TREE_AUTOSCALE_INTERVAL_SECONDS": "0"}, "AGENT_TREE_AUTOSCALE_INTERVAL_SECONDS"),
    ],
)
def test_errors_name_the_variable(env, variable):
    with pytest.raises(ValueError, match=variable):
        OperatorConfig.from_env(env)


def test_config_error_is_a_settings_error():
    from agent_tree.settings import SettingsError

    assert issubclass(ConfigError, SettingsError)


def test_connection_urls_come_from_the_worker_env_secret_when_one_is_set():
    env = {"DATABASE_URL": "postgresql://app:s3cret@db/agent_tree", "REDIS_URL": "redis://:pw@r:6379/0"}
    plain = {e["name"]: e["value"] for e in OperatorConfig.from_env(env).worker_env()}
    assert plain["AGENT_TREE_DATABASE_URL"] == env["DATABASE_URL"]
    assert plain["AGENT_TREE_REDIS_URL"] == env["REDIS_URL"]
    with_secret = OperatorConfig.from_env({**env, "AGENT_TREE_WORKER_ENV_SECRET": "agent-tree-worker-env"})
    values = [e.get("value", "") for e in with_secret.worker_env()]
    assert not any("s3cret" in v or ":pw@" in v for v in values)
    assert {e["name"] for e in with_secret.worker_env()} >= {"AGENT_TREE_TEMPORAL_ADDRESS"}


def test_worker_security_contexts_from_the_chart():
    from agent_tree_operator.config import DEFAULT_WORKER_POD_SECURITY_CONTEXT, DEFAULT_WORKER_SECURITY_CONTEXT

    default = OperatorConfig.from_env({})
    assert default.worker_pod_security_context == DEFAULT_WORKER_POD_SECURITY_CONTEXT
    assert default.worker_security_context == DEFAULT_WORKER_SECURITY_CONTEXT
    config = OperatorConfig.from_env(
        {"AGENT_TREE_WORKER_POD_SECURITY_CONTEXT": '{"runAsUser": 7, "seccompProfile": {"type": "Localhost", '
         '"localhostProfile": "p.json"}}', "AGENT_TREE_WORKER_SECURITY_CONTEXT": '{"privileged": false}'}
    )  # fmt: skip
    assert config.worker_pod_security_context == {
        "runAsUser": 7, "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}  # fmt: skip
    assert config.worker_security_context == {"privileged": False}


@pytest.mark.parametrize(
    ("variable", "value", "detail"),
    [
        ("AGENT_TREE_WORKER_POD_SECURITY_CONTEXT", "{nope", "Expecting property name"),
        (
            "AGENT_TREE_WORKER_POD_SECURITY_CONTEXT",
            '{"runAsUser": "10001"}',
            "runAsUser: Input should be a valid integer",
        ),
        ("AGENT_TREE_WORKER_SECURITY_CONTEXT", '{"readOnly": true}', "readOnly: unknown field"),
        ("AGENT_TREE_WORKER_SECURITY_CONTEXT", "[]", "expected a JSON object"),
    ],
)
def test_bad_worker_security_context_names_the_variable_and_field(variable, value, detail):
    with pytest.raises(ConfigError) as err:
        OperatorConfig.from_env({variable: value})
    assert str(err.value).startswith(f"{variable}: expected a JSON object like")
    assert detail in str(err.value)
