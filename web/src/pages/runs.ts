// Runs of a namespace, newest first, refreshed every 2 s (the list polls; a run's page streams).
import { get, nsPath, query } from "../api";
import { h, replace } from "../dom";
import { age, num } from "../format";
import { paths } from "../router";
import type { Page, RunSummary, TreeView } from "../types";
import { errorBox, live, phaseBadge, setTitle, table } from "../ui";

export const POLL_MS = 2000;
const PHASES = ["Pending", "Running", "Succeeded", "Failed", "Cancelled"];

interface Row {
  tr: HTMLTableRowElement;
  sig: string;
  age: HTMLElement;
}

export function runRow(ns: string, run: RunSummary): Row {
  const ageCell = h("td", { class: "num" }, age(run.startedAt));
  const tr = h(
    "tr",
    { "data-run": run.name, "data-phase": run.phase ?? "Pending" },
    h("th", { scope: "row" }, h("a", { href: paths.run(ns, run.name) }, run.name)),
    h("td", {}, phaseBadge(run.phase)),
    h("td", {}, run.tree ? h("a", { href: paths.tree(ns, run.tree) }, run.tree) : ""),
    h("td", { class: "agent" }, run.currentAgent ?? ""),
    h("td", { class: "num" }, num(run.steps)),
    h("td", { class: "num" }, num(run.tokens)),
    ageCell,
    h("td", {}, live(run.phase) ? h("span", { class: "live", title: "live" }, "● live") : run.inCluster ? "" : h("span", { class: "muted", title: "the AgentRun was deleted; its history remains" }, "history only")),
  );
  return { tr, sig: JSON.stringify({ ...run, startedAt: run.startedAt }), age: ageCell };
}

export const RUN_HEADERS = ["Run", "Phase", "Tree", "Current agent", "Steps", "Tokens", "Age", "Live"];

/** A table body kept in sync with a list of runs: unchanged rows (and the focus in them) stay. */
export class RunRows {
  private rows = new Map<string, Row>();
  readonly tbody: HTMLTableSectionElement;
  constructor(private ns: string) {
    this.tbody = h("tbody");
  }
  update(runs: RunSummary[]): void {
    const next = new Map<string, Row>();
    const order: HTMLTableRowElement[] = [];
    for (const run of runs) {
      const fresh = runRow(this.ns, run);
      const old = this.rows.get(run.name);
      const row = old && old.sig === fresh.sig ? old : fresh;
      row.age.textContent = age(run.startedAt);
      next.set(run.name, row);
      order.push(row.tr);
    }
    const current = Array.from(this.tbody.children);
    if (current.length !== order.length || current.some((tr, i) => tr !== order[i])) this.tbody.replaceChildren(...order);
    this.rows = next;
  }
}

export function runsTable(caption: string, body: HTMLTableSectionElement): HTMLTableElement {
  const t = table(caption, RUN_HEADERS, [], "runs");
  t.querySelector("tbody")!.replaceWith(body);
  return t;
}

export function runsPage(main: HTMLElement, ns: string, params: URLSearchParams): () => void {
  setTitle(`Runs in ${ns}`);
  let limit = 50;
  const treeSel = h("select", { id: "filter-tree", name: "tree" }, h("option", { value: "" }, "all trees"));
  const phaseSel = h("select", { id: "filter-phase", name: "phase" }, h("option", { value: "" }, "all phases"),
    ...PHASES.filter((p) => p !== "Pending").map((p) => h("option", { value: p }, p)));
  treeSel.value = params.get("tree") ?? "";
  phaseSel.value = params.get("phase") ?? "";
  const status = h("p", { class: "muted", id: "runs-status", "aria-live": "off" });
  const problem = h("div", { id: "runs-error" });
  const rows = new RunRows(ns);
  const more = h("button", { type: "button", hidden: true, onclick: () => { limit = Math.min(1000, limit + 50); void refresh(); } }, "Show more");
  const filters = h("form", { class: "filters", "aria-label": "Filters", onsubmit: (ev: Event) => ev.preventDefault() },
    h("label", { for: "filter-tree" }, "Tree"), treeSel, h("label", { for: "filter-phase" }, "Phase"), phaseSel);
  const onFilter = () => {
    const q = query({ tree: treeSel.value, phase: phaseSel.value });
    history.replaceState(null, "", paths.runs(ns) + q);
    limit = 50;
    void refresh();
  };
  treeSel.addEventListener("change", onFilter);
  phaseSel.addEventListener("change", onFilter);
  replace(main, h("h1", {}, "Runs ", h("span", { class: "muted" }, `in ${ns}`)), filters, problem, runsTable(`Runs in ${ns}`, rows.tbody), more, status);

  let stopped = false;
  let timer = 0;
  const refresh = async () => {
    window.clearTimeout(timer);
    try {
      const page = await get<Page<RunSummary>>(nsPath(ns, "/runs") + query({ tree: treeSel.value, phase: phaseSel.value, limit }));
      if (stopped) return;
      replace(problem);
      rows.update(page.items);
      more.hidden = !page.nextCursor;
      status.textContent = page.items.length ? `${page.items.length} runs · updated ${new Date().toLocaleTimeString()}` : "No runs yet.";
      main.dataset.loaded = "true";
    } catch (err) {
      if (stopped) return;
      replace(problem, errorBox(err, `Runs of ${ns}`));
      main.dataset.loaded = "error";
    }
    if (!stopped) timer = window.setTimeout(refresh, POLL_MS);
  };
  void get<{ items: TreeView[] }>(nsPath(ns, "/trees"))
    .then((trees) => {
      for (const t of trees.items) treeSel.append(h("option", { value: t.name }, t.name));
      treeSel.value = params.get("tree") ?? "";
    })
    .catch(() => {
      // may list runs but not trees: keep the filter to what the URL says
      if (params.get("tree")) treeSel.append(h("option", { value: params.get("tree")! }, params.get("tree")!));
      treeSel.value = params.get("tree") ?? "";
    });
  void refresh();
  return () => {
    stopped = true;
    window.clearTimeout(timer);
  };
}

