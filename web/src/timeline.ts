// A run's timeline: one lane per agent, one column per step (in history order). Agent turns and
// tool calls are bars from their start step to their end step, handoffs are arrows between lanes,
// approvals diamonds, reasoning and model calls dots. A click on a mark selects that step.
import { s } from "./dom";
import type { Step } from "./types";

const LABEL = 132;
const STEP_W = 14;
const LANE_H = 30;
const TOP = 18;
export const RUN_LANE = "(run)";

function laneOf(step: Step): string {
  return (step.agent ?? step.data?.agent ?? RUN_LANE) as string;
}

/** Lanes: the tree's agents in graph order, then any other agent the steps name, then the run's own. */
export function lanes(agents: string[], steps: Step[]): string[] {
  const out = [...agents];
  for (const step of steps) {
    const lane = laneOf(step);
    if (!out.includes(lane)) out.push(lane);
  }
  return out;
}

function statusClass(value: unknown): string {
  if (value === "ok" || value === "completed") return "ok";
  if (value === "needs_more_info") return "nmi";
  if (value === undefined) return "open";
  return "bad";
}

export function renderTimeline(agents: string[], steps: Step[], selected: number | null, label: string): SVGElement {
  const names = lanes(agents, steps);
  const y = new Map(names.map((n, i) => [n, TOP + i * LANE_H]));
  const width = LABEL + Math.max(steps.length, 1) * STEP_W + 24;
  const height = TOP + names.length * LANE_H + 6;
  const svg = s("svg", { class: "timeline", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  const x = (i: number) => LABEL + i * STEP_W + STEP_W / 2;
  const back = s("g", { class: "lanes" });
  names.forEach((name, i) => {
    const top = TOP + i * LANE_H;
    back.append(s("rect", { x: 0, y: top, width, height: LANE_H, class: i % 2 ? "lane odd" : "lane" }));
    back.append(s("text", { x: 6, y: top + LANE_H / 2 + 4, class: "lane-label" }, name.length > 17 ? name.slice(0, 16) + "…" : name));
  });
  for (let i = 0; i < steps.length; i += 10) {
    back.append(s("text", { x: x(i), y: 12, class: "tick" }, String(i + 1)));
  }
  svg.append(back);
  const turnBars = s("g", { class: "turns" });
  const bars = s("g", { class: "bars" });
  const marks = s("g", { class: "marks" });
  const turns = new Map<string, number[]>();
  const tools = new Map<string, number[]>();
  const bar = (lane: string, from: number, to: number, cls: string, title: string, index: number, inset: number) => {
    const top = y.get(lane)!;
    const r = s("rect", {
      x: x(from) - STEP_W / 2 + 1,
      y: top + inset,
      width: Math.max(STEP_W - 2, (to - from + 1) * STEP_W - 2),
      height: LANE_H - 2 * inset,
      rx: 3,
      class: cls,
      "data-i": index,
    });
    r.append(s("title", {}, title));
    (inset === 3 ? turnBars : bars).append(r);
  };
  steps.forEach((step, i) => {
    const lane = laneOf(step);
    const top = y.get(lane)!;
    const mid = top + LANE_H / 2;
    const d = step.data ?? {};
    const title = `#${i + 1} ${step.type}${step.agent ? ` (${step.agent})` : ""}`;
    let mark: SVGElement | null = null;
    switch (step.type) {
      case "agent_start":
        (turns.get(lane) ?? turns.set(lane, []).get(lane)!).push(i);
        break;
      case "agent_end": {
        const from = turns.get(lane)?.pop() ?? i;
        bar(lane, from, i, `turn ${statusClass(d.status)}`, `${lane}: turn ${from + 1}–${i + 1}, ${d.status}`, from, 3);
        break;
      }
      case "tool_start":
        (tools.get(`${lane}/${d.tool}`) ?? tools.set(`${lane}/${d.tool}`, []).get(`${lane}/${d.tool}`)!).push(i);
        break;
      case "tool_end": {
        const from = tools.get(`${lane}/${d.tool}`)?.pop() ?? i;
        bar(lane, from, i, `tool ${statusClass(d.status)}`, `tool ${d.tool}: ${d.status} (#${from + 1}–${i + 1})`, from, 9);
        break;
      }
      case "handoff": {
        const to = y.get(String(d.to_agent));
        if (to !== undefined) {
          const y2 = to + LANE_H / 2;
          mark = s("line", { x1: x(i), y1: mid, x2: x(i), y2: y2 + (y2 > mid ? -6 : 6), class: `handoff ${statusClass(d.status)}`, "marker-end": "url(#tl-arrow)" });
        }
        break;
      }
      case "approval_requested":
      case "approval_decided":
        mark = s("path", {
          d: `M${x(i)},${mid - 7} l7,7 l-7,7 l-7,-7 z`,
          class: step.type === "approval_requested" ? "approval asked" : `approval ${d.decision === "approve" ? "ok" : "bad"}`,
        });
        break;
      case "budget_exhausted":
      case "budgets_changed":
        mark = s("path", { d: `M${x(i)},${mid - 7} l7,12 l-14,0 z`, class: `budget ${step.type === "budget_exhausted" ? "bad" : "ok"}` });
        break;
      default:
        mark = s("circle", { cx: x(i), cy: mid, r: step.type === "model_usage" ? 3.5 : 2.5, class: `dot ${step.type}` });
    }
    if (mark) {
      mark.setAttribute("data-i", String(i));
      mark.append(s("title", {}, title));
      marks.append(mark);
    }
  });
  // turns and tool calls still open: up to the last step
  for (const [lane, open] of turns) for (const from of open) bar(lane, from, steps.length - 1, "turn open", `${lane}: running since #${from + 1}`, from, 3);
  for (const [key, open] of tools)
    for (const from of open) bar(key.split("/")[0], from, steps.length - 1, "tool open", `tool ${key.split("/")[1]}: running`, from, 9);
  svg.append(
    s("defs", {}, s("marker", { id: "tl-arrow", viewBox: "0 0 10 10", refX: 5, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" },
      s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }))),
  );
  svg.append(turnBars, bars, marks);
  if (selected !== null && selected < steps.length)
    svg.append(s("line", { x1: x(selected), y1: TOP - 4, x2: x(selected), y2: height, class: "cursor" }));
  return svg;
}
