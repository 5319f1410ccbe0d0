// A run's steps: a list filled a page at a time as it is scrolled (never the whole history at once),
// live steps appended as they stream, and the inspector of the selected step.
import { h, replace } from "../dom";
import { json, preview, time } from "../format";
import type { Step } from "../types";

export interface Numbered extends Step {
  number: number;
  position: string;
}

export function position(ord: number[]): string {
  return ord.join(".");
}

export function compareOrd(a: number[], b: number[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

export function summary(step: Step): string {
  const d = step.data ?? {};
  switch (step.type) {
    case "agent_start":
      return `started: ${preview(d.input, 80)}`;
    case "agent_end":
      return `ended [${d.status}]: ${preview(d.summary, 80)}`;
    case "handoff":
      return `→ ${d.to_agent} [${d.status}]: ${preview(d.summary, 70)}`;
    case "tool_start":
      return `${d.tool}(${preview(d.args, 70)})`;
    case "tool_end":
      return d.status === "ok" ? `${d.tool} → ${preview(d.output, 70)}` : `${d.tool} ${d.status}: ${preview(d.error, 70)}`;
    case "reasoning":
      return preview(d.thought, 100);
    case "model_usage":
      return `${d.model ?? "model"}: ${d.total_tokens ?? "?"} tokens`;
    case "approval_requested":
      return `asks to call ${d.tool}(${preview(d.arguments, 60)})`;
    case "approval_decided":
      return `${d.decision === "approve" ? "approved" : "rejected"} by ${d.decided_by?.username ?? "?"}${d.reason ? `: ${d.reason}` : ""}`;
    case "budget_exhausted":
      return preview(d.message ?? `${d.budget} exhausted`, 100);
    case "budgets_changed":
      return `budgets changed${d.resumed ? ", resumed" : ""}`;
    default:
      return preview(d, 100);
  }
}

function field(label: string, value: unknown, pre = false): HTMLElement[] {
  if (value === undefined || value === null || value === "") return [];
  const text = typeof value === "string" ? value : json(value);
  return [h("dt", {}, label), h("dd", {}, pre || text.includes("\n") ? h("pre", {}, text) : text)];
}

/** The details of one step; ``steps`` (in order) gives timing and who approved a tool call. */
export function inspector(step: Numbered, steps: Numbered[], index: number, fork: (n: number, input: string) => void, canFork: boolean): HTMLElement {
  const d = step.data ?? {};
  const prev = index > 0 ? steps[index - 1] : null;
  const delta = prev ? (Date.parse(step.ts) - Date.parse(prev.ts)) / 1000 : null;
  const rows: HTMLElement[] = [
    ...field("Step", `#${step.number} (position ${step.position})`),
    ...field("Type", step.type),
    ...field("Agent", step.agent ?? ""),
    ...field("Time", `${time(step.ts)}${delta !== null && Number.isFinite(delta) ? ` (+${delta.toFixed(3)} s after the previous step)` : ""}`),
  ];
  switch (step.type) {
    case "agent_start":
      rows.push(...field("Input", d.input, true));
      break;
    case "agent_end":
      rows.push(...field("Status", d.status), ...field("Summary", d.summary, true));
      break;
    case "handoff":
      rows.push(...field("To", d.to_agent), ...field("Status", d.status), ...field("Summary", d.summary, true), ...field("Payload", d.payload, true));
      break;
    case "tool_start":
    case "tool_end": {
      rows.push(...field("Tool", d.tool));
      if (step.type === "tool_start") rows.push(...field("Arguments", d.args, true));
      else rows.push(...field("Status", d.status), ...field("Result", d.output, true), ...field("Error", d.error, true));
      // who approved this call: the decision on the same agent's same tool just before it
      for (let i = index - 1; i >= 0 && i >= index - 6; i--) {
        const s = steps[i];
        if (s.type === "approval_decided" && s.agent === step.agent && (s.data.tool === undefined || s.data.tool === d.tool)) {
          const by = s.data.decided_by ?? {};
          rows.push(...field("Approval", `${s.data.decision === "approve" ? "approved" : "rejected"} by ${by.username ?? "?"}${by.groups?.length ? ` (${by.groups.join(", ")})` : ""}${s.data.reason ? `: ${s.data.reason}` : ""}`));
          break;
        }
      }
      break;
    }
    case "reasoning":
      rows.push(...field("Reasoning", d.thought, true));
      break;
    case "model_usage":
      rows.push(...field("Model", d.model), ...field("Tokens", `${d.prompt_tokens ?? "?"} prompt + ${d.completion_tokens ?? "?"} completion = ${d.total_tokens ?? "?"}`));
      break;
    case "approval_requested":
      rows.push(...field("Tool", d.tool), ...field("Arguments", d.arguments, true), ...field("Approvers", d.approvers), ...field("Expires", time(d.expires_at)), ...field("On timeout", d.on_timeout));
      break;
    case "approval_decided": {
      const by = d.decided_by ?? {};
      rows.push(...field("Decision", d.decision), ...field("Decided by", `${by.username ?? "?"}${by.groups?.length ? ` (${by.groups.join(", ")})` : ""}`), ...field("Reason", d.reason), ...field("At", time(d.decided_at)));
      break;
    }
    default:
      break;
  }
  const input = h("textarea", { id: "fork-input", rows: 2, cols: 40, placeholder: "the source's input" });
  const forkForm = canFork
    ? h("form", { class: "fork", onsubmit: (ev: Event) => { ev.preventDefault(); fork(step.number, input.value.trim()); } },
        h("label", { for: "fork-input" }, "New input (optional)"), input,
        h("button", { type: "submit", id: "fork-button" }, `Fork from step #${step.number}`),
        h("p", { class: "help" }, `A new run reuses steps 1–${step.number} as recorded and runs live after them.`))
    : null;
  return h("div", { class: "inspector-body", "data-step": step.number },
    h("h3", {}, `#${step.number} ${step.type}`), h("dl", {}, ...rows),
    h("details", {}, h("summary", {}, "Raw step (JSON)"), h("pre", {}, json(step))), forkForm);
}

export function stepButton(step: Numbered, select: (n: number) => void): HTMLLIElement {
  const cls = step.type === "tool_end" && step.data?.status !== "ok" ? " bad" : step.type.startsWith("approval") ? " approval" : "";
  return h("li", { class: `step${cls}` },
    h("button", { type: "button", "data-n": step.number, onclick: () => select(step.number), onfocus: () => select(step.number) },
      h("span", { class: "n" }, `#${step.number}`), h("span", { class: "pos" }, step.position),
      h("span", { class: "ag" }, step.agent ?? ""), h("span", { class: "ty" }, step.type), h("span", { class: "sm" }, summary(step))));
}

export function emptyInspector(el: HTMLElement): void {
  replace(el, h("p", { class: "muted" }, "Select a step in the list or the timeline to see its arguments, result, reasoning, tokens, timing and who approved it."));
}
