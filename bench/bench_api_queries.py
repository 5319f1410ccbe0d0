"""bench_api.py's history part: list-runs and steps-page latency, the API against the same SQL on asyncpg.

The history database is the bench's own (created by bench_api.py): ``runs`` rows spread over 10
namespaces (one of them the bench's Kubernetes namespace, where the requests go), each with
``filler`` steps, plus one run (``bch-steps``, no AgentRun: history only) with ``long`` steps, all
inserted with ``generate_series`` in a few statements.

Each case is timed one request at a time, ``requests`` times (after up to 10 unmeasured warm-ups), through
the API (``GET .../runs`` and ``GET .../runs/bch-steps/steps``, httpx, keep-alive) and as the very
SQL the API runs (``agent_tree.runs_query.list_runs_sql`` / the steps keyset query, including the
API's one extra row for ``nextCursor``) through asyncpg directly. The Kubernetes read the API makes
on each of these requests as the caller (the namespace's AgentRuns for a listing, the AgentRun for
steps) is timed alone too, so the difference can be read. ``EXPLAIN ANALYZE`` of each SQL shows the
index it uses.
"""

from __future__ import annotations

import json
import time
from typing import Any

import asyncpg

from agent_tree.runs_query import PHASES, encode_cursor, list_runs_sql

STEPS_SQL = """SELECT ord, type, agent, data, created_at FROM steps
               WHERE run_id = $1 AND ($2::integer[] IS NULL OR ord > $2) ORDER BY ord LIMIT $3"""
STEPS_RUN = "bch-steps"
TREES = 5

FILL_RUNS = """
INSERT INTO runs (workflow_id, run_id, namespace, name, uid, tree, tree_revision, root_agent, input, status,
                  answer, result, steps, token_usage, started_at, finished_at, updated_at)
SELECT 'agentrun.' || ns || '.' || nm || '.' || u, 'bench', ns, nm, u, 'tree-' || (i / 10 % $3), 'rev-1',
       'supervisor', 'Why was invoice #' || i || ' rejected?', st,
       CASE WHEN st <> 'running' THEN 'Invoice #' || i || ' rejected: missing PO number (policy AP-4).' END,
       CASE WHEN st <> 'running' THEN jsonb_build_object('status', st, 'final_agent', 'verifier') END,
       $4, 120, started, CASE WHEN st <> 'running' THEN started + interval '4 seconds' END, started
FROM (SELECT i,
             CASE WHEN i % 10 = 0 THEN $1 ELSE $1 || '-o' || (i % 10) END AS ns,
             'bch-h-' || lpad(i::text, 6, '0') AS nm,
             md5(i::text) AS u,
             CASE WHEN abs(hashtext(i::text)) % 100 < 3 THEN 'running'
                  WHEN abs(hashtext(i::text)) % 100 < 10 THEN 'failed'
                  WHEN abs(hashtext(i::text)) % 100 < 12 THEN 'cancelled'
                  ELSE 'completed' END AS st,
             now() - interval '1 hour' - i * interval '20 seconds' AS started
      FROM generate_series(1, $2) AS i) AS s
"""
FILL_FILLER_STEPS = """
INSERT INTO steps (run_id, ord, type, agent, data, created_at)
SELECT r.workflow_id, ARRAY[k], 'tool_end', 'triage', jsonb_build_object('tool', 'lookup', 'k', k), r.started_at
FROM runs r CROSS JOIN generate_series(1, $1) AS k WHERE r.run_id = 'bench'
"""
FILL_LONG_STEPS = """
INSERT INTO steps (run_id, ord, type, agent, data, created_at)
SELECT $1, ARRAY[(i - 1) / 5 + 1, (i - 1) % 5],
       (ARRAY['agent_start','tool_start','tool_end','reasoning','agent_end'])[(i - 1) % 5 + 1], 'supervisor',
       jsonb_build_object('i', i, 'text', repeat('Checking invoice #4821 against policy AP-4. ', 6)),
       now() - interval '1 hour' + i * interval '10 milliseconds'
FROM generate_series(1, $2) AS i
"""


async def _codecs(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):  # as the API's pool decodes them
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def fill(url: str, namespace: str, *, runs: int, filler: int, long: int) -> dict[str, Any]:
    """Insert the listing's runs, their filler steps and the long run; returns the long run's workflow id."""
    conn = await asyncpg.connect(url)
    try:
        began = time.monotonic()
        await conn.execute(FILL_RUNS, namespace, runs, TREES, filler)
        if filler:
            await conn.execute(FILL_FILLER_STEPS, filler)
        uid = "5000-steps-0000"
        workflow_id = f"agentrun.{namespace}.{STEPS_RUN}.{uid}"
        await conn.execute(
            """INSERT INTO runs (workflow_id, run_id, namespace, name, uid, tree, root_agent, input, status, answer,
                                 steps, started_at, finished_at)
               VALUES ($1, 'bench-long', $2, $3, $4, 'tree-0', 'supervisor', 'a long run', 'completed', 'done', $5,
                       now() - interval '1 hour', now() - interval '59 minutes')""",
            workflow_id,
            namespace,
            STEPS_RUN,
            uid,
            long,
        )
        await conn.execute(FILL_LONG_STEPS, workflow_id, long)
        await conn.execute("ANALYZE runs")
        await conn.execute("ANALYZE steps")
        counts = {
            "runs": await conn.fetchval("SELECT count(*) FROM runs"),
            "runs_in_namespace": await conn.fetchval("SELECT count(*) FROM runs WHERE namespace = $1", namespace),
            "steps": await conn.fetchval("SELECT count(*) FROM steps"),
            "fill_s": time.monotonic() - began,
        }
        return {"url": url, "namespace": namespace, "workflow_id": workflow_id, "long_steps": long, **counts}
    finally:
        await conn.close()


def _percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "n": len(s),
        "p50_ms": s[len(s) // 2] * 1000,
        "p99_ms": s[min(len(s) - 1, int(len(s) * 0.99))] * 1000,
        "mean_ms": sum(s) / len(s) * 1000,
    }


async def _time(call: Any, requests: int) -> dict[str, float]:
    for _ in range(min(10, max(1, requests // 5))):  # warm-ups, not measured
        await call()
    samples = []
    for _ in range(requests):
        began = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - began)
    return _percentiles(samples)


async def cases(url: str, namespace: str, long_wf: str, deep_runs: int, deep_steps: int) -> list[dict[str, Any]]:
    """The requests measured: (name, API path and query, the SQL and its parameters, what to check)."""
    from agent_tree_api.routes.steps import encode_step_cursor

    conn = await asyncpg.connect(url)
    try:
        deep = await conn.fetchrow(
            """SELECT started_at, workflow_id FROM runs WHERE namespace = $1
               ORDER BY started_at DESC, workflow_id DESC OFFSET $2 LIMIT 1""",
            namespace,
            deep_runs - 1,
        )
        step = await conn.fetchrow(
            "SELECT ord FROM steps WHERE run_id = $1 ORDER BY ord OFFSET $2 LIMIT 1", long_wf, deep_steps - 1
        )
    finally:
        await conn.close()
    base = f"/api/v1/namespaces/{namespace}"
    failed = PHASES["Failed"]
    out = [
        ("runs, first page", {}, {}),
        (f"runs, deep page (cursor after {deep_runs:,} runs)", {"cursor": encode_cursor(dict(deep))},
         {"before": (deep["started_at"], deep["workflow_id"])}),
        ("runs, tree filter", {"tree": "tree-3"}, {"tree": "tree-3"}),
        ("runs, phase filter (Failed)", {"phase": "Failed"}, {"statuses": failed}),
        ("runs, tree + phase filter", {"tree": "tree-3", "phase": "Failed"}, {"tree": "tree-3", "statuses": failed}),
    ]  # fmt: skip
    result = []
    for name, query, filters in out:
        sql, params = list_runs_sql(namespace=namespace, limit=51, **filters)
        result.append(
            {
                "case": name,
                "path": f"{base}/runs",
                "query": {"limit": "50", **query},
                "sql": sql,
                "params": params,
                "items": 50,
                "kube": None,
            }
        )
    cursor = encode_step_cursor(long_wf, list(step["ord"]), deep_steps)
    for name, query, after in (
        ("steps, first page", {}, None),
        (f"steps, deep page (cursor after {deep_steps:,} steps)", {"cursor": cursor}, list(step["ord"])),
    ):
        result.append(
            {
                "case": name,
                "path": f"{base}/runs/{STEPS_RUN}/steps",
                "query": {"limit": "100", **query},
                "sql": STEPS_SQL,
                "params": [long_wf, after, 101],
                "items": 100,
                "kube": STEPS_RUN,
            }
        )
    return result


async def measure(api_url: str, token: str, history: dict[str, Any], requests: int) -> dict[str, Any]:
    """Each case through the API and as SQL on asyncpg; the Kubernetes read alone; EXPLAIN of each SQL.

    ``history``: what :func:`fill` returned. The deep pages start after half the namespace's runs (at
    most 5,000) and after 80 % of the long run's steps.
    """
    url, namespace, long_wf = history["url"], history["namespace"], history["workflow_id"]
    deep_runs = min(5000, history["runs_in_namespace"] // 2)
    deep_steps = history["long_steps"] * 4 // 5
    import httpx
    from agent_tree_api.kube import Kube, KubeError, load_configuration, resource_path

    todo = await cases(url, namespace, long_wf, deep_runs, deep_steps)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1, init=_codecs)
    kube = Kube(load_configuration())
    headers = {"Authorization": f"Bearer {token}"}
    report: list[dict[str, Any]] = []
    try:
        async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as http:
            for case in todo:
                rows = len(await pool.fetch(case["sql"], *case["params"]))  # what each answer must hold
                page, more = min(rows, case["items"]), rows > case["items"]

                async def api(case: dict[str, Any] = case, page: int = page, more: bool = more) -> None:
                    response = await http.get(case["path"], params=case["query"])
                    body = response.json()
                    if response.status_code != 200 or len(body["items"]) < page or bool(body["nextCursor"]) != more:
                        raise AssertionError(f"{case['case']}: HTTP {response.status_code} {str(body)[:300]}")

                async def sql(case: dict[str, Any] = case, rows: int = rows) -> None:
                    if len(await pool.fetch(case["sql"], *case["params"])) != rows:
                        raise AssertionError(f"{case['case']}: the SQL returned another number of rows")

                async def kube_read(name: str | None = case["kube"]) -> None:
                    try:  # what the API asks the API server as the caller: the AgentRuns, or the one AgentRun
                        await kube.as_caller(token, "GET", resource_path(namespace, "agentruns", name))
                    except KubeError as exc:
                        if exc.status != 404:  # the long run has no AgentRun: the API gets the same 404
                            raise

                row = {"case": case["case"]}
                row["api"] = await _time(api, requests)
                row["sql"] = await _time(sql, requests)
                row["kube_read"] = await _time(kube_read, max(10, requests // 5))
                row["ratio_p50"] = row["api"]["p50_ms"] / row["sql"]["p50_ms"]
                row["ratio_p99"] = row["api"]["p99_ms"] / row["sql"]["p99_ms"]
                async with pool.acquire() as conn:
                    plan = await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF, SUMMARY ON) " + case["sql"], *case["params"])
                row["explain"] = [r[0] for r in plan]
                row["index_used"] = any("Index" in line for line in row["explain"]) and not any(
                    "Seq Scan" in line for line in row["explain"]
                )
                report.append(row)
    finally:
        await pool.close()
        await kube.close()
    return {"cases": report}
