"""The REST API in-process (real application and middleware, faked Kubernetes and history): who may call,
how writes are made, and that bad input is refused naming the field with nothing created."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from agent_tree_api.cli import render_openapi
from agent_tree_api.config import ApiConfig
from agent_tree_api.routes.steps import encode_step_cursor
from api_fakes import client, make_services

from agent_tree import naming

ROOT = Path(__file__).resolve().parents[2]
ALICE = {"Authorization": "Bearer alice-token"}
RUNS = "/api/v1/namespaces/team-a/runs"
TREE_PATH = f"/apis/{naming.GROUP}/{naming.VERSION}/namespaces/team-a/agenttrees/invoice"
GOOD = {"name": "why-1", "spec": {"treeRef": {"name": "invoice"}, "input": "why?"}}


@pytest.fixture
def svc():
    s = make_services()
    s.kube.objects[TREE_PATH] = {"metadata": {"name": "invoice", "namespace": "team-a"}, "spec": {"root": "r"}}
    return s


def created(svc) -> list[str]:
    return [p for p in svc.kube.objects if "/agentruns/" in p]


async def test_no_token_is_401_and_a_rejected_token_too(svc):
    async with client(svc) as http:
        none = await http.get(RUNS)
        bad = await http.get(RUNS, headers={"Authorization": "Bearer forged"})
        basic = await http.get(RUNS, headers={"Authorization": "Basic YWxpY2U6eA=="})
    assert none.status_code == 401 and none.headers["www-authenticate"] == "Bearer"
    assert "bearer token is required" in none.json()["message"]
    assert bad.status_code == 401 and "did not accept this token" in bad.json()["message"]
    assert basic.status_code == 401 and "expected 'Bearer <token>'" in basic.json()["message"]


async def test_anonymous_only_when_enabled():
    svc = make_services(ApiConfig(allow_anonymous=True))
    async with client(svc) as http:
        who = await http.get("/api/v1/whoami")
    assert who.json() == {"username": "system:anonymous", "groups": ["system:unauthenticated"]}


async def test_impersonation_headers_are_refused_and_x_user_is_ignored(svc):
    async with client(svc) as http:
        for header in ("Impersonate-User", "Impersonate-Group", "impersonate-uid", "Impersonate-Extra-Scopes"):
            r = await http.post(RUNS, json=GOOD, headers={**ALICE, header: "admin"})
            assert r.status_code == 400, header
            assert r.json()["reason"] == "ImpersonationRefused" and header.lower() in r.json()["message"].lower()
        who = await http.get("/api/v1/whoami", headers={**ALICE, "X-User": "admin", "X-Remote-User": "admin"})
    assert who.json()["username"] == "alice"
    assert created(svc) == []


async def test_token_review_and_access_review_are_cached(svc):
    async with client(svc) as http:
        for _ in range(5):
            assert (await http.get(RUNS, headers=ALICE)).status_code == 200
    reviews = [c for c in svc.kube.calls if c[0] == "service"]
    assert [c[2].rsplit("/", 1)[1] for c in reviews] == ["tokenreviews", "subjectaccessreviews"]


async def test_a_runs_page_reads_the_unfinished_agentruns_and_its_own_rows_not_the_whole_namespace(svc):
    base = f"/apis/{naming.GROUP}/{naming.VERSION}/namespaces/team-a/agentruns"
    at = datetime(2026, 12, 1, tzinfo=UTC)

    def agentrun(name: str, labels: dict) -> dict:
        status = {"phase": "Succeeded", "currentAgent": "r", "workflowId": f"wf-{name}"}
        return {"metadata": {"name": name, "uid": f"u-{name}", "labels": labels},
                "spec": {"treeRef": {"name": "invoice"}}, "status": status}  # fmt: skip

    finished = {naming.LABEL_FINISHED: "true"}
    for i in range(8):  # old-0 .. old-7: finished (labelled by the operator with their names), newest last
        svc.kube.objects[f"{base}/old-{i}"] = agentrun(f"old-{i}", finished | {naming.LABEL_RUN: f"old-{i}"})
        svc.history.runs[f"wf-old-{i}"] = {
            "namespace": "team-a", "name": f"old-{i}", "uid": f"u-old-{i}", "workflow_id": f"wf-old-{i}",
            "tree": "invoice", "status": "completed", "started_at": at.replace(hour=i), "finished_at": None,
        }  # fmt: skip
    svc.kube.objects[f"{base}/queued"] = agentrun("queued", {}) | {"status": {}}  # not started: no row
    del svc.kube.objects[f"{base}/old-7"]  # deleted: its history remains

    async def page(limit: int) -> dict:
        svc.kube.calls.clear()
        async with client(svc) as http:
            r = await http.get(RUNS, params={"limit": limit}, headers=ALICE)
        assert r.status_code == 200, r.text
        return {i["name"]: i for i in r.json()["items"]}

    items = await page(3)
    assert list(items) == ["queued", "old-7", "old-6", "old-5"]  # the not-started run, then the page
    assert items["old-7"]["inCluster"] is False and items["old-6"]["inCluster"] is True
    assert items["old-6"]["currentAgent"] == "r"  # from the AgentRun
    reads = [c for c in svc.kube.calls if c[0] == "caller"]
    assert [c[2].rsplit("/", 1)[1] for c in reads] == ["agentruns"] * 3  # lists only, never a GET per run
    # old-7 is missing, so the legacy list (finished, no run label) is asked too; it holds nothing
    # A run an older operator retired (finished label, no run label) is still found:
    svc.kube.objects[f"{base}/old-6"]["metadata"]["labels"] = dict(finished)
    items = await page(3)
    assert items["old-6"]["inCluster"] is True and items["old-7"]["inCluster"] is False
    # With every page row found, two lists and no more: old-0 .. old-4 were never asked for by name.
    items = await page(2)
    assert list(items) == ["queued", "old-7", "old-6"]


async def test_another_namespace_is_forbidden_with_the_api_servers_words(svc):
    async with client(svc) as http:
        r = await http.get("/api/v1/namespaces/team-b/runs", headers=ALICE)
        steps = await http.get("/api/v1/namespaces/team-b/runs/x/steps", headers=ALICE)
        events = await http.get("/api/v1/namespaces/team-b/runs/x/events", headers=ALICE)
    assert r.status_code == 403
    assert 'User "alice" cannot list resource "agentruns"' in r.json()["message"]
    assert steps.status_code == 403 and events.status_code == 403


async def test_create_writes_with_the_callers_own_token(svc):
    async with client(svc) as http:
        r = await http.post(RUNS, json=GOOD, headers=ALICE)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "why-1" and r.json()["createdBy"] == "alice"
    writes = [c for c in svc.kube.calls if c[1] == "POST" and c[0] == "caller"]
    assert writes == [
        ("caller", "POST", f"/apis/{naming.GROUP}/{naming.VERSION}/namespaces/team-a/agentruns", "alice-token")
    ]
    body = svc.kube.objects[created(svc)[0]]
    assert body["spec"] == {"treeRef": {"name": "invoice"}, "input": "why?"}  # only what the caller set


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ('{"name": "x", "spec": {', 400, "body"),
        ({"name": "x", "spec": {"treeRef": {"name": "invoice"}, "input": "q", "bogus": 1}}, 422, "spec.bogus"),
        ({"name": "x", "spec": {"treeRef": {"name": "invoice"}, "input": "q", "maxSteps": "3"}}, 422, "spec.maxSteps"),
        ({"name": "x", "spec": {"treeRef": {"name": "nope"}, "input": "q"}}, 422, "spec.treeRef.name"),
        ({"name": "x", "spec": {"input": "q"}}, 422, "spec"),
        ({"spec": {"treeRef": {"name": "invoice"}, "input": "q"}}, 422, "name"),
        ({"name": "Bad_Name", "spec": {"treeRef": {"name": "invoice"}, "input": "q"}}, 422, "name"),
        ([1, 2], 422, "body"),
    ],
)
async def test_bad_bodies_name_the_field_and_create_nothing(svc, body, status, field):
    content = body if isinstance(body, str) else json.dumps(body)
    async with client(svc) as http:
        r = await http.post(RUNS, content=content, headers={**ALICE, "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert field in [e["field"] for e in r.json()["errors"]], r.json()
    assert created(svc) == []


async def test_a_body_that_is_not_utf8_is_a_400_naming_the_body(svc):
    async with client(svc) as http:
        r = await http.post(
            RUNS, content=b'{"name": "\xff\xfe", "spec": }', headers={**ALICE, "Content-Type": "application/json"}
        )
    assert r.status_code == 400, r.text
    assert r.json()["reason"] == "Invalid" and r.json()["errors"][0]["field"] == "body"
    assert "UTF-8" in r.json()["message"]
    assert created(svc) == []


async def test_a_body_over_the_limit_is_413_whether_its_length_is_declared_or_not(svc):
    big = json.dumps({"name": "x", "spec": {"treeRef": {"name": "invoice"}, "input": "x" * 100_000}}).encode()

    async def chunks():
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    async with client(svc) as http:
        declared = await http.post(RUNS, content=big, headers={**ALICE, "Content-Type": "application/json"})
        chunked = await http.post(RUNS, content=chunks(), headers={**ALICE, "Content-Type": "application/json"})
    for r in (declared, chunked):
        assert r.status_code == 413
        assert r.json()["errors"][0]["field"] == "body" and "AGENT_TREE_API_MAX_BODY_BYTES" in r.json()["message"]
    assert created(svc) == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=1000000000", "limit"),
        ("limit=0", "limit"),
        ("phase=Done", "phase"),
        ("since=soon", "since"),
        ("cursor=xyz", "cursor"),
    ],
)
async def test_bad_listing_options_name_the_option(svc, query, field):
    async with client(svc) as http:
        r = await http.get(f"{RUNS}?{query}", headers=ALICE)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == field, r.json()


def _run(svc, name: str, steps: int) -> str:
    workflow_id = f"agentrun.team-a.{name}.u-{name}"
    svc.history.runs[workflow_id] = {
        "workflow_id": workflow_id, "namespace": "team-a", "name": name, "uid": f"u-{name}", "tree": "invoice",
        "status": "completed", "steps": steps, "token_usage": 0, "answer": "ok", "input": "q", "result": None,
        "started_at": datetime(2026, 12, 1, tzinfo=UTC), "finished_at": datetime(2026, 12, 1, 0, 1, tzinfo=UTC),
        "forked_from": None,
    }  # fmt: skip
    for i in range(1, steps + 1):
        svc.history.add_step(workflow_id, [i])
    return workflow_id


async def test_steps_page_by_cursor_and_refuse_a_cursor_of_another_run(svc):
    _run(svc, "long", 250)
    other = _run(svc, "other", 3)
    async with client(svc) as http:
        seen, cursor = [], None
        while True:
            r = await http.get(
                f"{RUNS}/long/steps", params={"limit": 100, **({"cursor": cursor} if cursor else {})}, headers=ALICE
            )
            assert r.status_code == 200, r.text
            page = r.json()
            seen += [(s["number"], s["position"]) for s in page["items"]]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        foreign = encode_step_cursor(other, [2], 2)
        bad = await http.get(f"{RUNS}/long/steps", params={"cursor": foreign}, headers=ALICE)
        huge = await http.get(f"{RUNS}/long/steps", params={"limit": 10**9}, headers=ALICE)
    assert seen == [(i, str(i)) for i in range(1, 251)]
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "cursor"
    assert "another run" in bad.json()["message"]
    assert huge.status_code == 422 and huge.json()["errors"][0]["field"] == "limit"


async def test_fork_step_is_checked_against_the_recorded_steps(svc):
    workflow_id = _run(svc, "src", 2)
    svc.history.runs[workflow_id]["steps"] = 1  # the row counts routing steps, not recorded ones
    for i in range(3, 8):
        svc.history.add_step(workflow_id, [i])
    async with client(svc) as http:
        ok = await http.post(f"{RUNS}/src/fork", json={"step": 6, "name": "src-six"}, headers=ALICE)
        over = await http.post(f"{RUNS}/src/fork", json={"step": 8}, headers=ALICE)
    assert ok.status_code == 201, ok.text
    assert created(svc) == [f"/apis/{naming.GROUP}/{naming.VERSION}/namespaces/team-a/agentruns/src-six"]
    assert over.status_code == 422 and over.json()["errors"] == [
        {"field": "step", "message": "run src has 7 steps; choose one from 1 to 7"}
    ]


async def test_a_deleted_run_is_read_from_the_history(svc):
    _run(svc, "gone", 2)
    async with client(svc) as http:
        r = await http.get(f"{RUNS}/gone", headers=ALICE)
        listed = await http.get(RUNS, headers=ALICE)
    assert r.status_code == 200 and r.json()["inCluster"] is False and r.json()["phase"] == "Succeeded"
    assert [i["name"] for i in listed.json()["items"]] == ["gone"]


async def test_a_run_says_where_its_history_ends(svc):
    workflow_id = _run(svc, "tailed", 3)
    svc.history.add_step(workflow_id, [3, 1])
    async with client(svc) as http:
        r = await http.get(f"{RUNS}/tailed", headers=ALICE)
    assert r.status_code == 200, r.text
    assert (r.json()["recordedSteps"], r.json()["lastPosition"]) == (4, "3.1")


async def test_unknown_routes_and_methods_answer_in_the_same_shape(svc):
    async with client(svc) as http:
        missing = await http.get("/api/v1/nothing", headers=ALICE)
        wrong = await http.put(RUNS, headers=ALICE)
    assert missing.status_code == 404 and missing.json()["reason"] == "NotFound"
    assert wrong.status_code == 405 and wrong.json()["reason"] == "MethodNotAllowed"


def test_the_committed_openapi_document_is_the_generated_one():
    committed = (ROOT / "docs" / "api" / "openapi.json").read_text()
    assert committed == render_openapi(), (
        "docs/api/openapi.json drifted: run `agent-tree api --openapi docs/api/openapi.json`"
    )
