"""Identical Kubernetes requests in flight at the same time are sent once (agent_tree_api.inflight).

500 SSE clients opening their streams at once with one token made 500 TokenReviews and 500 GETs of
their AgentRuns at the same moment, and all 500 streams failed with 503 (bench/bench_api.py). Here
the Kubernetes API is an httpx MockTransport that holds every request until the test opens a gate,
so all the callers are in flight together.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from agent_tree_api.auth import Auth
from agent_tree_api.inflight import Inflight
from agent_tree_api.kube import Kube, KubeError
from kubernetes import client as k8s

HOST = "https://k8s.test"


class Server:
    """Answers after ``gate`` opens; counts the requests by (method, path, token)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.requests: list[tuple[str, str, str]] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "")
        self.requests.append((request.method, request.url.path, token))
        await self.gate.wait()
        if request.url.path.endswith("/missing"):
            return httpx.Response(
                404, json={"message": 'agentruns.agenttree.io "missing" not found', "reason": "NotFound"}
            )
        if request.url.path.endswith("/tokenreviews"):
            review = json.loads(request.content)
            return httpx.Response(
                200, json={"status": {"authenticated": True, "user": {"username": review["spec"]["token"]}}}
            )
        if request.url.path.endswith("/subjectaccessreviews"):
            return httpx.Response(200, json={"status": {"allowed": True}})
        return httpx.Response(200, json={"metadata": {"name": request.url.path.rsplit("/", 1)[1]}, "status": {}})


@pytest.fixture
def server():
    return Server()


@pytest.fixture
def kube(server):
    configuration = k8s.Configuration()
    configuration.host = HOST
    configuration.verify_ssl = False
    kube = Kube(configuration)
    transport = httpx.MockTransport(server.handle)
    kube._caller = httpx.AsyncClient(base_url=HOST, transport=transport)
    kube._service = httpx.AsyncClient(base_url=HOST, transport=transport)
    return kube


async def started(tasks: list[asyncio.Task], server: Server, requests: int) -> None:
    """Wait until ``requests`` requests reached the server and every task is waiting, then open the gate."""
    for _ in range(200):
        await asyncio.sleep(0)
        if len(server.requests) >= requests:
            break
    for _ in range(20):
        await asyncio.sleep(0)
    server.gate.set()


async def test_identical_gets_of_one_token_at_once_are_one_request_and_each_gets_its_own_copy(kube, server):
    tasks = [asyncio.create_task(kube.as_caller("t1", "GET", "/apis/x/agentruns/a")) for _ in range(50)]
    await started(tasks, server, 1)
    answers = await asyncio.gather(*tasks)
    assert len(server.requests) == 1
    assert all(a == {"metadata": {"name": "a"}, "status": {}} for a in answers)
    answers[0]["status"]["phase"] = "changed"  # one caller changing its answer changes no other's
    assert answers[1]["status"] == {}


async def test_other_tokens_paths_and_writes_are_their_own_requests(kube, server):
    tasks = [
        asyncio.create_task(kube.as_caller("t1", "GET", "/apis/x/agentruns/a")),
        asyncio.create_task(kube.as_caller("t2", "GET", "/apis/x/agentruns/a")),
        asyncio.create_task(kube.as_caller("t1", "GET", "/apis/x/agentruns/b")),
        asyncio.create_task(kube.as_caller("t1", "GET", "/apis/x/agentruns", params={"limit": "1"})),
        asyncio.create_task(kube.as_caller("t1", "GET", "/apis/x/agentruns", params={"limit": "2"})),
        asyncio.create_task(kube.as_caller("t1", "POST", "/apis/x/agentruns/a", {"spec": {}})),
        asyncio.create_task(kube.as_caller("t1", "POST", "/apis/x/agentruns/a", {"spec": {}})),
    ]
    await started(tasks, server, 7)
    await asyncio.gather(*tasks)
    assert len(server.requests) == 7
    assert sorted(r[2] for r in server.requests if r[0] == "GET").count("Bearer t2") == 1


async def test_a_refusal_reaches_every_waiter_and_nothing_outlives_the_call(kube, server):
    tasks = [asyncio.create_task(kube.as_caller("t1", "GET", "/apis/x/agentruns/missing")) for _ in range(10)]
    await started(tasks, server, 1)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, KubeError) and r.status == 404 for r in results)
    assert len(server.requests) == 1
    with pytest.raises(KubeError):
        await kube.as_caller("t1", "GET", "/apis/x/agentruns/missing")  # asked again: a new request
    assert len(server.requests) == 2
    assert len(kube._gets) == 0


async def test_a_waiter_that_goes_away_cancels_only_its_own_wait(kube, server):
    tasks = [asyncio.create_task(kube.as_caller("t1", "GET", "/apis/x/agentruns/a")) for _ in range(3)]
    for _ in range(50):
        await asyncio.sleep(0)
    tasks[0].cancel()  # the first caller (whose call is shared) disconnects
    server.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1] == results[2] == {"metadata": {"name": "a"}, "status": {}}
    assert len(server.requests) == 1


async def test_token_and_access_reviews_asked_at_once_are_sent_once(kube, server):
    auth = Auth(kube, token_ttl=60, access_ttl=10, allow_anonymous=False)
    headers = {"authorization": "Bearer alice"}
    who = [asyncio.create_task(auth.authenticate(headers)) for _ in range(20)]
    await started(who, server, 1)
    callers = await asyncio.gather(*who)
    assert {c.username for c in callers} == {"alice"}
    server.gate.clear()
    allowed = [asyncio.create_task(auth.require(callers[0], "get", "team-a")) for _ in range(20)]
    await started(allowed, server, 2)
    await asyncio.gather(*allowed)
    assert [r[1].rsplit("/", 1)[1] for r in server.requests] == ["tokenreviews", "subjectaccessreviews"]


async def test_inflight_forgets_a_key_when_its_call_ends():
    inflight = Inflight()
    calls = []

    async def call() -> int:
        calls.append(1)
        await asyncio.sleep(0)
        return len(calls)

    assert await asyncio.gather(inflight.run("k", call), inflight.run("k", call)) == [1, 1]
    assert await inflight.run("k", call) == 2
    assert len(inflight) == 0
