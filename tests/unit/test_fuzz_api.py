"""Fuzzing the REST API in-process (docs/reliability.md, "Fuzzing"): generated paths, query parameters,
headers and bodies for every route of the real application (middleware included; Kubernetes and the
history faked by api_fakes): never a 5xx, every 4xx in the error shape and, when it is a 400 or 422,
naming the field; what it creates is an AgentRun the CRD's model accepts.

Reduced in the normal test run; ``AGENT_TREE_FUZZ_EXAMPLES=1000 pytest -m fuzz tests/unit`` is the full one."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import pytest
from api_fakes import client, make_services
from fuzz_manifests import collect, examples
from fuzz_requests import EXISTING_RUN, NS, ROUTES, TREE, check, requests

from agent_tree import naming
from agent_tree.spec import AgentRunSpec

pytestmark = pytest.mark.fuzz
WF = f"agentrun.{NS}.{EXISTING_RUN}.u-done"


def services():
    svc = make_services()
    base = f"/apis/{naming.GROUP}/{naming.VERSION}/namespaces/{NS}"
    svc.kube.objects[f"{base}/agenttrees/{TREE}"] = {
        "metadata": {"name": TREE, "namespace": NS, "uid": "t1"},
        "spec": {"root": "r", "agents": [{"name": "r", "entrypoint": "m:f"}]},
    }
    svc.kube.objects[f"{base}/agentruns/{EXISTING_RUN}"] = {
        "metadata": {"name": EXISTING_RUN, "namespace": NS, "uid": "u-done"},
        "spec": {"treeRef": {"name": TREE}, "input": "q"},
        "status": {"phase": "Succeeded", "workflowId": WF, "steps": 3},
    }
    svc.history.runs[WF] = {
        "workflow_id": WF, "namespace": NS, "name": EXISTING_RUN, "uid": "u-done", "tree": TREE,
        "status": "completed", "steps": 3, "token_usage": 0, "answer": "ok", "input": "q", "result": None,
        "started_at": datetime(2026, 12, 1, tzinfo=UTC), "finished_at": datetime(2026, 12, 1, 0, 1, tzinfo=UTC),
        "forked_from": None,
    }  # fmt: skip
    for i in (1, 2, 3):
        svc.history.add_step(WF, [i])
    return svc


async def test_every_route_answers_generated_requests_without_a_5xx_and_names_the_field():
    corpus = collect(requests(), examples(150))
    svc = services()
    failures, statuses = [], Counter()
    async with client(svc) as http:
        for req in corpus:
            try:
                r = await asyncio.wait_for(
                    http.request(req.method, req.path, params=req.params, headers=req.headers, content=req.content), 10
                )
            except TimeoutError:
                failures.append(f"no answer within 10 s: {req.describe()}")
                continue
            statuses[(req.route, r.status_code)] += 1
            if problem := check(r.status_code, r.text):
                failures.append(f"{problem}\n    request: {req.describe()}")
    created = [o for p, o in svc.kube.objects.items() if "/agentruns/" in p and not p.endswith(f"/{EXISTING_RUN}")]
    for obj in created:
        AgentRunSpec.model_validate(obj["spec"])  # what the API created, the CRD's model accepts
    print(f"\n{len(corpus)} requests: {sorted(statuses.items())}")
    assert not failures, f"{len(failures)} of {len(corpus)} requests:\n" + "\n".join(failures[:20])
    assert {route for route, _ in statuses} == set(ROUTES)
    assert any(code in (200, 201, 202) for _, code in statuses) and any(code == 422 for _, code in statuses)
