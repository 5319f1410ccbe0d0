"""The web view on a long run: time to first paint and to scroll to the end of a 5,000-step run's page,
measured in the browser (Performance API) in Debian's headless chromium driven by Playwright.

Setup on the running local platform (`hack/platform up`): a namespace ``web-bench-*`` with a
ServiceAccount allowed to read runs, AgentRuns created through the Kubernetes API (no operator
watches the namespace, so they stay as created), and their histories written straight into
PostgreSQL with the worker's HistoryStore (5,000 steps, and 50 for the baseline). Then
``agent-tree api`` as a process serves the page and the data.

Measured per page load (median of --repeat): first contentful paint, the time until the first steps
are shown (the first page of GET .../steps), and the time to scroll the steps list to its end (the
page fetches a page of 200 steps each time the list nears its end). Baselines: the same page on a
50-step run, and a static HTML page holding the same 5,000 rows (no API, no script).

    set -a; . "$(hack/platform envfile)"; set +a
    .venv/bin/python bench/bench_web.py --steps 5000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "worker"), str(REPO / "api")]
from agent_tree_worker.store import HistoryStore  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from agent_tree import naming  # noqa: E402

CHROMIUM = os.environ.get("AGENT_TREE_CHROMIUM", "/usr/bin/chromium")
AGENT_TREE = Path(sys.executable).parent / "agent-tree"


def kubectl(*args: str, input: str | None = None) -> str:
    out = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {out.stderr}")
    return out.stdout


def steps_of(n: int, t0: datetime) -> list[dict]:
    """A supervisor handing to a clerk who calls a tool over and over: n steps in all."""
    out = [{"ord": [1], "type": "agent_start", "agent": "desk", "data": {"type": "agent_start", "agent": "desk", "input": "Look every invoice up."}}]  # fmt: skip
    out.append({"ord": [2], "type": "agent_start", "agent": "clerk", "data": {"type": "agent_start", "agent": "clerk", "input": "Look every invoice up."}})  # fmt: skip
    i = 0
    while len(out) < n - 3:
        i += 1
        out.append({"ord": [3, 2 * i - 1], "type": "tool_start", "agent": "clerk", "data": {"type": "tool_start", "tool": "lookup", "args": {"invoice_id": str(i)}}})  # fmt: skip
        out.append({"ord": [3, 2 * i], "type": "tool_end", "agent": "clerk", "data": {"type": "tool_end", "tool": "lookup", "status": "ok", "output": {"invoice_id": str(i), "amount": 100 + i}, "error": None}})  # fmt: skip
    out.append({"ord": [4], "type": "agent_end", "agent": "clerk", "data": {"type": "agent_end", "agent": "clerk", "status": "ok", "summary": f"looked up {i} invoices"}})  # fmt: skip
    out.append({"ord": [5], "type": "handoff", "agent": "clerk", "data": {"type": "handoff", "agent": "clerk", "to_agent": "desk", "status": "ok", "summary": "done", "payload": {}}})  # fmt: skip
    out.append({"ord": [6], "type": "agent_end", "agent": "desk", "data": {"type": "agent_end", "agent": "desk", "status": "completed", "summary": "done"}})  # fmt: skip
    for k, step in enumerate(out):
        step["ts"] = (t0 + timedelta(milliseconds=10 * k)).isoformat()
    return out[:n]


async def write_history(ns: str, name: str, uid: str, n: int) -> str:
    store = HistoryStore(os.environ["DATABASE_URL"])
    await store.migrate()
    workflow_id = naming.workflow_id(ns, name, uid)
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    run = {"workflow_id": workflow_id, "run_id": "bench", "namespace": ns, "name": name, "uid": uid, "tree": "ledger",
           "revision": "bench", "root": "desk", "input": "Look every invoice up.", "context": {}, "started_at": t0.isoformat()}  # fmt: skip
    await store.start_run(run, "bench")
    steps = steps_of(n, t0)
    for at in range(0, len(steps), 1000):
        await store.write_steps(workflow_id, steps[at : at + 1000])
    await store.finish_run(
        workflow_id, {"status": "completed", "answer": "done", "steps": 1, "token_usage": 0}, "bench"
    )
    await store.close()
    return workflow_id


async def drop_history(workflow_ids: list[str]) -> None:
    store = HistoryStore(os.environ["DATABASE_URL"])
    pool = await store._get_pool()
    for wf in workflow_ids:
        await pool.execute("DELETE FROM steps WHERE run_id = $1", wf)
        try:  # the audit log is append-only: the run's row may have to stay
            await pool.execute("DELETE FROM runs WHERE workflow_id = $1", wf)
        except Exception as exc:
            print(f"kept the runs row of {wf}: {exc}", file=sys.stderr)
    await store.close()


MEASURE = """async (hideTimeline) => {
  const t = (name) => performance.getEntriesByName(name)[0]?.startTime ?? null;
  const wait = (pred) => new Promise((resolve) => { const tick = () => pred() ? resolve(performance.now()) : requestAnimationFrame(tick); tick(); });
  const main = document.querySelector('main');
  const firstSteps = await wait(() => document.querySelector('#steps-list li'));
  if (hideTimeline) document.querySelector('#timeline').style.display = 'none';
  const total = Number(document.querySelector('#run-summary #run-steps')?.textContent.replace(/[^0-9]/g, '') || 0);
  const box = document.querySelector('#steps-scroll');
  const start = performance.now();
  await wait(() => { box.scrollTop = box.scrollHeight; const more = document.querySelector('#steps-more'); return more && more.hidden; });
  const end = performance.now();
  const pages = performance.getEntriesByType('resource').filter((e) => e.name.includes('/steps?'));
  return { fcp: t('first-contentful-paint'), firstSteps, scrollToEnd: end - start, shown: Number(main.dataset.steps), total,
           rows: document.querySelectorAll('#steps-scroll li').length, pages: pages.length,
           maxPageBytes: Math.max(...pages.map((p) => p.encodedBodySize || p.transferSize || 0)),
           fetchMs: pages.reduce((a, p) => a + p.duration, 0) };
}"""

STATIC_MEASURE = """async (hideTimeline) => {
  const t0 = performance.now();
  const wait = () => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  await wait();
  const box = document.querySelector('#steps-scroll');
  const s0 = performance.now();
  box.scrollTop = box.scrollHeight; await wait();
  return { fcp: performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null, firstSteps: t0, scrollToEnd: performance.now() - s0, rows: document.querySelectorAll('li').length };
}"""


def static_page(steps: list[dict]) -> str:
    css = (REPO / "api" / "agent_tree_api" / "static" / "app.css").read_text()
    rows = "".join(
        f'<li class="step"><button type="button"><span class="n">#{k + 1}</span><span class="pos">{".".join(map(str, s["ord"]))}</span>'
        f'<span class="ag">{s["agent"]}</span><span class="ty">{s["type"]}</span><span class="sm">{html.escape(json.dumps(s["data"])[:90])}</span></button></li>'
        for k, s in enumerate(steps)
    )
    return f'<!doctype html><html><head><style>{css}</style></head><body><main><div class="steps-scroll" id="steps-scroll"><ol class="steps">{rows}</ol></div></main></body></html>'


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--baseline-steps", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    ns = f"web-bench-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    api = None
    workflows: list[str] = []
    try:
        kubectl("-n", ns, "create", "serviceaccount", "reader")
        kubectl("-n", ns, "create", "role", "reader", "--verb=get,list", "--resource=agentruns.agenttree.io,agenttrees.agenttree.io,agentapprovals.agenttree.io")  # fmt: skip
        kubectl("-n", ns, "create", "rolebinding", "reader", "--role=reader", f"--serviceaccount={ns}:reader")
        token = kubectl("-n", ns, "create", "token", "reader", "--duration=1h").strip()
        runs = {"long": args.steps, "short": args.baseline_steps}
        for name, n in runs.items():
            manifest = {"apiVersion": naming.API_VERSION, "kind": "AgentRun", "metadata": {"name": name},
                        "spec": {"treeRef": {"name": "ledger"}, "input": "Look every invoice up."}}  # fmt: skip
            kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(manifest))
            uid = kubectl("-n", ns, "get", "agentrun", name, "-o", "jsonpath={.metadata.uid}")
            workflows.append(asyncio.run(write_history(ns, name, uid, n)))
            # what the operator would write for a finished run (no operator watches this namespace)
            status = {"status": {"phase": "Succeeded", "workflowId": workflows[-1], "steps": 1, "answer": "done"}}
            kubectl(
                "-n", ns, "patch", "agentrun", name, "--subresource=status", "--type=merge", "-p", json.dumps(status)
            )
        port = 18000 + os.getpid() % 1000
        env = {**os.environ, "AGENT_TREE_API_METRICS_PORT": "0"}
        log = open(Path(tempfile.gettempdir()) / f"{ns}-api.log", "wb")
        api = subprocess.Popen([str(AGENT_TREE), "api", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the API did not become ready") from None
                time.sleep(0.2)
        results: dict[str, list[dict]] = {"long": [], "short": [], "static": []}
        static = Path(tempfile.gettempdir()) / f"{ns}-static.html"
        static.write_text(static_page(steps_of(args.steps, datetime.now(UTC))))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            for _ in range(args.repeat):
                for name in ("long", "short"):
                    ctx = browser.new_context(base_url=base, viewport={"width": 1280, "height": 900})
                    ctx.add_init_script(f"sessionStorage.setItem('agent-tree.token', {json.dumps(token)})")
                    page = ctx.new_page()
                    page.goto(f"/ui/ns/{ns}/runs/{name}")
                    results[name].append(page.evaluate(MEASURE, os.environ.get("BENCH_HIDE_TIMELINE") == "1"))
                    ctx.close()
                ctx = browser.new_context(viewport={"width": 1280, "height": 900})
                page = ctx.new_page()
                page.goto(static.as_uri(), timeout=120_000)
                results["static"].append(page.evaluate(STATIC_MEASURE))
                ctx.close()
            browser.close()
        print(f"chromium {CHROMIUM}; {args.repeat} loads each; median ms")
        print(
            "| page | steps | first contentful paint | first steps shown | scroll to the end | of which waiting for step pages | step pages fetched | largest page (bytes) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        labels = {"long": f"run page, {args.steps}-step run", "short": f"run page, {args.baseline_steps}-step run (baseline)", "static": f"static HTML, same {args.steps} rows (baseline)"}  # fmt: skip
        for key, rows in results.items():

            def med(k: str, rows: list[dict] = rows) -> str:
                values = [r[k] for r in rows if r.get(k) is not None]
                return f"{statistics.median(values):.0f}" if values else "—"

            shown = rows[-1].get("shown", rows[-1].get("rows"))
            pages = rows[-1].get("pages", "—")
            biggest = rows[-1].get("maxPageBytes", "—")
            print(
                f"| {labels[key]} | {shown} | {med('fcp')} | {med('firstSteps')} | {med('scrollToEnd')} | {med('fetchMs')} | {pages} | {biggest} |"
            )
        print(json.dumps(results))
    finally:
        if api is not None:
            os.killpg(api.pid, signal.SIGTERM)
            api.wait(30)
        subprocess.run(["kubectl", "delete", "namespace", ns, "--wait=false"], capture_output=True)
        if workflows:
            asyncio.run(drop_history(workflows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
