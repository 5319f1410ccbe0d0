// Parts of the run page that only render the run's state: its summary, budgets, answer, approvals.
import { h, replace } from "../dom";
import { json, num, span, time } from "../format";
import { paths } from "../router";
import type { Approval, Budgets, RunView, TreeView } from "../types";
import { phaseBadge, table } from "../ui";

export function summaryList(ns: string, run: RunView, current: string | null, recorded: number): HTMLElement {
  const item = (label: string, value: Node | string | null | undefined, id?: string) =>
    value === null || value === undefined || value === "" ? [] : [h("dt", {}, label), h("dd", id ? { id } : {}, value)];
  const took = run.durationSeconds ?? (run.startedAt && !run.finishedAt ? (Date.now() - Date.parse(run.startedAt)) / 1000 : null);
  return h("dl", { class: "summary" },
    ...item("Phase", phaseBadge(run.phase), "run-phase"),
    ...item("Tree", run.tree ? h("a", { href: paths.tree(ns, run.tree) }, run.tree) : null),
    ...item("Current agent", current ?? "—", "current-agent"),
    ...item("Steps", `${num(recorded)} recorded`, "run-steps"),
    ...item("Tokens", num(run.tokens)),
    ...item("Started", time(run.startedAt)),
    ...item("Duration", took !== null && took !== undefined ? span(took) : ""),
    ...item("Forked from", run.forkedFrom ? h("a", { href: paths.run(ns, run.forkedFrom) }, run.forkedFrom) : null),
    ...item("Input", run.input ?? ""),
    ...item("Message", run.status?.message ?? run.status?.waiting ?? ""),
  );
}

const BUDGETS: [keyof Budgets, "turns" | "toolCalls" | "tokens" | "costUSD", string][] = [
  ["maxTurns", "turns", "Turns"],
  ["maxToolCalls", "toolCalls", "Tool calls"],
  ["maxTokens", "tokens", "Tokens"],
  ["maxCostUSD", "costUSD", "Cost (USD)"],
];

/** Used against the limits (the run's spec.budgets, field by field over the tree's defaults). */
export function budgets(run: RunView, tree: TreeView | null): HTMLElement {
  const limits: Budgets = { ...(tree?.spec.budgets ?? {}), ...Object.fromEntries(Object.entries(run.spec?.budgets ?? {}).filter(([, v]) => v !== null && v !== undefined)) };
  const usage = run.status?.usage ?? {};
  const rows = BUDGETS.map(([limitKey, usedKey, label]) => {
    const limit = limits[limitKey] as number | null | undefined;
    const used = Number(usage[usedKey] ?? 0);
    const shown = usedKey === "costUSD" ? used.toFixed(4) : num(used);
    return h("tr", { "data-budget": usedKey }, h("th", { scope: "row" }, label), h("td", { class: "num" }, shown),
      h("td", { class: "num" }, limit ? (usedKey === "costUSD" ? String(limit) : num(limit)) : "no limit"),
      h("td", {}, limit ? h("meter", { min: 0, max: limit, value: Math.min(used, limit), high: limit * 0.8, optimum: 0, "aria-label": `${label}: ${shown} of ${limit}` }) : ""));
  });
  const note = limits.onExhausted ? h("p", { class: "help" }, `When a budget runs out: ${limits.onExhausted}.`) : null;
  return h("div", {}, table("Budgets used against their limits", ["Budget", "Used", "Limit", ""], rows), note);
}

export function answer(run: RunView): HTMLElement {
  const result = run.result ?? run.status?.result;
  if (!run.answer && (result === null || result === undefined))
    return h("p", { class: "muted" }, run.phase && ["Succeeded", "Failed", "Cancelled"].includes(run.phase) ? "No answer." : "Not answered yet.");
  return h("div", {}, run.answer ? h("p", { id: "answer", class: "answer" }, run.answer) : null,
    result !== null && result !== undefined ? h("details", { open: true }, h("summary", {}, "Structured result"), h("pre", { id: "result" }, json(result))) : null);
}

export function approvalsList(
  items: Approval[],
  decide: (a: Approval, decision: "approve" | "reject", reason: string) => void,
): HTMLElement {
  if (!items.length) return h("p", { class: "muted" }, "No approvals in this run.");
  return h("ul", { class: "approvals" }, ...items.map((a) => {
    const reason = h("input", { id: `reason-${a.id}`, name: "reason", size: 30, autocomplete: "off" });
    const body = [h("strong", {}, a.tool), ` asked by ${a.agent}`, h("pre", {}, a.arguments), h("span", { class: "muted" }, `requested ${time(a.requestedAt)}${a.expiresAt ? `, expires ${time(a.expiresAt)}` : ""}`)];
    if (!a.pending)
      return h("li", { "data-approval": a.id, class: "decided" }, ...body, h("p", {}, `${a.decision === "approve" ? "Approved" : "Rejected"} by ${a.decidedBy ?? "?"}${a.reason ? `: ${a.reason}` : ""}`));
    return h("li", { "data-approval": a.id, class: "pending" }, ...body,
      h("div", { class: "decide" }, h("label", { for: `reason-${a.id}` }, "Reason (optional)"), reason,
        h("button", { type: "button", class: "approve", onclick: () => decide(a, "approve", reason.value) }, `Approve ${a.tool}`),
        h("button", { type: "button", class: "reject", onclick: () => decide(a, "reject", reason.value) }, `Reject ${a.tool}`)));
  }));
}

export function deltaPanel(el: HTMLElement, calls: Map<string, { agent: string; model: string; text: string; done: boolean }>): void {
  const last = Array.from(calls.entries()).slice(-3);
  replace(el, last.length ? h("ul", { class: "deltas" }, ...last.map(([call, c]) =>
    h("li", { "data-call": call, class: c.done ? "done" : "streaming" }, h("span", { class: "muted" }, `${c.agent} · ${c.model}${c.done ? "" : " · generating…"}`), h("pre", {}, c.text)))) :
    h("p", { class: "muted" }, "No model output streaming."));
}
