// Small shared pieces of the pages: alerts, the phase badge, tables.
import { h } from "./dom";
import { ApiError } from "./api";
import { TERMINAL } from "./types";

/** The API's message as it is, in an alert region (screen readers announce it). */
export function errorBox(err: unknown, what = ""): HTMLElement {
  const message = err instanceof ApiError ? err.message : String((err as Error)?.message ?? err);
  const status = err instanceof ApiError && err.status ? `${err.status} ${err.reason}` : "";
  return h("div", { class: "error", role: "alert" }, what ? h("strong", {}, `${what}: `) : "", status ? h("span", { class: "status" }, `${status} — `) : "", message);
}

export function phaseBadge(phase: string | null | undefined): HTMLElement {
  const p = phase || "Pending";
  return h("span", { class: `badge phase-${p}`, "data-phase": p }, p);
}

export function live(phase: string | null | undefined): boolean {
  return !TERMINAL.has(phase || "Pending");
}

export function table(caption: string, headers: string[], rows: HTMLElement[], cls = ""): HTMLTableElement {
  return h(
    "table",
    { class: cls },
    h("caption", { class: "sr-only" }, caption),
    h("thead", {}, h("tr", {}, ...headers.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, ...rows),
  );
}

export function section(title: string, id: string, ...children: (Node | string | null | false)[]): HTMLElement {
  return h("section", { "aria-labelledby": id, class: "panel" }, h("h2", { id }, title), ...children);
}

export function setTitle(text: string): void {
  document.title = `${text} · agent-tree`;
}
