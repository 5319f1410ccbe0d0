// An AgentTree: its graph with the workers ready per agent, its conditions, its recent runs.
import { get, nsPath, query } from "../api";
import { h, replace } from "../dom";
import { age, time } from "../format";
import { renderGraph } from "../graph";
import { paths } from "../router";
import type { Page, RunSummary, TreeView } from "../types";
import { errorBox, section, setTitle, table } from "../ui";
import { POLL_MS, RunRows, runsTable } from "./runs";

function workers(tree: TreeView, name: string): { ready: number; want: number } | null {
  const a = tree.status.agents?.find((x) => x.name === name);
  return a ? { ready: a.readyReplicas ?? 0, want: a.replicas ?? 0 } : null;
}

/** A condition that needs attention: not Ready, or Degraded / Stalled. */
function bad(type: string, status: string): boolean {
  return type === "Ready" ? status !== "True" : (type === "Degraded" || type === "Stalled") && status === "True";
}

export function treesPage(main: HTMLElement, ns: string): () => void {
  setTitle(`Trees in ${ns}`);
  replace(main, h("h1", {}, "Trees ", h("span", { class: "muted" }, `in ${ns}`)), h("p", { class: "muted" }, "Loading…"));
  void get<{ items: TreeView[] }>(nsPath(ns, "/trees")).then(
    (trees) => {
      const rows = trees.items.map((t) => {
        const ready = t.status.conditions?.find((c) => c.type === "Ready");
        return h("tr", {}, h("th", { scope: "row" }, h("a", { href: paths.tree(ns, t.name) }, t.name)), h("td", {}, t.spec.root),
          h("td", { class: "num" }, String(t.spec.agents.length)), h("td", {}, t.status.ready ?? ""), h("td", {}, ready ? `${ready.status}${ready.message ? ` — ${ready.message}` : ""}` : ""),
          h("td", { class: "num" }, age(t.createdAt)));
      });
      replace(main, h("h1", {}, "Trees ", h("span", { class: "muted" }, `in ${ns}`)),
        rows.length ? table(`AgentTrees in ${ns}`, ["Tree", "Root", "Agents", "Workers ready", "Ready", "Age"], rows) : h("p", {}, "No AgentTrees in this namespace."));
      main.dataset.loaded = "true";
    },
    (err) => {
      replace(main, h("h1", {}, "Trees"), errorBox(err, `Trees of ${ns}`));
      main.dataset.loaded = "error";
    },
  );
  return () => {};
}

export function treePage(main: HTMLElement, ns: string, name: string): () => void {
  setTitle(`Tree ${name}`);
  const graphBox = h("div", { class: "graph-box", id: "tree-graph" });
  const agentsBox = h("div");
  const condBox = h("div", { id: "conditions" });
  const rows = new RunRows(ns);
  const runsProblem = h("div");
  const problem = h("div");
  replace(main, h("h1", {}, "Tree ", h("span", {}, name), h("span", { class: "muted" }, ` in ${ns}`)), problem,
    section("Graph", "h-graph", h("p", { class: "help" }, "Solid arrows: handoffs to children; dashed: agents called as tools. Each agent shows its workers ready."), graphBox),
    section("Agents and workers", "h-agents", agentsBox),
    section("Conditions", "h-conditions", condBox),
    section("Recent runs", "h-recent", runsProblem, runsTable(`Recent runs of ${name}`, rows.tbody),
      h("p", {}, h("a", { href: paths.runs(ns) + query({ tree: name }) }, "All runs of this tree"))));
  let stopped = false;
  let timer = 0;
  const refresh = async () => {
    try {
      const tree = await get<TreeView>(nsPath(ns, `/trees/${encodeURIComponent(name)}`));
      if (stopped) return;
      replace(problem);
      replace(graphBox, renderGraph(tree, (agent) => {
        const w = workers(tree, agent);
        return { note: w ? `workers ${w.ready}/${w.want}` : "no workers yet" };
      }, `Graph of AgentTree ${name}: root ${tree.spec.root}, ${tree.spec.agents.length} agents`));
      replace(agentsBox, table(`Agents of ${name}`, ["Agent", "Kind", "Children", "Tools", "Workers ready", "Task queue"],
        tree.spec.agents.map((a) => {
          const w = workers(tree, a.name);
          const st = tree.status.agents?.find((x) => x.name === a.name);
          return h("tr", { "data-agent": a.name }, h("th", { scope: "row" }, a.name, a.name === tree.spec.root ? h("span", { class: "muted" }, " (root)") : ""),
            h("td", {}, a.model ? `model ${a.model.name}` : a.entrypoint ? `python ${a.entrypoint}` : "supervisor"),
            h("td", {}, (a.children ?? []).join(", ")),
            h("td", {}, (a.tools ?? []).map((t) => (t.agent ? `${t.name} → agent ${t.agent}` : t.name)).join(", ")),
            h("td", { class: "num workers" }, w ? `${w.ready}/${w.want}` : "—"),
            h("td", {}, h("code", {}, st?.taskQueue ?? "")));
        })));
      const conds = tree.status.conditions ?? [];
      replace(condBox, conds.length ? table(`Conditions of ${name}`, ["Type", "Status", "Reason", "Message", "Since"],
        conds.map((c) => h("tr", { "data-condition": c.type, class: bad(c.type, c.status) ? "cond-bad" : "" }, h("th", { scope: "row" }, c.type), h("td", {}, c.status),
          h("td", {}, c.reason ?? ""), h("td", { class: "message" }, c.message ?? ""), h("td", {}, time(c.lastTransitionTime))))) : h("p", { class: "muted" }, "No conditions yet (the operator has not reconciled this tree)."));
      main.dataset.loaded = "true";
    } catch (err) {
      if (!stopped) replace(problem, errorBox(err, `AgentTree ${ns}/${name}`));
      main.dataset.loaded = "error";
    }
    try {
      const runs = await get<Page<RunSummary>>(nsPath(ns, "/runs") + query({ tree: name, limit: 10 }));
      if (!stopped) {
        rows.update(runs.items);
        replace(runsProblem);
      }
    } catch (err) {
      if (!stopped) replace(runsProblem, errorBox(err, "Runs"));
    }
    if (!stopped) timer = window.setTimeout(refresh, POLL_MS * 2);
  };
  void refresh();
  return () => {
    stopped = true;
    window.clearTimeout(timer);
  };
}
