"""Fuzzing a real ``agent-tree api`` process (docs/reliability.md, "Fuzzing"): a sample of the generated
requests of tests/unit/fuzz_requests.py (every route; odd paths, parameters, headers and bodies), sent
with a ServiceAccount's token to the API in front of the real API server and PostgreSQL: never a 5xx,
every 4xx in the error shape and, when it is a 400 or 422, naming the field; the process logs no traceback.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml
from operator_process import invoice_tree, ok
from platformlib import Platform
from test_secrets import Api

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from fuzz_manifests import collect, examples
from fuzz_requests import NS, check, requests

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]


def send(api: Api, req, ns: str) -> tuple[int, str]:
    path = req.path.replace(f"/namespaces/{NS}/", f"/namespaces/{ns}/")
    query = urllib.parse.urlencode(req.params)
    http = urllib.request.Request(
        f"http://127.0.0.1:{api.port}{path}{'?' + query if query else ''}", data=req.content, method=req.method
    )
    for key, value in req.headers.items():
        http.add_header(key, value)
    try:
        with urllib.request.urlopen(http, timeout=30) as resp:
            return resp.status, resp.read(4096).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def test_a_real_api_process_answers_generated_requests_without_a_5xx(platform: Platform, tmp_path: Path) -> None:
    ns = f"fz-api-{uuid.uuid4().hex[:8]}"
    ok(platform.kubectl("create", "namespace", ns))
    try:
        ok(platform.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(invoice_tree())))
        ok(platform.kubectl("create", "serviceaccount", "caller", "-n", ns))
        resources = "--resource=agentruns.agenttree.io,agenttrees.agenttree.io,agentapprovals.agenttree.io"
        ok(
            platform.kubectl(
                "create", "role", "caller", "-n", ns, "--verb=get,list,watch,create,update,patch,delete", resources
            )
        )
        ok(
            platform.kubectl(
                "create", "rolebinding", "caller", "-n", ns, "--role=caller", f"--serviceaccount={ns}:caller"
            )
        )
        token = ok(platform.kubectl("create", "token", "caller", "-n", ns)).strip()
        corpus = collect(requests(token=token), max(40, examples(150) // 4))
        api = Api(platform, tmp_path / "api.log")
        failures, statuses = [], Counter()
        try:
            for req in corpus:
                status, text = send(api, req, ns)
                statuses[(req.route, status)] += 1
                if problem := check(status, text):
                    failures.append(f"{problem}\n    request: {req.describe()}")
        finally:
            api.stop()
        log = (tmp_path / "api.log").read_text(errors="replace")
    finally:
        platform.kubectl("delete", "namespace", ns, "--wait=false")
    print(f"\n{len(corpus)} requests to a real API process: {sorted(statuses.items())}")
    assert failures == [], f"{len(failures)} of {len(corpus)}:\n" + "\n".join(failures[:15])
    assert "Traceback" not in log, log[-3000:]
