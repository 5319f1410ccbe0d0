// A run: its graph with each agent's live state, a timeline, the steps (paged in as they are
// scrolled) with an inspector, live model text, approvals, retry and fork, answer and budgets.
// Live: GET .../events?since=<the last recorded position> (SSE over fetch), so joining a long run
// never replays its whole history; older steps come from GET .../steps a page at a time.
import { ApiError, get, nsPath, post, query } from "../api";
import { h, replace } from "../dom";
import { layout, renderGraph, treeFromSteps } from "../graph";
import { navigate, paths } from "../router";
import { follow, type Follow } from "../sse";
import { derive, STATE_LABEL } from "../state";
import { renderTimeline } from "../timeline";
import type { Approval, Created, Page, RunView, Step, StepItem, TreeView } from "../types";
import { TERMINAL } from "../types";
import { errorBox, phaseBadge, section, setTitle } from "../ui";
import { answer, approvalsList, budgets, deltaPanel, summaryList } from "./run_parts";
import { compareOrd, emptyInspector, inspector, position, stepButton, type Numbered } from "./steps";

export const PAGE_SIZE = 200;
const END_PHASE: Record<string, string> = { completed: "Succeeded", failed: "Failed", max_steps_reached: "Failed", cancelled: "Cancelled" };

export function runPage(main: HTMLElement, ns: string, name: string): () => void {
  setTitle(`Run ${name}`);
  const base = nsPath(ns, `/runs/${encodeURIComponent(name)}`);
  const el = {
    head: h("div", { class: "run-head" }),
    conn: h("span", { id: "stream-state", class: "conn", role: "status" }),
    problem: h("div", { id: "run-error" }),
    actions: h("div", { class: "actions" }),
    actionOut: h("div", { id: "action-result", role: "status" }),
    summary: h("div", { id: "run-summary" }),
    answer: h("div", { id: "run-answer" }),
    budgets: h("div", { id: "run-budgets" }),
    graph: h("div", { class: "graph-box", id: "run-graph" }),
    agents: h("ul", { class: "sr-only", id: "agent-states" }),
    approvals: h("div", { id: "approvals" }),
    deltas: h("div", { id: "model-output", role: "log", "aria-live": "off" }),
    timeline: h("div", { class: "timeline-box", id: "timeline", tabindex: 0, "aria-label": "Timeline (scrolls sideways)" }),
    list: h("ol", { class: "steps", id: "steps-list", "aria-label": "Steps" }),
    sentinel: h("div", { class: "sentinel", id: "steps-more" }),
    scroller: h("div", { class: "steps-scroll", id: "steps-scroll" }),
    inspector: h("div", { class: "inspector", id: "inspector", "aria-live": "polite" }),
  };
  el.scroller.append(el.list, el.sentinel);
  emptyInspector(el.inspector);
  replace(main,
    el.head, el.problem, el.actions, el.actionOut,
    h("div", { class: "top-grid" },
      section("Summary", "h-summary", el.summary),
      section("Agents", "h-graph", h("p", { class: "help" }, "Each agent's state from the steps: not reached, running, awaiting approval, ok, needs more info, failed. Dashed arrows: agents called as tools."), el.graph, el.agents)),
    section("Approvals", "h-approvals", el.approvals),
    section("Answer and result", "h-answer", el.answer),
    section("Model output (live)", "h-deltas", el.deltas),
    section("Timeline", "h-timeline", el.timeline),
    h("section", { class: "panel steps-panel", "aria-labelledby": "h-steps" }, h("h2", { id: "h-steps" }, "Steps"),
      h("div", { class: "split" }, el.scroller, el.inspector)),
    section("Budgets", "h-budgets", el.budgets));

  let run: RunView | null = null;
  let tree: TreeView | null = null;
  let treeGone = false; // the AgentTree could not be read: the graph is drawn from the steps
  let steps: Numbered[] = [];
  const seen = new Set<string>();
  let cursor: string | null = null;
  let pagingDone = false;
  let paging = false;
  let pagedCount = 0;
  let selected: number | null = null; // a step number
  let stream: Follow | null = null;
  let liveBase = { count: 0 };
  let liveIndex = 0;
  let stopped = false;
  let watchdog = 0;
  // The stream's `end` comes from the history, often before the operator has written the
  // AgentRun's final phase: until the AgentRun says so, the page shows the phase `end` gave.
  let endedPhase: string | null = null;
  let apiPhase: string | null = null;
  const calls = new Map<string, { agent: string; model: string; text: string; done: boolean }>();

  // --- rendering (coalesced: many steps in one frame render once) ---
  let frame = 0;
  const dirty = new Set<string>();
  const schedule = (...parts: string[]) => {
    parts.forEach((p) => dirty.add(p));
    if (!frame) frame = requestAnimationFrame(draw);
  };
  const draw = () => {
    frame = 0;
    if (stopped || !run) return;
    const parts = new Set(dirty);
    dirty.clear();
    if (treeGone && parts.has("steps")) tree = treeFromSteps(ns, run.tree ?? "", steps);
    const derived = derive(tree, steps, run.phase);
    const current = run.phase && TERMINAL.has(run.phase) ? null : pagingDone ? derived.current ?? run.currentAgent ?? null : run.currentAgent ?? derived.current;
    if (parts.has("run")) {
      replace(el.head, h("h1", {}, "Run ", h("span", {}, name), " ", phaseBadge(run.phase)), el.conn);
      replace(el.summary, summaryList(ns, run, current ?? null, Math.max(run.recordedSteps ?? 0, liveBase.count + liveIndex, steps.length)));
      replace(el.answer, answer(run));
      replace(el.budgets, budgets(run, tree));
      actions();
      main.dataset.phase = run.phase ?? "Pending";
    }
    if (tree && (parts.has("run") || parts.has("steps"))) {
      replace(el.graph, renderGraph(tree, (agent) => ({ state: derived.states.get(agent) ?? "idle", current: agent === current }),
        `Agents of ${tree.name} and their states${current ? `; current agent ${current}` : ""}`));
      replace(el.agents, ...Array.from(derived.states, ([agent, st]) => h("li", {}, `${agent}: ${STATE_LABEL[st]}`)));
      const cur = el.summary.querySelector("#current-agent");
      if (cur) cur.textContent = current ?? "—";
    }
    if (parts.has("steps") || parts.has("selection") || parts.has("rows")) rows();
    main.dataset.steps = String(steps.length);
    if (parts.has("timeline") || ((parts.has("steps") || parts.has("selection")) && timelineDue())) {
      lastTimeline = performance.now();
      const agents = tree ? layout(tree).order : [];
      const index = selected === null ? null : steps.findIndex((s) => s.number === selected);
      const stickRight = !!stream && el.timeline.scrollLeft + el.timeline.clientWidth >= el.timeline.scrollWidth - 30;
      replace(el.timeline, renderTimeline(agents, steps, index !== null && index >= 0 ? index : null, `Timeline of ${steps.length} steps, one lane per agent`));
      if (stickRight && parts.has("steps")) el.timeline.scrollLeft = el.timeline.scrollWidth;
    }
    if (parts.has("selection")) showSelected();
    if (parts.has("deltas")) deltaPanel(el.deltas, calls);
    if (parts.has("sentinel")) sentinel();
  };

  // The timeline is redrawn at most once a second while pages pour in (a 5,000-step SVG is not free).
  let lastTimeline = 0;
  let timelineTimer = 0;
  const timelineDue = () => {
    if (performance.now() - lastTimeline >= 1000) return true;
    window.clearTimeout(timelineTimer);
    window.clearInterval(watchdog);
    timelineTimer = window.setTimeout(() => schedule("timeline"), 1000);
    return false;
  };

  // The steps list is virtual: only the rows in view (and a few around) are in the document, so a
  // long history costs no more to lay out than a short one.
  const ROW = 26;
  let focusN: number | null = null;
  let version = 0; // bumped by every inserted step
  let shown = "";
  const rows = () => {
    const total = steps.length;
    el.list.style.height = `${total * ROW}px`;
    const top = el.scroller.scrollTop;
    const height = el.scroller.clientHeight || 480;
    const from = Math.max(0, Math.floor(top / ROW) - 10);
    const to = Math.min(total, Math.ceil((top + height) / ROW) + 10);
    const key = `${from}:${to}:${version}`;
    if (key === shown) {
      for (const b of el.list.querySelectorAll<HTMLButtonElement>("button")) b.setAttribute("aria-pressed", String(Number(b.dataset.n) === selected));
      return;
    }
    shown = key;
    const setSize = String(Math.max(total, run?.recordedSteps ?? 0));
    const items: HTMLLIElement[] = [];
    for (let i = from; i < to; i++) {
      const li = stepButton(steps[i], select);
      li.style.top = `${i * ROW}px`;
      li.setAttribute("aria-posinset", String(i + 1));
      li.setAttribute("aria-setsize", setSize);
      li.firstElementChild?.setAttribute("aria-pressed", String(steps[i].number === selected));
      items.push(li);
    }
    const hadFocus = el.list.contains(document.activeElement);
    el.list.replaceChildren(...items);
    if (hadFocus && focusN !== null) el.list.querySelector<HTMLButtonElement>(`button[data-n="${focusN}"]`)?.focus();
  };
  const reveal = (index: number) => {
    const top = index * ROW;
    const h = el.scroller.clientHeight || 480;
    if (top < el.scroller.scrollTop || top + ROW > el.scroller.scrollTop + h) el.scroller.scrollTop = Math.max(0, top - h / 2);
  };

  const sentinel = () => {
    const total = Math.max(run?.recordedSteps ?? 0, run?.steps ?? 0);
    if (pagingDone) {
      el.sentinel.hidden = true;
      return;
    }
    el.sentinel.hidden = false;
    replace(el.sentinel, h("span", {}, `${pagedCount} of ${total || "?"} steps loaded. `),
      h("button", { type: "button", id: "load-more", onclick: () => void nextPage() }, "Load more"));
  };

  const actions = () => {
    if (!run) return;
    const finished = !!run.phase && TERMINAL.has(run.phase);
    replace(el.actions,
      h("button", { type: "button", id: "retry", disabled: !finished, title: finished ? "" : "available when the run has finished", onclick: () => void retry() }, "Retry"),
      h("span", { class: "help" }, finished ? " A new run that reuses every step before the first failed one." : " Retry is available when the run has finished; fork from a step in the inspector."));
  };

  // --- steps ---
  const insert = (step: Numbered) => {
    if (seen.has(step.position)) return false;
    seen.add(step.position);
    version++;
    const last = steps[steps.length - 1];
    if (!last || compareOrd(last.ord, step.ord) < 0) steps.push(step);
    else {
      let lo = 0;
      let hi = steps.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (compareOrd(steps[mid].ord, step.ord) < 0) lo = mid + 1;
        else hi = mid;
      }
      steps.splice(lo, 0, step);
    }
    return true;
  };

  const nextPage = async () => {
    if (paging || pagingDone || stopped) return;
    paging = true;
    try {
      const page = await get<Page<StepItem>>(`${base}/steps${query({ limit: PAGE_SIZE, cursor })}`);
      if (stopped) return;
      for (const item of page.items) {
        if (seen.has(item.position)) {
          pagingDone = true; // reached the steps that came in live
          break;
        }
        insert(item);
        pagedCount++;
      }
      cursor = page.nextCursor ?? null;
      if (!cursor) pagingDone = true;
      schedule("steps", "sentinel", "run");
    } catch (err) {
      replace(el.sentinel, errorBox(err, "Steps"));
    } finally {
      paging = false;
    }
    // the sentinel may still be in view (a short page, a tall screen): keep going
    if (!pagingDone && !stopped && visible()) void nextPage();
  };

  const visible = () => {
    const a = el.sentinel.getBoundingClientRect();
    const b = el.scroller.getBoundingClientRect();
    return !el.sentinel.hidden && a.top <= b.bottom + 200 && a.bottom >= b.top;
  };
  const observer = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) void nextPage();
  }, { root: el.scroller, rootMargin: "200px" });
  observer.observe(el.sentinel);
  // Also on scrolling itself: a list scrolled to its end on every frame never lets the observer see
  // the sentinel leave the view and come back.
  el.scroller.addEventListener("scroll", () => {
    schedule("rows");
    if (el.scroller.scrollTop + el.scroller.clientHeight >= el.scroller.scrollHeight - 400) void nextPage();
  }, { passive: true });

  const select = (n: number) => {
    selected = n;
    focusN = n;
    schedule("selection");
  };
  const showSelected = () => {
    const index = steps.findIndex((s) => s.number === selected);
    if (index < 0) return emptyInspector(el.inspector);
    replace(el.inspector, inspector(steps[index], steps, index, (n, input) => void fork(n, input), true));
  };
  el.timeline.addEventListener("click", (ev) => {
    const i = (ev.target as Element).closest("[data-i]")?.getAttribute("data-i");
    if (i !== null && i !== undefined && steps[Number(i)]) {
      select(steps[Number(i)].number);
      reveal(Number(i));
    }
  });
  el.scroller.addEventListener("keydown", (ev) => {
    if (ev.key !== "ArrowDown" && ev.key !== "ArrowUp") return;
    const n = Number((document.activeElement as HTMLElement | null)?.dataset?.n);
    const at = steps.findIndex((s) => s.number === n);
    if (at < 0) return;
    ev.preventDefault();
    const next = Math.max(0, Math.min(steps.length - 1, at + (ev.key === "ArrowDown" ? 1 : -1)));
    focusN = steps[next].number;
    reveal(next);
    rows();
    el.list.querySelector<HTMLButtonElement>(`button[data-n="${focusN}"]`)?.focus();
  });

  // --- the run, the tree, approvals ---
  let runTimer = 0;
  let lastRunFetch = 0;
  const refreshRun = async () => {
    window.clearTimeout(runTimer);
    lastRunFetch = Date.now();
    try {
      const fresh = await get<RunView>(base);
      if (stopped) return;
      run = { ...fresh };
      // The operator creates the AgentApproval after the step that asks for it: while the run
      // waits (and once when it stops waiting), the approvals are read again with the run.
      if (fresh.phase === "AwaitingApproval" || (apiPhase === "AwaitingApproval" && fresh.phase !== apiPhase)) void refreshApprovals();
      apiPhase = fresh.phase ?? null;
      if (endedPhase && !TERMINAL.has(run.phase ?? "Pending")) run.phase = endedPhase;
      replace(el.problem);
      schedule("run", "sentinel");
      // The run ended but its stream has not said so (a stalled connection): read the rest again,
      // from the last event received; a finished run's stream is its history, then `end`.
      if (stream && !streamEnded && TERMINAL.has(apiPhase ?? "Pending")) {
        const since = stream.lastId();
        stream.close();
        startStream(since);
      }
    } catch (err) {
      if (!stopped) replace(el.problem, errorBox(err, `Run ${ns}/${name}`));
    }
  };
  const soonRun = () => {
    const wait = Math.max(0, 1000 - (Date.now() - lastRunFetch));
    window.clearTimeout(runTimer);
    runTimer = window.setTimeout(() => void refreshRun(), wait);
  };
  const refreshApprovals = async () => {
    if (run && !run.inCluster) {
      replace(el.approvals, h("p", { class: "muted" }, "The AgentRun was deleted: its approvals went with it (the steps keep every decision)."));
      return;
    }
    try {
      const list = await get<{ items: Approval[] }>(`${base}/approvals`);
      if (!stopped) replace(el.approvals, approvalsList(list.items, (a, d, reason) => void decide(a, d, reason)));
    } catch (err) {
      if (!stopped) replace(el.approvals, errorBox(err, "Approvals"));
    }
  };

  const decide = async (a: Approval, decision: "approve" | "reject", reason: string) => {
    try {
      const out = await post<{ message: string }>(`${base}/approvals/${encodeURIComponent(a.id)}/${decision}`, reason ? { reason } : {});
      replace(el.actionOut, h("p", { class: "ok" }, out.message));
    } catch (err) {
      replace(el.actionOut, errorBox(err, decision === "approve" ? "Approve" : "Reject"));
    }
    void refreshApprovals();
    soonRun();
  };
  const retry = async () => {
    try {
      const made = await post<Created>(`${base}/retry`, {});
      navigate(paths.run(ns, made.name));
    } catch (err) {
      replace(el.actionOut, errorBox(err, "Retry"));
    }
  };
  const fork = async (step: number, input: string) => {
    try {
      const made = await post<Created>(`${base}/fork`, input ? { step, input } : { step });
      navigate(paths.run(ns, made.name));
    } catch (err) {
      replace(el.actionOut, errorBox(err, "Fork"));
    }
  };

  // --- live ---
  const onStep = (step: Step) => {
    // The stream sends every step after lastPosition, in order: the n-th is step recordedSteps + n.
    const pos = position(step.ord);
    liveIndex++;
    const number = liveBase.count + liveIndex;
    if (seen.has(pos)) return;
    if (insert({ ...step, number, position: pos })) {
      if (step.type === "model_usage") {
        for (const [call, c] of calls) if (call === pos || (c.agent === step.agent && !c.done)) c.done = true;
        schedule("deltas");
      }
      if (step.type.startsWith("approval")) void refreshApprovals();
      schedule("steps");
      soonRun();
    }
  };
  let streamEnded = false;
  const startStream = (resume?: string | null) => {
    if (resume === undefined) liveBase = { count: run?.recordedSteps ?? 0 };
    stream = follow({
      url: `/api/v1${base}/events`,
      since: resume === undefined ? run?.lastPosition ?? null : resume,
      onState: (state, err) => {
        if (state === "ended") streamEnded = true;
        el.conn.textContent = state === "live" ? "● live" : state === "ended" ? "finished" : state === "reconnecting" ? "reconnecting…" : `stream: ${state}`;
        el.conn.dataset.state = err ? "error" : state;
      },
      onEvent: (ev) => {
        let data: any;
        try {
          data = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (ev.event === "snapshot") {
          if (run) run = { ...run, ...data, recordedSteps: run.recordedSteps, lastPosition: run.lastPosition };
          schedule("run");
        } else if (ev.event === "model_delta") {
          const c = calls.get(data.call) ?? { agent: data.agent ?? "", model: data.model ?? "", text: "", done: false };
          if (data.seq === 0) c.text = "";
          c.text += data.text ?? "";
          calls.delete(data.call);
          calls.set(data.call, c);
          while (calls.size > 20) calls.delete(calls.keys().next().value as string);
          schedule("deltas");
        } else if (ev.event === "end") {
          endedPhase = END_PHASE[String(data.status)] ?? null;
          if (run && endedPhase) {
            run = { ...run, phase: endedPhase, answer: data.answer ?? run.answer };
            schedule("run", "steps");
          }
          void refreshRun();
          void refreshApprovals();
        } else if (ev.id !== null && Array.isArray(data.ord)) {
          onStep(data as Step);
        }
      },
    });
  };

  const start = async () => {
    await refreshRun();
    if (!run || stopped) {
      main.dataset.loaded = "error";
      return;
    }
    if (run.tree) {
      try {
        tree = await get<TreeView>(nsPath(ns, `/trees/${encodeURIComponent(run.tree)}`));
      } catch (err) {
        treeGone = true;
        const why = err instanceof ApiError && err.status === 404 ? "no longer exists" : `cannot be read (${(err as Error).message})`;
        el.graph.before(h("p", { class: "help", id: "graph-note" }, `AgentTree ${run.tree} ${why}: the graph shows the agents the steps name.`));
      }
    }
    await nextPage();
    void refreshApprovals();
    if (!TERMINAL.has(run.phase ?? "Pending")) {
      startStream();
      // While the AgentRun is not finished, it is also read every 5 s: a stream that went quiet
      // cannot leave the page showing a finished run as running, and the final phase, usage and
      // answer the operator writes after the stream's `end` are shown.
      watchdog = window.setInterval(() => {
        if (!TERMINAL.has(apiPhase ?? "Pending")) void refreshRun();
        else window.clearInterval(watchdog);
      }, 5_000);
    }
    else el.conn.textContent = "finished";
    schedule("run", "steps", "deltas", "sentinel");
    main.dataset.loaded = "true";
  };
  void start();

  return () => {
    stopped = true;
    stream?.close();
    window.clearTimeout(timelineTimer);
    window.clearInterval(watchdog);
    observer.disconnect();
    window.clearTimeout(runTimer);
    if (frame) cancelAnimationFrame(frame);
  };
}
