"""Runs: list (history + cluster), get, create (as the caller), delete (= cancel), retry and fork."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response

from agent_tree import naming
from agent_tree.contract import ord_str
from agent_tree.run_requests import fork_manifest, new_name
from agent_tree.runs_query import MAX_LIMIT, QUERY_FIELDS, RunsQuery, UsageError, encode_cursor
from agent_tree_api.auth import Caller
from agent_tree_api.deps import Services, caller, services
from agent_tree_api.errors import ApiError
from agent_tree_api.kube import KubeError, resource_path
from agent_tree_api.models import Created, ForkRequest, Problem, RetryRequest, RunCreate, RunList, RunView
from agent_tree_api.routes.common import NAME_RE, NAMESPACE_RE, PREFIX, get_agentrun, history_call, resolve_run
from agent_tree_api.views import run_summary, run_view

router = APIRouter(prefix=PREFIX, tags=["runs"])
Namespace = Annotated[str, Path(pattern=NAMESPACE_RE, max_length=63)]
Name = Annotated[str, Path(pattern=NAME_RE, max_length=253)]
SELECT_BATCH = 100
"""Names per ``agenttree.io/run in (...)`` selector (a page of 1,000 runs is 10 lists)."""
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem} for code in (400, 401, 403, 404, 409, 413, 422, 503)
}


@router.get("/runs", response_model=RunList, responses=ERRORS)
async def list_runs(
    namespace: Namespace,
    tree: Annotated[str | None, Query(max_length=253, description="Only runs of this AgentTree.")] = None,
    phase: Annotated[
        str | None, Query(max_length=200, description="Running, Succeeded, Failed, Cancelled (comma-separated).")
    ] = None,
    since: Annotated[
        str | None, Query(max_length=20, description="Only runs started within, e.g. 90m, 12h, 7d.")
    ] = None,
    limit: Annotated[
        str | None, Query(max_length=20, description=f"Runs per page, 1..{MAX_LIMIT} (default 50).")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=400, description="nextCursor of the previous page.")] = None,
    who: Caller = Depends(caller),
    svc: Services = Depends(services),
) -> RunList:
    """Runs of the namespace, newest first, from the history (also runs whose AgentRun was deleted).

    The first page also holds the AgentRuns that have not started yet (phase Pending). Each run's
    phase, current agent and answer come from its AgentRun while it exists.
    """
    try:
        query = RunsQuery.parse(
            namespace=namespace, tree=tree, phase=phase, since=since, limit=limit, cursor=cursor, flags=QUERY_FIELDS
        )
    except UsageError as exc:
        field = str(exc).split(" ", 1)[0]
        raise ApiError.invalid(field, str(exc).split(": ", 1)[-1]) from None
    await svc.auth.require(who, "list", namespace)
    since_at = datetime.now(UTC) - query.since if query.since else None
    rows = await history_call(
        svc.history.list_runs(
            namespace=namespace,
            tree=query.tree,
            statuses=query.statuses,
            since=since_at,
            before=query.before,
            limit=query.limit + 1,
        )
    )
    page, more = rows[: query.limit], len(rows) > query.limit
    live = await _agentruns(svc, who, namespace, [row["name"] for row in page])
    items = []
    if query.before is None and query.statuses is None:
        seen = {row["uid"] for row in page}
        for obj in live.values():  # not started yet: no history row
            meta = obj["metadata"]
            if meta["uid"] in seen or (obj.get("status") or {}).get("workflowId"):
                continue
            if query.tree and ((obj.get("spec") or {}).get("treeRef") or {}).get("name") != query.tree:
                continue
            items.append(run_summary(namespace, meta["name"], obj, None))
    for row in page:
        obj = live.get(row["name"])
        items.append(
            run_summary(namespace, row["name"], obj if obj and obj["metadata"]["uid"] == row["uid"] else None, row)
        )
    return RunList(items=items, nextCursor=encode_cursor(page[-1]) if more else None)


async def _agentruns(svc: Services, who: Caller, namespace: str, names: list[str]) -> dict[str, dict[str, Any]]:
    """The AgentRuns a page needs, by name: every unfinished one (the not-yet-started runs are listed
    from them), and those of ``names`` (the page's history rows) that still exist.

    Label-selected lists only, so the cost follows the runs in flight and the page size, not the
    namespace's history (listing every AgentRun took 18 s at p99 with 1,800 finished runs kept, in the
    fault suite's soak; a GET per page row cost 50 requests for a page of deleted runs):

    1. ``agenttree.io/finished!=true``: runs in flight, runs kept for a TTL, runs not labelled yet;
    2. ``agenttree.io/run in (...)``: the page's finished runs (the operator labels a run with its own
       name when it labels it finished);
    3. only when page rows are still missing: ``agenttree.io/finished=true,!agenttree.io/run``, the
       finished runs an operator before that label retired (a set that never grows).
    """
    try:
        found = await _list(svc, who, namespace, naming.UNFINISHED_SELECTOR)
        missing = {naming.run_label(n): n for n in names if n not in found}
        labels = sorted(missing)
        for i in range(0, len(labels), SELECT_BATCH):
            selector = f"{naming.LABEL_RUN} in ({','.join(labels[i : i + SELECT_BATCH])})"
            found.update({k: v for k, v in (await _list(svc, who, namespace, selector)).items() if k in names})
        if any(n not in found for n in missing.values()):
            legacy = f"{naming.LABEL_FINISHED}=true,!{naming.LABEL_RUN}"
            found.update({k: v for k, v in (await _list(svc, who, namespace, legacy)).items() if k in names})
    except KubeError as exc:
        if exc.status == 403:
            return {}  # may read the history (the SubjectAccessReview said so) but not list the objects
        raise ApiError.from_kube(exc) from None
    return found


async def _list(svc: Services, who: Caller, namespace: str, selector: str) -> dict[str, dict[str, Any]]:
    path = resource_path(namespace, "agentruns")
    listed = await svc.kube.as_caller(who.token, "GET", path, params={"labelSelector": selector})
    return {obj["metadata"]["name"]: obj for obj in listed.get("items") or []}


@router.get("/runs/{name}", response_model=RunView, responses=ERRORS)
async def get_run(
    namespace: Namespace, name: Name, who: Caller = Depends(caller), svc: Services = Depends(services)
) -> RunView:
    """One run: its AgentRun (spec, status) when it exists, and its latest run in the history.

    ``recordedSteps`` and ``lastPosition`` say where the history ends now, so a client can page the
    steps with .../steps and follow only the new ones with .../events?since=lastPosition.
    """
    agentrun, row, workflow_id = await resolve_run(svc, who, namespace, name)
    view = run_view(namespace, name, agentrun, row)
    count, last = await history_call(svc.history.tail(workflow_id))
    return view.model_copy(update={"recordedSteps": count, "lastPosition": ord_str(last) if last else None})


@router.post("/runs", response_model=Created, status_code=201, responses=ERRORS)
async def create_run(
    namespace: Namespace, body: RunCreate, who: Caller = Depends(caller), svc: Services = Depends(services)
) -> Created:
    """Create an AgentRun through the Kubernetes API with the caller's own token (RBAC and audit apply)."""
    spec = body.spec.model_dump(mode="json", exclude_unset=True)
    if body.spec.treeRef is not None:
        await _require_tree(svc, who, namespace, body.spec.treeRef.name)
    metadata: dict[str, Any] = {"labels": body.labels} if body.labels else {}
    metadata["name" if body.name else "generateName"] = body.name or body.generateName
    manifest = {"apiVersion": naming.API_VERSION, "kind": "AgentRun", "metadata": metadata, "spec": spec}
    return await _create(svc, who, namespace, manifest)


async def _require_tree(svc: Services, who: Caller, namespace: str, tree: str) -> None:
    try:
        await svc.kube.as_caller(who.token, "GET", resource_path(namespace, "agenttrees", tree))
    except KubeError as exc:
        if exc.status == 404:
            raise ApiError.invalid(
                "spec.treeRef.name", f"AgentTree {tree!r} does not exist in namespace {namespace!r}; apply it first"
            ) from None
        if exc.status != 403:  # may create runs without reading trees: the operator reports a missing one
            raise ApiError.from_kube(exc) from None


async def _create(svc: Services, who: Caller, namespace: str, manifest: dict[str, Any]) -> Created:
    try:
        made = await svc.kube.as_caller(who.token, "POST", resource_path(namespace, "agentruns"), manifest)
    except KubeError as exc:
        raise ApiError.from_kube(exc) from None
    meta = made["metadata"]
    return Created(namespace=namespace, name=meta["name"], uid=meta["uid"], createdBy=who.username)


@router.delete("/runs/{name}", status_code=202, responses=ERRORS)
async def delete_run(
    namespace: Namespace, name: Name, who: Caller = Depends(caller), svc: Services = Depends(services)
) -> Response:
    """Delete the AgentRun as the caller: its workflow is cancelled (finalizer); the history stays."""
    try:
        await svc.kube.as_caller(who.token, "DELETE", resource_path(namespace, "agentruns", name))
    except KubeError as exc:
        raise ApiError.from_kube(exc) from None
    return Response(status_code=202)


@router.post("/runs/{name}/retry", response_model=Created, status_code=201, responses=ERRORS)
async def retry_run(
    namespace: Namespace,
    name: Name,
    body: RetryRequest | None = None,
    who: Caller = Depends(caller),
    svc: Services = Depends(services),
) -> Created:
    """A new AgentRun reusing every step before the source's first failed one (spec.forkFrom {run})."""
    body = body or RetryRequest()
    return await _fork(svc, who, namespace, name, body, "retry", None, None, None)


@router.post("/runs/{name}/fork", response_model=Created, status_code=201, responses=ERRORS)
async def fork_run(
    namespace: Namespace,
    name: Name,
    body: ForkRequest,
    who: Caller = Depends(caller),
    svc: Services = Depends(services),
) -> Created:
    """A new AgentRun reusing the source's steps 1..step and running live after (spec.forkFrom)."""
    return await _fork(svc, who, namespace, name, body, "fork", body.step, body.input, body.context)


async def _fork(
    svc: Services,
    who: Caller,
    namespace: str,
    source: str,
    body: RetryRequest,
    kind: str,
    step: int | None,
    user_input: str | None,
    context: dict[str, Any] | None,
) -> Created:
    agentrun = await get_agentrun(svc, who, namespace, source)
    if agentrun is None:
        await svc.auth.require(who, "get", namespace)
        row = await history_call(svc.history.latest_run(namespace, source))
        if row is None:
            raise ApiError(404, "NotFound", f"AgentRun {namespace}/{source}: not in the cluster and not in the history")
    if step is not None:
        # The recorded steps, as the steps listing numbers them (the row's `steps` counts routing steps).
        row = await history_call(svc.history.latest_run(namespace, source))
        if row is not None and row.get("status") != "running":
            total = await history_call(svc.history.count_steps(row["workflow_id"]))
            if step > total:
                raise ApiError.invalid("step", f"run {source} has {total} steps; choose one from 1 to {total}")
    manifest = fork_manifest(
        body.name or new_name(source, kind),
        source,
        step=step,
        user_input=user_input,
        context=context,
        current_tree=body.currentTree,
        source_spec=(agentrun or {}).get("spec"),
    )
    return await _create(svc, who, namespace, manifest)
