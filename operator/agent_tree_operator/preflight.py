"""Checks the operator runs before handing over to kopf: is the Kubernetes API there at all?

kopf retries an unreachable API server forever (one log line per attempt), so an operator pointed
at the wrong cluster looks busy instead of broken. One ``GET /version`` with a bounded retry turns
that into one line naming the server and where its address came from, and exit code 3.
"""

from __future__ import annotations

import os
import time

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from agent_tree.settings import SettingsError
from agent_tree.unavailable import KUBERNETES, ServiceUnavailable, reason

CHECK_SECONDS = 3.0  # total time the API server gets to answer before the operator gives up


def kube_source(env: dict[str, str] | os._Environ[str] | None = None) -> str:
    """Where the client takes the API server's address from, as the user would set it."""
    env = os.environ if env is None else env
    if env.get("KUBERNETES_SERVICE_HOST"):
        return "in-cluster: KUBERNETES_SERVICE_HOST"
    return "KUBECONFIG" if env.get("KUBECONFIG") else "KUBECONFIG unset: ~/.kube/config"


def load_configuration() -> client.Configuration:
    """The client configuration the operator will use (in-cluster account, else the kubeconfig).

    Raises:
        SettingsError: there is no configuration at all, or the kubeconfig cannot be used.
    """
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError, ValueError) as exc:
            raise SettingsError(
                f"no usable Kubernetes configuration ({kube_source()}): {str(exc).rstrip('.')}; "
                "set KUBECONFIG to a kubeconfig file, or run in a pod with a service account"
            ) from None
    return client.Configuration.get_default_copy()


def check_kubernetes(seconds: float = CHECK_SECONDS) -> str:
    """``GET /version`` until it answers or ``seconds`` pass; returns the server's git version.

    Raises:
        SettingsError: no usable configuration.
        ServiceUnavailable: the API server did not answer (or refused the credentials).
    """
    configuration = load_configuration()
    configuration.retries = False  # one attempt per call: the loop below bounds the time
    deadline = time.monotonic() + seconds
    with client.ApiClient(configuration) as api:
        while True:
            left = max(deadline - time.monotonic(), 0.5)
            try:
                return client.VersionApi(api).get_code(_request_timeout=(min(left, 3.0), left)).git_version
            except ApiException as exc:
                if exc.status in (401, 403):
                    raise ServiceUnavailable(
                        KUBERNETES,
                        configuration.host,
                        kube_source(),
                        f"HTTP {exc.status} {exc.reason}: the credentials were refused",
                    ) from exc
                failure: BaseException = exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                failure = exc
            if time.monotonic() + 0.5 > deadline:
                raise ServiceUnavailable(KUBERNETES, configuration.host, kube_source(), reason(failure)) from failure
            time.sleep(0.5)
