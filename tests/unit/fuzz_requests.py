"""Hypothesis strategies of REST API requests for the fuzz tests (docs/reliability.md, "Fuzzing").

:func:`requests` draws a :class:`Req` for every route of ``agent-tree api``: path parameters (existing
and odd names), query parameters and headers (random text, numbers, huge values), and bodies (valid
ones, one field off, random JSON, JSON that is not an object, bytes that are not UTF-8, bodies over the
size limit). :func:`check` says what is wrong with an answer: a 5xx, or a 4xx that does not say why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from fuzz_manifests import json_values, names, valid_runs
from hypothesis import strategies as st

NS = "team-a"
EXISTING_RUN = "done"  # a finished run: in the cluster and in the history (3 steps)
TREE = "invoice"

odd_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
names_any = st.sampled_from([EXISTING_RUN, "why-1", "nope", TREE, "UPPER", "a" * 300, "..", "%", "ü"]) | odd_text
query_values = (
    odd_text
    | st.integers(-(10**12), 10**12).map(str)
    | st.sampled_from(["", "0", "-1", "1h", "90m", "7d", "Running,Failed", "x" * 500, "1.2.3", "null"])
)


@dataclass
class Req:
    method: str
    route: str  # the route's template, for the report
    path: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None

    def describe(self) -> str:
        body = (self.content or b"")[:200]
        return f"{self.method} {self.path} params={self.params} headers={self.headers} body={body!r}"


@st.composite
def bodies(draw: st.DrawFn, good: st.SearchStrategy[dict[str, Any]]) -> bytes | None:
    kind = draw(st.sampled_from(["good", "good", "one-off", "random", "not-object", "not-utf8", "huge", "none"]))
    if kind == "none":
        return None
    if kind == "not-utf8":
        return b'{"name": "\xff\xfe", "spec": ' + draw(st.binary(max_size=20)) + b"}"
    if kind == "huge":
        return json.dumps({"name": "big", "spec": {"treeRef": {"name": TREE}, "input": "x" * 70_000}}).encode()
    if kind == "not-object":
        return json.dumps(draw(st.lists(json_values, max_size=3) | st.integers() | odd_text)).encode()
    if kind == "random":
        return json.dumps(draw(st.dictionaries(odd_text | names, json_values, max_size=4))).encode()
    body = draw(good)
    if kind == "one-off" and body:
        key = draw(st.sampled_from(sorted(body)))
        body[key] = draw(st.sampled_from([None, 7, "x", [], {}, True, "y" * 5000]))
    return json.dumps(body).encode()


run_bodies = st.builds(
    lambda spec, name, labels: {**name, **({"labels": labels} if labels else {}), "spec": spec["spec"]},
    valid_runs().map(lambda d: {**d, "spec": {**d["spec"], "treeRef": {"name": TREE}}}),
    st.sampled_from([{"name": "fz-new"}, {"generateName": "fz-"}, {}, {"name": "x", "generateName": "y-"}]),
    st.none() | st.dictionaries(names, odd_text, max_size=2),
)
fork_bodies = st.fixed_dictionaries(
    {"step": st.integers(-2, 6)},
    optional={
        "input": odd_text,
        "context": st.dictionaries(names, json_values, max_size=2),
        "name": st.sampled_from(["fz-fork", "Bad"]),
        "currentTree": st.booleans(),
    },
)
retry_bodies = st.fixed_dictionaries(
    {}, optional={"name": st.sampled_from(["fz-retry", "Bad"]), "currentTree": st.booleans()}
)
decision_bodies = st.fixed_dictionaries({}, optional={"reason": odd_text | st.just("r" * 2000)})

ROUTES: dict[str, tuple[str, str, dict[str, st.SearchStrategy[Any]], st.SearchStrategy[dict[str, Any]] | None]] = {
    # template: (method, path, query parameters, good bodies)
    "whoami": ("GET", "/api/v1/whoami", {}, None),
    "trees": ("GET", "/api/v1/namespaces/{ns}/trees", {}, None),
    "tree": ("GET", "/api/v1/namespaces/{ns}/trees/{name}", {}, None),
    "runs": (
        "GET",
        "/api/v1/namespaces/{ns}/runs",
        {k: query_values for k in ("tree", "phase", "since", "limit", "cursor")},
        None,
    ),
    "create": ("POST", "/api/v1/namespaces/{ns}/runs", {}, run_bodies),
    "run": ("GET", "/api/v1/namespaces/{ns}/runs/{name}", {}, None),
    "delete": ("DELETE", "/api/v1/namespaces/{ns}/runs/{name}", {}, None),
    "steps": (
        "GET",
        "/api/v1/namespaces/{ns}/runs/{name}/steps",
        {"limit": query_values, "cursor": query_values},
        None,
    ),
    "events": ("GET", "/api/v1/namespaces/{ns}/runs/{name}/events", {"since": query_values}, None),
    "approvals": ("GET", "/api/v1/namespaces/{ns}/runs/{name}/approvals", {}, None),
    "approve": ("POST", "/api/v1/namespaces/{ns}/runs/{name}/approvals/{id}/approve", {}, decision_bodies),
    "reject": ("POST", "/api/v1/namespaces/{ns}/runs/{name}/approvals/{id}/reject", {}, decision_bodies),
    "retry": ("POST", "/api/v1/namespaces/{ns}/runs/{name}/retry", {}, retry_bodies),
    "fork": ("POST", "/api/v1/namespaces/{ns}/runs/{name}/fork", {}, fork_bodies),
}


@st.composite
def requests(draw: st.DrawFn, route: str | None = None, token: str = "alice-token") -> Req:
    route = route or draw(st.sampled_from(sorted(ROUTES)))
    method, template, query, good = ROUTES[route]
    ns = draw(st.sampled_from([NS, NS, NS, "team-b", "Bad_NS"]))
    # The event stream of a run that is not finished stays open: only the finished run and unknown ones.
    name = draw(st.sampled_from([EXISTING_RUN, "nope", "UPPER"]) if route == "events" else names_any)
    path = template.format(
        ns=quote(ns, safe=""), name=quote(name, safe=""), id=quote(draw(names_any | st.just("a1")), safe="")
    )
    params = {k: draw(v) for k, v in query.items() if draw(st.booleans())}
    headers = {"Authorization": f"Bearer {token}"}
    if route == "events" and draw(st.booleans()):
        headers["Last-Event-ID"] = draw(query_values).encode("ascii", "replace").decode()
    content = draw(bodies(good)) if good is not None else None
    if content is not None:
        headers["Content-Type"] = draw(st.sampled_from(["application/json"] * 4 + ["text/plain", "application/xml"]))
    return Req(method, route, path, params, headers, content)


def check(status: int, text: str) -> str | None:
    """What is wrong with an answer (None: nothing): a 5xx, or a 4xx without the error shape or a field."""
    if status >= 500:
        return f"server error {status}: {text[:300]}"
    if status < 400:
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return f"{status} whose body is not JSON: {text[:200]!r}"
    if not isinstance(body, dict) or body.get("status") != status or not body.get("reason") or not body.get("message"):
        return f"{status} without the error shape: {text[:300]}"
    if status in (400, 422):
        errors = body.get("errors") or []
        if not errors or not all(isinstance(e.get("field"), str) and e["field"] for e in errors):
            return f"{status} that names no field: {text[:300]}"
    return None
