"""A small async client of the agent-tree REST API (``agent-tree api``), typed with the API's own models.

::

    async with Client("https://agent-tree.example", token=token) as api:
        created = await api.create_run("billing", {"treeRef": {"name": "invoice"}, "input": "Why?"},
                                       generate_name="why-")
        async for event in api.events("billing", created.name):
            print(event.event, event.data)

The token is the caller's Kubernetes bearer token (``kubectl create token NAME``): the argument, else
``$AGENT_TREE_TOKEN``. Every refusal raises :class:`ApiError` with the API's status, reason, message
and field errors; a server that cannot be reached raises :class:`ApiUnreachable` (status 0).
:meth:`Client.events` follows a run's Server-Sent Events and reconnects by itself with
Last-Event-ID, so a cut connection loses and repeats nothing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from agent_tree.api_models import (
    ApprovalList,
    Created,
    DecisionResult,
    ErrorItem,
    Problem,
    RunList,
    RunSummary,
    RunView,
    StepItem,
    StepPage,
    TreeList,
    TreeView,
    WhoAmI,
)
from agent_tree.sse import Event, SseDecoder

__all__ = ["ApiError", "ApiUnreachable", "Client", "Event"]

TOKEN_ENV = "AGENT_TREE_TOKEN"
STREAM_READ_SECONDS = 60.0  # > the server's 15 s heartbeat: this much silence means the connection is dead
RECONNECT_MS = 1000  # until the server's retry: says otherwise
RETRIED_STATUSES = (502, 503, 504)  # a restarting server or a proxy without a backend: reconnect
M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    """A refusal of the API: ``status``, ``reason`` (Kubernetes' words), ``message`` and the ``errors``
    (each a field and what is wrong with it)."""

    def __init__(self, status: int, reason: str, message: str, errors: list[ErrorItem] | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.message = message
        self.errors = list(errors or [])

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            problem = Problem.model_validate(response.json())
            return cls(problem.status, problem.reason, problem.message, problem.errors)
        except (ValueError, ValidationError):  # not the API's error body (a proxy's page, say)
            text = " ".join(response.text.split())[:300] or response.reason_phrase
            return cls(response.status_code, response.reason_phrase or "Error", text)


class ApiUnreachable(ApiError):
    """The API could not be reached (connection refused, DNS, timeout); ``status`` is 0."""

    def __init__(self, url: str, cause: BaseException) -> None:
        reason = str(cause) or type(cause).__name__
        super().__init__(0, "Unreachable", f"cannot reach the agent-tree API at {url}: {reason}")
        self.url = url


def _p(segment: str) -> str:
    return quote(segment, safe="")


class Client:
    """The REST API at ``url`` as one caller (``token``, else ``$AGENT_TREE_TOKEN``; none: anonymous).

    Args:
        url: the API's base URL, e.g. ``http://127.0.0.1:8080``.
        token: a Kubernetes bearer token.
        timeout: seconds for each request (a stream's reads use ``stream_read_seconds``).
        transport: an httpx transport (tests pass ``httpx.ASGITransport(app)``).
        max_reconnects: :meth:`events` gives up after this many failed reconnects in a row.
        reconnect_ms: the delay before a reconnect until the server's ``retry:`` gives one.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        stream_read_seconds: float = STREAM_READ_SECONDS,
        max_reconnects: int = 10,
        reconnect_ms: int = RECONNECT_MS,
    ) -> None:
        self.url = url.rstrip("/")
        token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.stream_read_seconds = stream_read_seconds
        self.max_reconnects = max_reconnects
        self.reconnect_ms = reconnect_ms
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- plumbing -------------------------------------------------------------------------------
    async def _send(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None):
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = await self._http.request(method, path, params=query, json=body)
        except httpx.TransportError as exc:
            raise ApiUnreachable(self.url, exc) from exc
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return response

    async def _get(self, model: type[M], path: str, **params: Any) -> M:
        return model.model_validate((await self._send("GET", path, params=params)).json())

    async def _post(self, model: type[M], path: str, body: Any) -> M:
        return model.model_validate((await self._send("POST", path, body=body)).json())

    @staticmethod
    def _ns(namespace: str) -> str:
        return f"/api/v1/namespaces/{_p(namespace)}"

    def _run(self, namespace: str, name: str) -> str:
        return f"{self._ns(namespace)}/runs/{_p(name)}"

    # --- resources ------------------------------------------------------------------------------
    async def whoami(self) -> WhoAmI:
        """Who the API (a TokenReview) says the token belongs to."""
        return await self._get(WhoAmI, "/api/v1/whoami")

    async def trees(self, namespace: str) -> TreeList:
        return await self._get(TreeList, f"{self._ns(namespace)}/trees")

    async def tree(self, namespace: str, name: str) -> TreeView:
        return await self._get(TreeView, f"{self._ns(namespace)}/trees/{_p(name)}")

    async def runs(
        self,
        namespace: str,
        *,
        tree: str | None = None,
        phase: str | None = None,
        since: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> RunList:
        """One page of runs, newest first (``phase``: e.g. ``Failed,Cancelled``; ``since``: e.g. ``7d``)."""
        params = {"tree": tree, "phase": phase, "since": since, "limit": limit, "cursor": cursor}
        return await self._get(RunList, f"{self._ns(namespace)}/runs", **params)

    async def all_runs(self, namespace: str, **filters: Any) -> AsyncIterator[RunSummary]:
        """Every run matching ``filters`` (those of :meth:`runs`), following nextCursor page by page."""
        cursor = filters.pop("cursor", None)
        while True:
            page = await self.runs(namespace, cursor=cursor, **filters)
            for item in page.items:
                yield item
            if not page.nextCursor:
                return
            cursor = page.nextCursor

    async def run(self, namespace: str, name: str) -> RunView:
        return await self._get(RunView, self._run(namespace, name))

    async def create_run(
        self,
        namespace: str,
        spec: BaseModel | Mapping[str, Any],
        *,
        name: str | None = None,
        generate_name: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Created:
        """Create an AgentRun as the caller (``spec``: an ``AgentRunSpec`` or its JSON form)."""
        body: dict[str, Any] = {
            "spec": spec.model_dump(mode="json", exclude_unset=True) if isinstance(spec, BaseModel) else dict(spec)
        }
        if name is not None:
            body["name"] = name
        if generate_name is not None:
            body["generateName"] = generate_name
        if labels:
            body["labels"] = dict(labels)
        return await self._post(Created, f"{self._ns(namespace)}/runs", body)

    async def cancel(self, namespace: str, name: str) -> None:
        """Delete the AgentRun (its workflow is cancelled; the history stays)."""
        await self._send("DELETE", self._run(namespace, name))

    async def steps(
        self, namespace: str, name: str, *, limit: int | None = None, cursor: str | None = None
    ) -> StepPage:
        return await self._get(StepPage, f"{self._run(namespace, name)}/steps", limit=limit, cursor=cursor)

    async def all_steps(self, namespace: str, name: str, *, limit: int | None = None) -> AsyncIterator[StepItem]:
        """Every recorded step in order, ``limit`` per request."""
        cursor = None
        while True:
            page = await self.steps(namespace, name, limit=limit, cursor=cursor)
            for item in page.items:
                yield item
            if not page.nextCursor:
                return
            cursor = page.nextCursor

    async def approvals(self, namespace: str, name: str) -> ApprovalList:
        return await self._get(ApprovalList, f"{self._run(namespace, name)}/approvals")

    async def approve(self, namespace: str, name: str, approval_id: str, reason: str | None = None) -> DecisionResult:
        return await self._decide(namespace, name, approval_id, "approve", reason)

    async def reject(self, namespace: str, name: str, approval_id: str, reason: str | None = None) -> DecisionResult:
        return await self._decide(namespace, name, approval_id, "reject", reason)

    async def _decide(
        self, namespace: str, name: str, approval_id: str, verb: str, reason: str | None
    ) -> DecisionResult:
        path = f"{self._run(namespace, name)}/approvals/{_p(approval_id)}/{verb}"
        return await self._post(DecisionResult, path, {"reason": reason} if reason else {})

    async def retry(
        self, namespace: str, name: str, *, new_name: str | None = None, current_tree: bool = False
    ) -> Created:
        """A new AgentRun reusing every step of ``name`` before its first failed one."""
        body = _fork_body(new_name, current_tree)
        return await self._post(Created, f"{self._run(namespace, name)}/retry", body)

    async def fork(
        self,
        namespace: str,
        name: str,
        *,
        step: int,
        input: str | None = None,
        context: Mapping[str, Any] | None = None,
        new_name: str | None = None,
        current_tree: bool = False,
    ) -> Created:
        """A new AgentRun reusing steps 1..``step`` of ``name`` and running live after."""
        body = {**_fork_body(new_name, current_tree), "step": step}
        if input is not None:
            body["input"] = input
        if context is not None:
            body["context"] = dict(context)
        return await self._post(Created, f"{self._run(namespace, name)}/fork", body)

    # --- the event stream -----------------------------------------------------------------------
    async def events(
        self, namespace: str, name: str, last_event_id: str | None = None, reconnect: bool = True
    ) -> AsyncIterator[Event]:
        """The run's events until ``end``: each connection opens with ``snapshot``, then steps (with
        ``id``), ``model_delta`` text, and ``end``.

        With ``reconnect`` a dropped connection, a silent one (``stream_read_seconds``), a 502/503/504
        or a ``reconnect`` event (the server dropped a slow reader) make it connect again after the
        server's ``retry:`` delay, sending the last id seen as Last-Event-ID: the server resumes
        right after it. ``reconnect`` events are then not yielded. Without ``reconnect`` the iterator
        ends (or raises) where the connection does.

        Raises:
            ApiError: the API refused (4xx), or ``max_reconnects`` attempts in a row failed.
        """
        path = f"{self._run(namespace, name)}/events"
        timeout = httpx.Timeout(self._http.timeout.connect, read=self.stream_read_seconds)
        last_id, delay_ms, failures = last_event_id, self.reconnect_ms, 0
        while True:
            headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last_id} if last_id else {})}
            decoder = SseDecoder()
            error: ApiError = ApiError(0, "Disconnected", "the stream ended without an end event")
            try:
                async with self._http.stream("GET", path, headers=headers, timeout=timeout) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        error = ApiError.from_response(response)
                        if not reconnect or response.status_code not in RETRIED_STATUSES:
                            raise error
                    else:
                        async with aclosing(_events(response, decoder)) as received:
                            async for event in received:
                                failures = 0  # the connection works: count failures afresh
                                last_id = decoder.last_id or last_id
                                if event.event == "reconnect" and reconnect:
                                    break  # the server let this reader go: resume from last_id
                                yield event
                                if event.event == "end":
                                    return
            except httpx.TransportError as exc:
                error = ApiUnreachable(self.url, exc)
                if not reconnect:
                    raise error from exc
            if not reconnect:
                return
            failures += 1
            if failures > self.max_reconnects:
                raise error
            delay_ms = decoder.retry_ms if decoder.retry_ms is not None else delay_ms
            await asyncio.sleep(delay_ms / 1000)


async def _events(response: httpx.Response, decoder: SseDecoder) -> AsyncIterator[Event]:
    async for chunk in response.aiter_text():
        for event in decoder.feed(chunk):
            yield event


def _fork_body(new_name: str | None, current_tree: bool) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if new_name is not None:
        body["name"] = new_name
    if current_tree:
        body["currentTree"] = True
    return body
