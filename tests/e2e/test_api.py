"""The REST API end to end (issue 13, "Must show"): `agent-tree api` as a real process on the local
platform, the operator as a process, workers as pods the pod runner runs as processes, real Temporal,
PostgreSQL and Redis. Callers are ServiceAccounts whose tokens the API server issued (TokenRequest);
RBAC by Roles and RoleBindings; approvals decided under the chart's admission policy.

Users of namespace ``e2a-*``: ``runner`` (create/read runs, read trees), ``nobody`` (no RBAC), ``alice``
(reads runs, the chart's approver role, listed in the refund tool's approvers), ``bob`` (approver role,
not listed). A second namespace holds a run only its ``owner`` may read. The ``work`` tree runs the
Python agent of ``api_tools`` whose gates the test opens; ``refunds`` is a model agent (the local
OpenAI-compatible test server) whose refund tool needs approval; ``talk``'s model streams its reply slowly. Every wait polls with a deadline.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import yaml
from api_process import RUNS_RO, RUNS_RW, TREES_RO, ApiProcess, AuditLog, bearer, running_api, service_account
from api_site import (
    DEADLINE,
    TALK,
    Site,
    all_steps,
    call,
    create,
    error_fields,
    gate_start,
    is_tool,
    recorded,
    refunds_tree,
    runs_path,
    same_steps,
    sample,
    talk_tree,
    tree_ready,
    work_tree,
)
from operator_process import OperatorProcess, apply_crds, namespace, ok, running
from platformlib import REPO, Platform, built_tool, wait_for
from sse_reader import Frame, SseReader

sys.path.insert(0, str(REPO / "tests" / "integration"))
from fake_openai import FakeOpenAI

from agent_tree.naming import stream_key

pytestmark = pytest.mark.e2e

RELEASE = "e2a-e2e"  # chart release whose approver ClusterRole and admission policy these tests install
APPROVER_ROLE = f"{RELEASE}-agent-tree-approver"


# --- the platform: operator, admission policy, model server, API, namespaces and users ------------------


@pytest.fixture(scope="module")
def policy(platform: Platform) -> Iterator[None]:
    """The chart's approver ClusterRole and ValidatingAdmissionPolicy (+ binding), rendered by helm."""
    apply_crds(platform)
    ok(platform.kubectl("wait", "--for=condition=Established", "crd/agentapprovals.agenttree.io", "--timeout=60s"))
    helm = built_tool("build-helm.sh")
    rendered = subprocess.run(
        [helm, "template", RELEASE, str(REPO / "charts" / "agent-tree"), "--show-only", "templates/approvals.yaml"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    ok(platform.kubectl("apply", "-f", "-", input=rendered))
    yield
    platform.kubectl("delete", "-f", "-", "--ignore-not-found", input=rendered)


@pytest.fixture(scope="module")
def operator(platform: Platform, policy: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    with running(OperatorProcess(platform, tmp_path_factory.mktemp("operator") / "operator.log", "e2a-*")) as op:
        yield op


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    def first(body: dict) -> dict:
        case = re.search(r"case=(\w+)", json.dumps(body["messages"])).group(1)
        return {"content": "Refunding.", "tool_calls": [("issue_refund", {"invoice_id": case, "amount": 42})]}

    def second(body: dict) -> dict:
        tools = [m for m in body["messages"] if m.get("role") == "tool"]
        return {"content": "Refund outcome: " + (tools[-1]["content"] if tools else "no tool result")}

    with FakeOpenAI({"e2a-refunds": [first, second]}) as server:
        yield server


@pytest.fixture(scope="module")
def slow_model() -> Iterator[FakeOpenAI]:
    """A model that streams its reply 4 characters every 0.25 s."""
    with FakeOpenAI({"e2a-writer": [{"content": TALK}]}, chunk_delay=0.25) as server:
        yield server


@pytest.fixture(scope="module")
def api(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    with running_api(ApiProcess(platform, tmp_path_factory.mktemp("api") / "api.log")) as proc:
        yield proc


@pytest.fixture(scope="module")
def site(
    platform: Platform,
    operator: OperatorProcess,
    fake: FakeOpenAI,
    slow_model: FakeOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("api-site")
    work.chmod(0o777)  # worker pods may run as another user
    with (
        namespace(platform, operator, "e2a", cleanup_timeout=120) as ns,
        namespace(platform, operator, "e2a-x") as other,
    ):
        tokens = {
            "runner": service_account(platform, ns, "runner", rules=[RUNS_RW, TREES_RO]),
            "nobody": service_account(platform, ns, "nobody"),
            "alice": service_account(platform, ns, "alice", rules=[RUNS_RO], clusterrole=APPROVER_ROLE),
            "bob": service_account(platform, ns, "bob", rules=[RUNS_RO], clusterrole=APPROVER_ROLE),
            "owner": service_account(platform, other, "owner", rules=[RUNS_RW]),
        }
        docs = [
            work_tree(work),
            refunds_tree(ns, fake.base_url, work / "tool-calls.jsonl"),
            talk_tree(slow_model.base_url),
        ]
        ok(platform.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs)))
        hidden = {
            "apiVersion": "agenttree.io/v1alpha1",
            "kind": "AgentRun",
            "metadata": {"name": "hidden"},
            "spec": {"treeRef": {"name": "none-here"}, "input": "not yours"},
        }
        ok(platform.kubectl("apply", "-n", other, "-f", "-", input=yaml.safe_dump(hidden)))
        for tree in ("work", "refunds", "talk"):
            tree_ready(platform, ns, tree)
        yield Site(platform, ns, other, tokens, work)


# --- creating runs, and who the caller is ------------------------------------------------------------------


def test_create_as_the_caller_attributed_in_the_audit_log_and_succeeds(api: ApiProcess, site: Site) -> None:
    s, runner = site, site.tokens["runner"]
    audit = AuditLog(s.platform)
    forged = {"X-User": "system:admin", "X-Remote-User": "system:admin", "X-Remote-Group": "system:masters"}

    who = call(api, "GET", "/api/v1/whoami", runner, headers=forged)
    assert who.status_code == 200 and who.json()["username"] == s.user("runner"), who.text
    r = create(api, s, "made", "key=made", headers=forged)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["createdBy"] == s.user("runner") and created["name"] == "made"
    obj = s.agentrun("made")
    assert obj is not None and obj["metadata"]["uid"] == created["uid"]

    def audited() -> list[dict]:
        return audit.find(verb="create", resource="agentruns", namespace=s.ns, name="made")

    (event,) = wait_for(audited, 30, "the audit log's entry of the create")
    assert event["user"]["username"] == s.user("runner")  # the token's identity, not X-User
    assert event["responseStatus"]["code"] == 201 and "impersonatedUser" not in event

    run = s.final("made")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    view = call(api, "GET", runs_path(s.ns, "/made"), runner).json()
    assert view["phase"] == "Succeeded" and view["answer"] == "made done" and view["inCluster"] is True
    # Retired by the operator (out of its watch, labelled with its name), the run is still listed as in
    # the cluster: the list selects a page's finished runs by that label, not by listing them all.
    retired = wait_for(lambda: (s.agentrun("made") or {}).get("metadata", {}).get("labels", {}).get("agenttree.io/run"),
                       60, "the operator's agenttree.io/run label on the finished run")  # fmt: skip
    assert retired == "made"
    listed = {i["name"]: i for i in call(api, "GET", runs_path(s.ns), runner).json()["items"]}
    assert listed["made"]["inCluster"] is True and listed["made"]["phase"] == "Succeeded", listed.get("made")

    # refused: each leaves nothing behind
    before = s.agentruns()
    for header in ("Impersonate-User", "Impersonate-Group", "Impersonate-Uid", "Impersonate-Extra-Scopes"):
        r = create(api, s, "forged", "key=forged", headers={header: "system:admin"})
        assert r.status_code == 400 and r.json()["reason"] == "ImpersonationRefused", r.text
        assert f"header {header.lower()}:" in r.json()["message"]
    r = call(api, "GET", "/api/v1/whoami", runner, headers={"Impersonate-User": "system:admin"})
    assert r.status_code == 400, r.text
    r = call(api, "POST", runs_path(s.ns), s.tokens["nobody"],
             json={"name": "sneaky", "spec": {"treeRef": {"name": "work"}, "input": "key=sneaky"}})  # fmt: skip
    assert r.status_code == 403 and r.json()["reason"] == "Forbidden", r.text
    assert f'User "{s.user("nobody")}" cannot create resource "agentruns"' in r.json()["message"]
    r = call(api, "POST", runs_path(s.ns), json={"name": "anon", "spec": {"input": "x", "treeRef": {"name": "work"}}})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer", r.text
    r = call(api, "POST", runs_path(s.ns), "not-a-token", json={"name": "bad", "spec": {"input": "x"}})
    assert r.status_code == 401 and "did not accept this token" in r.json()["message"], r.text
    assert s.agentruns() == before
    creates = [
        e
        for e in audit.find(verb="create", resource="agentruns", namespace=s.ns)
        if e["objectRef"].get("name") != "made"
    ]
    assert [(e["user"]["username"], e["responseStatus"]["code"]) for e in creates] == [(s.user("nobody"), 403)]


def test_runs_of_another_namespace_are_invisible(api: ApiProcess, site: Site) -> None:
    s, runner = site, site.tokens["runner"]
    other = lambda rest="": runs_path(s.other, rest)  # noqa: E731
    assert s.agentrun("hidden", s.other) is not None
    r = call(api, "GET", other("/hidden"), s.tokens["owner"])  # the run is there for someone allowed
    assert r.status_code == 200 and r.json()["name"] == "hidden", r.text
    for path in (
        other(),
        other("/hidden"),
        other("/hidden/steps"),
        other("/hidden/events"),
        other("/hidden/approvals"),
    ):
        r = call(api, "GET", path, runner)
        assert r.status_code == 403 and r.json()["reason"] == "Forbidden", (path, r.text)
        assert s.user("runner") in r.json()["message"] and f'namespace "{s.other}"' in r.json()["message"]
    r = call(api, "POST", other(), runner, json={"name": "x", "spec": {"input": "x", "treeRef": {"name": "t"}}})
    assert r.status_code == 403, r.text
    r = call(api, "GET", runs_path(s.ns), runner)  # and its own namespace lists only its own runs
    assert r.status_code == 200 and "hidden" not in [i["name"] for i in r.json()["items"]]


# --- the event stream --------------------------------------------------------------------------------------


@pytest.mark.parametrize("trim", [False, True], ids=["stream-kept", "stream-trimmed"])
def test_reconnect_with_last_event_id_gets_every_event_once_in_order(
    platform: Platform, site: Site, trim: bool, tmp_path: Path
) -> None:
    s, runner = site, site.tokens["runner"]
    key = f"sse-{uuid.uuid4().hex[:6]}"
    with running_api(ApiProcess(platform, tmp_path / "api.log", {"AGENT_TREE_API_HEARTBEAT_SECONDS": "1"})) as api:
        assert create(api, s, key, f"key={key} gates=2").status_code == 201
        url = api.url(runs_path(s.ns, f"/{key}/events"))
        with SseReader(url, bearer(runner)) as first:
            assert first.response.status_code == 200
            headers = first.response.headers
            assert headers["content-type"].startswith("text/event-stream")
            assert headers["x-accel-buffering"] == "no" and headers["cache-control"] == "no-cache"
            before = first.until(gate_start(1))
            assert before[0].retry == 2000 and before[1].event == "snapshot" and before[1].id is None
            assert before[1].data["name"] == key
            # the run waits at the gate: nothing happens, the stream says it is alive
            quiet = first.until(lambda f: bool(f.comments))
            assert quiet == [Frame(comments=["keep-alive"])]
        # disconnected mid-run: the run goes on
        seen = [f for f in before if f.is_step]
        s.open_gate(key, 1)
        missed = recorded(api, s, key, is_tool("tool_start", "wait_gate", gate=2), "the second gate")
        assert len(missed) > len(seen) + 2
        if trim:
            workflow_id = s.agentrun(key)["status"]["workflowId"]
            rds = redis.Redis.from_url(platform.redis_url)
            stream = stream_key(workflow_id)
            assert rds.xlen(stream) >= len(missed)
            rds.xtrim(stream, maxlen=0, approximate=False)  # Redis no longer holds what the client missed
            assert rds.xlen(stream) == 0
            rds.close()
        with SseReader(url, {**bearer(runner), "Last-Event-ID": seen[-1].id}) as second:
            again = second.until(gate_start(2))
            assert again[0].retry == 2000 and again[1].event == "snapshot"
            s.open_gate(key, 2)
            rest = second.until(lambda f: f.event == "end")
        assert rest[-1].data["status"] == "completed" and rest[-1].data["answer"] == f"{key} done"
        steps = all_steps(api, s, key)
        same_steps(seen + [f for f in again + rest if f.is_step], steps)
        assert steps[-1]["type"] == "agent_end"
    assert s.final(key)["status"]["phase"] == "Succeeded"


def test_late_join_gets_the_whole_history_then_end(api: ApiProcess, site: Site) -> None:
    s, runner = site, site.tokens["runner"]
    key = f"late-{uuid.uuid4().hex[:6]}"
    assert create(api, s, key, f"key={key}").status_code == 201
    assert s.final(key)["status"]["phase"] == "Succeeded"
    steps = all_steps(api, s, key)
    url = api.url(runs_path(s.ns, f"/{key}/events"))
    with SseReader(url, bearer(runner)) as sse:
        frames = list(sse)  # the server closes the stream after `end`
    assert frames[0].retry == 2000 and frames[1].event == "snapshot" and frames[1].data["phase"] == "Succeeded"
    assert frames[-1].event == "end" and frames[-1].data["status"] == "completed"
    same_steps(frames[2:-1], steps)
    middle = steps[len(steps) // 2]["position"]
    with SseReader(url + f"?since={middle}", bearer(runner)) as sse:
        frames = list(sse)
    same_steps([f for f in frames if f.is_step], steps[len(steps) // 2 + 1 :])
    assert frames[-1].event == "end"


def test_model_text_reaches_the_client_before_the_model_call_returns(
    api: ApiProcess, site: Site, slow_model: FakeOpenAI
) -> None:
    s, runner = site, site.tokens["runner"]
    assert create(api, s, "talk-1", "Why was invoice 4821 rejected?", tree="talk").status_code == 201
    with SseReader(api.url(runs_path(s.ns, "/talk-1/events")), bearer(runner)) as sse:
        first = sse.until(lambda f: f.event == "model_delta")
        first_at = time.time()
        frames = first + sse.until(lambda f: f.event == "end")
    (call,) = [c for c in slow_model.streamed if c["body"]["model"] == "e2a-writer"]
    assert call["done"] is not None and first_at < call["done"] - 1  # seconds before the model finished
    deltas = [f for f in frames if f.event == "model_delta"]
    assert len(deltas) >= 3 and all(f.id is None for f in deltas)
    assert "".join(f.data["data"]["text"] for f in sorted(deltas, key=lambda f: f.data["data"]["seq"])) == TALK
    usage = next(i for i, f in enumerate(frames) if f.event == "model_usage" and f.data["agent"] == "writer")
    assert max(i for i, f in enumerate(frames) if f.event == "model_delta") < usage
    assert frames[-1].data["status"] == "completed" and frames[-1].data["answer"] == TALK
    steps = all_steps(api, s, "talk-1")
    assert "model_delta" not in {st["type"] for st in steps}  # live only, never history
    same_steps([f for f in frames if f.is_step], steps)


# --- bad input ---------------------------------------------------------------------------------------------


def test_bad_input_is_a_4xx_naming_the_field_and_creates_nothing(api: ApiProcess, site: Site) -> None:
    s, runner = site, site.tokens["runner"]
    keys = [f"bad-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for key in keys:
        assert create(api, s, key, f"key={key}").status_code == 201
    before = s.agentruns()
    good = {"name": "bad-one", "spec": {"treeRef": {"name": "work"}, "input": "key=bad-one"}}
    post = lambda **kw: call(api, "POST", runs_path(s.ns), runner, **kw)  # noqa: E731

    def refused(r: httpx.Response, status: int, field: str, words: str = "") -> None:
        assert r.status_code == status, r.text
        assert field in error_fields(r) and r.json()["message"].startswith(field), r.text
        assert words in r.json()["message"], r.text

    refused(post(content=b'{"name": "bad-one", "spec": {', headers={"Content-Type": "application/json"}),
            400, "body", "not valid JSON")  # fmt: skip
    refused(post(json={**good, "bogus": 1}), 422, "bogus", "unknown field")
    refused(post(json={**good, "spec": {**good["spec"], "maxStep": 3}}), 422, "spec.maxStep")
    refused(post(json={**good, "spec": {**good["spec"], "maxSteps": "3"}}), 422, "spec.maxSteps", "valid integer")
    refused(post(json={**good, "spec": {**good["spec"], "input": 7}}), 422, "spec.input", "valid string")
    refused(post(json={**good, "name": "Not A Name"}), 422, "name")
    huge = {**good, "spec": {**good["spec"], "input": "x" * (2 << 20)}}
    refused(post(json=huge), 413, "body", "AGENT_TREE_API_MAX_BODY_BYTES")
    chunks = iter([json.dumps(huge).encode()[i : i + 65536] for i in range(0, (2 << 20) + 200, 65536)])
    refused(post(content=chunks, headers={"Content-Type": "application/json"}), 413, "body")  # chunked, undeclared
    refused(post(json={**good, "spec": {**good["spec"], "treeRef": {"name": "no-such-tree"}}}),
            422, "spec.treeRef.name", "does not exist")  # fmt: skip
    assert s.agentruns() == before  # nothing was created by any of them

    listing = call(api, "GET", runs_path(s.ns), runner, params={"limit": 10**9})
    refused(listing, 422, "limit")
    steps = call(api, "GET", runs_path(s.ns, f"/{keys[0]}/steps"), runner, params={"limit": 10**9})
    refused(steps, 422, "limit")
    for key in keys:
        s.final(key)
    page = call(api, "GET", runs_path(s.ns, f"/{keys[0]}/steps"), runner, params={"limit": 2}).json()
    assert page["nextCursor"] and len(page["items"]) == 2
    other = call(api, "GET", runs_path(s.ns, f"/{keys[1]}/steps"), runner, params={"cursor": page["nextCursor"]})
    refused(other, 400, "cursor", "another run")
    garbage = call(api, "GET", runs_path(s.ns, f"/{keys[1]}/steps"), runner, params={"cursor": "bm90IGEgY3Vyc29y"})
    refused(garbage, 400, "cursor")
    r = call(api, "GET", runs_path(s.ns, f"/{keys[1]}/events"), runner, headers={"Last-Event-ID": "three"})
    refused(r, 400, "Last-Event-ID", "not an event id")
    assert s.agentruns() == before


# --- approvals, retry and fork -----------------------------------------------------------------------------


def test_approve_over_http_as_an_approver_and_the_admission_policy_refuses_others(
    api: ApiProcess, site: Site, fake: FakeOpenAI, platform: Platform
) -> None:
    s = site
    assert create(api, s, "refund-ok", "Refund invoice 4821 (case=ok)", tree="refunds").status_code == 201
    approvals = runs_path(s.ns, "/refund-ok/approvals")

    def pending() -> list[dict] | None:
        r = call(api, "GET", approvals, s.tokens["alice"])
        assert r.status_code in (200, 404), r.text
        items = [a for a in r.json().get("items", []) if a["pending"]] if r.status_code == 200 else []
        return items or None

    (waiting,) = wait_for(pending, DEADLINE, "a pending approval over HTTP")
    assert waiting["tool"] == "issue_refund" and json.loads(waiting["arguments"]) == {"invoice_id": "ok", "amount": 42}
    decide = approvals + f"/{waiting['id']}/approve"
    r = call(api, "POST", decide, s.tokens["nobody"], json={"reason": "me too"})
    assert r.status_code == 403 and s.user("nobody") in r.json()["message"], r.text
    r = call(api, "POST", decide, s.tokens["runner"], json={})  # may read runs, not approvals
    assert r.status_code == 403 and "agentapprovals" in r.json()["message"], r.text
    r = call(api, "POST", decide, s.tokens["bob"], json={"reason": "looks fine"})  # approver role, not listed
    assert r.status_code in (403, 422), r.text
    assert "is not among the approvers" in r.json()["message"] and s.user("bob") in r.json()["message"], r.text
    assert pending() == [waiting]  # nothing decided

    r = call(api, "POST", decide, s.tokens["alice"], json={"reason": "within policy"})
    assert r.status_code == 200, r.text
    assert r.json()["approval"]["decidedBy"] == s.user("alice") and s.user("alice") in r.json()["message"]
    run = s.final("refund-ok")
    assert run["status"]["phase"] == "Succeeded" and "refunded" in run["status"]["answer"], run["status"]
    decided = [st for st in all_steps(api, s, "refund-ok") if st["type"] == "approval_decided"]
    assert [st["data"]["decided_by"]["username"] for st in decided] == [s.user("alice")]
    assert decided[0]["data"]["reason"] == "within policy"
    (done,) = call(api, "GET", approvals, s.tokens["alice"]).json()["items"]
    assert (done["pending"], done["decision"], done["decidedBy"]) == (False, "approve", s.user("alice"))

    # the tree's workers keep 2 entries of the run's Redis stream (AGENT_TREE_STREAM_MAXLEN); a late
    # client still gets every step from PostgreSQL
    rds = redis.Redis.from_url(platform.redis_url)
    assert rds.xlen(stream_key(run["status"]["workflowId"])) == 2
    rds.close()
    with SseReader(api.url(runs_path(s.ns, "/refund-ok/events")), bearer(s.tokens["alice"])) as sse:
        frames = list(sse)
    same_steps([f for f in frames if f.is_step], all_steps(api, s, "refund-ok"))
    assert frames[-1].event == "end"


def test_retry_and_fork_over_http_create_runs_that_finish(api: ApiProcess, site: Site) -> None:
    s, runner = site, site.tokens["runner"]
    key = f"rf-{uuid.uuid4().hex[:6]}"
    assert create(api, s, key, f"key={key} flaky=1").status_code == 201
    assert s.final(key)["status"]["phase"] == "Failed"
    source = all_steps(api, s, key)
    failed = next(st["number"] for st in source if st["type"] == "tool_end" and st["data"]["status"] == "error")

    r = call(api, "POST", runs_path(s.ns, f"/{key}/retry"), runner, json={})
    assert r.status_code == 201 and r.json()["createdBy"] == s.user("runner"), r.text
    retry = r.json()["name"]
    assert retry.startswith(f"{key}-retry-")
    assert s.agentrun(retry)["spec"]["forkFrom"]["run"] == key and "step" not in s.agentrun(retry)["spec"]["forkFrom"]
    done = s.final(retry)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["forkedFrom"]["run"] == key and done["status"]["forkedFrom"]["step"] == failed - 1
    reused = [st["number"] for st in all_steps(api, s, retry) if st["data"].get("reused")]
    assert reused == list(range(1, failed))

    before = s.agentruns()
    r = call(api, "POST", runs_path(s.ns, f"/{retry}/fork"), runner, json={"step": 0})
    assert r.status_code == 422 and error_fields(r) == ["step"], r.text
    r = call(api, "POST", runs_path(s.ns, f"/{retry}/fork"), runner, json={"step": 999})
    assert r.status_code == 422 and error_fields(r) == ["step"] and "choose one from 1 to" in r.text, r.text
    r = call(api, "POST", runs_path(s.ns, f"/{retry}/fork"), s.tokens["alice"], json={"step": 2})
    assert r.status_code == 403, r.text  # alice may read runs, not create them
    assert s.agentruns() == before

    r = call(api, "POST", runs_path(s.ns, f"/{retry}/fork"), runner, json={"step": 3, "name": f"{key}-fork"})
    assert r.status_code == 201 and r.json()["name"] == f"{key}-fork", r.text
    forked_from = s.agentrun(f"{key}-fork")["spec"]["forkFrom"]
    assert (forked_from["run"], forked_from["step"]) == (retry, 3)
    fork = s.final(f"{key}-fork")
    assert fork["status"]["phase"] == "Succeeded" and fork["status"]["forkedFrom"]["step"] == 3, fork["status"]


# --- metrics -----------------------------------------------------------------------------------------------


def test_metrics_requests_by_route_and_code_open_streams_and_delivery_lag(api: ApiProcess, site: Site) -> None:
    s, runner = site, site.tokens["runner"]
    key = f"met-{uuid.uuid4().hex[:6]}"
    route = "/api/v1/namespaces/{namespace}/runs"
    start = api.metrics()
    assert create(api, s, key, f"key={key} gates=1").status_code == 201
    assert call(api, "GET", runs_path(s.other), runner).status_code == 403
    with SseReader(api.url(runs_path(s.ns, f"/{key}/events")), bearer(runner)) as sse:
        sse.until(gate_start(1))
        now = api.metrics()
        assert sample(now, "agent_tree_api_open_streams") == 1 and sample(now, "agent_tree_api_feeds") == 1
        s.open_gate(key, 1)
        sse.until(lambda f: f.event == "end")
    wait_for(lambda: sample(api.metrics(), "agent_tree_api_open_streams") == 0, 10, "the stream closed")
    end = api.metrics()
    for code, method in (("201", "POST"), ("403", "GET")):
        counted = sample(end, "agent_tree_api_requests_total", route=route, method=method, code=code)
        assert counted == sample(start, "agent_tree_api_requests_total", route=route, method=method, code=code) + 1
    events = route + "/{name}/events"
    assert sample(end, "agent_tree_api_requests_total", route=events, method="GET", code="200") >= 1
    assert sample(end, "agent_tree_api_event_delivery_lag_seconds_count") > sample(
        start, "agent_tree_api_event_delivery_lag_seconds_count"
    )
    assert sample(end, "agent_tree_api_event_delivery_lag_seconds_bucket", le="+Inf") >= 1
