"""The operator's one way to call the Kubernetes API: the ``kubernetes`` package's synchronous REST
client, on a dedicated thread pool, with plain dicts in and out.

Why this shape: the client is synchronous, and a blocking call inside a kopf handler stalls every
resource, so each call runs in a thread (``loop.run_in_executor``) sized by
``AGENT_TREE_API_THREADS``. Requests go through the client's raw REST layer with JSON dicts, so
server-side apply sends exactly the fields the operator owns (a typed model would add or drop some).
kopf itself keeps its own connection for watching, its finalizer/progress annotations and Events.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from agent_tree import naming
from agent_tree_operator import metrics
from agent_tree_operator.config import AUTOSCALER_FIELD_MANAGER, FIELD_MANAGER

log = logging.getLogger(__name__)

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
MANAGED_SELECTOR = naming.MANAGED_SELECTOR
TIMEOUT = (5, 30)


class KubeError(RuntimeError):
    """A failed API call; ``status`` is the HTTP status (0 = no response), ``message`` the server's text."""

    def __init__(self, status: int, message: str, method: str, path: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{method} {path}: HTTP {status}: {message}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def rejected(self) -> bool:
        """The server refused the object itself: retrying the same request cannot succeed."""
        if self.status in (400, 403, 422):
            return True
        # Server-side apply reports an object it cannot type (a field not in the schema, a malformed
        # quantity) as a 500.
        return self.status == 500 and ("typed patch object" in self.message or "failed to convert" in self.message)


def load_api_client(threads: int) -> client.ApiClient:
    """An ApiClient from the in-cluster service account, or from KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = max(threads, 4)
    return client.ApiClient(configuration)


class Kube:
    """Async facade over the synchronous client. One instance per operator process."""

    def __init__(self, api: client.ApiClient, threads: int = 16) -> None:
        self.api = api
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube-api")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.api.close()

    # --- raw ------------------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        method_, url, headers_, body_, post = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()) or None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(method_, url, headers_, body_, post, _request_timeout=TIMEOUT)
            response.read()
        except ApiException as exc:
            raise KubeError(exc.status or 0, _reason(exc.body) or str(exc.reason), method, path) from None
        except Exception as exc:  # urllib3 connection errors and friends: no response at all
            raise KubeError(0, f"{type(exc).__name__}: {exc}", method, path) from None
        text = response.data.decode() if response.data else ""
        if not 200 <= response.status < 300:
            raise KubeError(response.status, _reason(text) or response.reason or "", method, path)
        return json.loads(text) if text else None

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
    ) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, lambda: self._call(method, path, body, content_type, query))

    # --- worker Deployments ------------------------------------------------------------------------
    async def apply_deployment(self, deployment: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply with the operator's field manager; conflicts on fields we set are forced."""
        meta = deployment["metadata"]
        path = f"/apis/apps/v1/namespaces/{meta['namespace']}/deployments/{quote(meta['name'])}"
        result = await self.call("PATCH", path, deployment, APPLY, {"fieldManager": FIELD_MANAGER, "force": "true"})
        metrics.API_WRITES.labels("deployment", "apply").inc()
        return result

    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> dict[str, Any]:
        """Set ``spec.replicas`` by server-side apply under the autoscaler's own field manager.

        The tree reconcile applies Deployments without ``replicas`` when an agent autoscales, so the two
        managers never fight over the field; ``force`` takes it back from a manual ``kubectl scale``.
        The apply names only the field it owns, so it never creates a Deployment: a missing one is a 404
        or 422 (no selector/template), reported as a KubeError.
        """
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{quote(name)}"
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": int(replicas)},
        }
        result = await self.call(
            "PATCH", path, body, APPLY, {"fieldManager": AUTOSCALER_FIELD_MANAGER, "force": "true"}
        )
        metrics.API_WRITES.labels("deployment", "scale").inc()
        return result

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.call("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{quote(name)}")
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    async def delete_deployment(self, namespace: str, name: str) -> bool:
        """Delete (background propagation); False when it was already gone."""
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{quote(name)}"
        try:
            await self.call("DELETE", path, {"propagationPolicy": "Background"})
        except KubeError as exc:
            if exc.not_found:
                return False
            raise
        metrics.API_WRITES.labels("deployment", "delete").inc()
        return True

    async def list_worker_deployments(self, namespace: str, tree: str) -> list[dict[str, Any]]:
        selector = f"{MANAGED_SELECTOR},{naming.LABEL_TREE}={tree}"
        result = await self.call(
            "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments", query={"labelSelector": selector}
        )
        return list(result.get("items") or [])

    async def existing_secrets(self, namespace: str, names: set[str]) -> set[str]:
        """The subset of ``names`` that exist as Secrets (metadata only; values are never read)."""
        found = set()
        for name in sorted(names):
            try:
                await self.call("GET", f"/api/v1/namespaces/{namespace}/secrets/{quote(name)}")
            except KubeError as exc:
                if exc.not_found:
                    continue
                raise
            found.add(name)
        return found

    # --- custom resources ------------------------------------------------------------------------
    @staticmethod
    def _cr_path(plural: str, namespace: str, name: str | None = None) -> str:
        path = f"/apis/{naming.GROUP}/{naming.VERSION}/namespaces/{namespace}/{plural}"
        return f"{path}/{quote(name)}" if name else path

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.call("GET", self._cr_path(plural, namespace, name))
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    async def create(self, plural: str, namespace: str, body: Mapping[str, Any]) -> bool:
        """Create a custom resource; False when one of that name exists already (creating is idempotent)."""
        try:
            await self.call("POST", self._cr_path(plural, namespace), dict(body))
        except KubeError as exc:
            if exc.conflict:
                return False
            raise
        metrics.API_WRITES.labels(plural, "create").inc()
        return True

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """JSON-merge-patch ``status`` into the status subresource; None when the object is gone.

        No uid precondition: the API server ignores metadata in status patches. A re-created namesake
        is safe anyway, because kopf stops a run's daemon before it releases the finalizer.
        """
        try:
            result = await self.call(
                "PATCH", self._cr_path(plural, namespace, name) + "/status", {"status": dict(status)}, MERGE
            )
        except KubeError as exc:
            if exc.not_found:
                return None
            raise
        metrics.STATUS_PATCHES.labels(plural).inc()
        metrics.API_WRITES.labels(plural, "status").inc()
        return result

    async def delete(self, plural: str, namespace: str, name: str, uid: str | None = None) -> bool:
        body = {"preconditions": {"uid": uid}} if uid else None
        try:
            await self.call("DELETE", self._cr_path(plural, namespace, name), body)
        except KubeError as exc:
            if exc.not_found or exc.conflict:
                return False
            raise
        metrics.API_WRITES.labels(plural, "delete").inc()
        return True


def _reason(text: str | None) -> str:
    """The ``message`` of a Kubernetes Status body, or the text itself."""
    if not text:
        return ""
    try:
        body = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return text[:500]
