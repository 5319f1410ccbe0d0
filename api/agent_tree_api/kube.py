"""The Kubernetes API over HTTP (httpx), as the API's own ServiceAccount or as the caller.

Two clients share the cluster's address and CA: the *service* client carries the API's own
credentials (kubeconfig or in-cluster ServiceAccount) and makes only TokenReviews and
SubjectAccessReviews; the *caller* client carries NO credentials of its own and sends each request
with the caller's bearer token, so the API server authenticates and authorizes the caller itself,
records them in managedFields and its audit log, and the API needs no write permission at all.
"""

from __future__ import annotations

import hashlib
import json
import ssl
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config

from agent_tree import naming
from agent_tree_api.inflight import Inflight

INCLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    """The API server refused a request (``status`` its HTTP status; 0 = not reachable)."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


def load_configuration() -> client.Configuration:
    """The API's own connection: ``KUBECONFIG`` / ``~/.kube/config``, else the pod's ServiceAccount."""
    configuration = client.Configuration()
    try:
        config.load_kube_config(client_configuration=configuration)
    except (config.ConfigException, OSError):
        config.load_incluster_config(client_configuration=configuration)
    return configuration


class Kube:
    """Service and caller requests to one API server."""

    def __init__(self, configuration: client.Configuration, timeout: float = 10.0) -> None:
        self.host = configuration.host.rstrip("/")
        verify: ssl.SSLContext | bool = False
        if configuration.verify_ssl:
            verify = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        cert = (configuration.cert_file, configuration.key_file) if configuration.cert_file else None
        if cert and isinstance(verify, ssl.SSLContext):
            service_ctx = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
            service_ctx.load_cert_chain(*cert)
        else:
            service_ctx = verify
        token = (configuration.api_key or {}).get("authorization") or (configuration.api_key or {}).get("BearerToken")
        self._service_token = token.removeprefix("Bearer ").strip() if token else None
        self._incluster = self._service_token is None and cert is None and INCLUSTER_TOKEN.exists()
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=20)
        self._service = httpx.AsyncClient(base_url=self.host, verify=service_ctx, timeout=timeout, limits=limits)
        # No client certificate here: with one, the API server would authenticate the API, not the caller.
        self._caller = httpx.AsyncClient(base_url=self.host, verify=verify, timeout=timeout, limits=limits)
        self._gets = Inflight()  # identical GETs of one caller at the same time: one request

    async def close(self) -> None:
        await self._service.aclose()
        await self._caller.aclose()

    def _service_headers(self) -> dict[str, str]:
        token = self._service_token
        if self._incluster:
            token = INCLUSTER_TOKEN.read_text().strip()  # rotated by the kubelet; re-read each time
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def as_service(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """A request with the API's own identity (TokenReview, SubjectAccessReview)."""
        return self._answer(await self._request(self._service, method, path, body, self._service_headers()))

    async def as_caller(
        self,
        token: str | None,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """A request with the caller's bearer token (None: anonymous, if the API server allows it).

        A GET that the same token is already making (same path and parameters) waits for that one's
        answer instead of sending another (:mod:`agent_tree_api.inflight`); each gets its own copy.
        """
        headers = {"Content-Type": content_type}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if method != "GET" or body is not None:
            return self._answer(await self._request(self._caller, method, path, body, headers, params))
        key = (hashlib.sha256((token or "").encode()).hexdigest(), path, tuple(sorted((params or {}).items())))
        response = await self._gets.run(key, lambda: self._request(self._caller, method, path, None, headers, params))
        return self._answer(response)

    async def _request(
        self,
        http: httpx.AsyncClient,
        method: str,
        path: str,
        body: Any,
        headers: dict[str, str],
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        content = json.dumps(body).encode() if body is not None else None
        try:
            return await http.request(method, path, content=content, headers=headers, params=params)
        except httpx.HTTPError as exc:
            raise KubeError(0, f"the Kubernetes API at {self.host} is not reachable ({type(exc).__name__})") from exc

    @staticmethod
    def _answer(response: httpx.Response) -> dict[str, Any]:
        """The response's document (parsed anew for each caller), or the API server's refusal as a KubeError."""
        if response.status_code >= 400:
            try:
                doc = response.json()
                message, reason = doc.get("message") or response.text, doc.get("reason") or ""
            except ValueError:
                message, reason = response.text or response.reason_phrase, ""
            raise KubeError(response.status_code, message, reason)
        return response.json() if response.content else {}


def resource_path(namespace: str, plural: str, name: str | None = None) -> str:
    """``/apis/agenttree.io/v1alpha1/namespaces/{ns}/{plural}[/{name}]``."""
    base = f"/apis/{naming.GROUP}/{naming.VERSION}/namespaces/{namespace}/{plural}"
    return f"{base}/{name}" if name else base
