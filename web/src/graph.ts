// The AgentTree as an SVG graph: handoff children (solid) and agents called as tools (dashed),
// laid out in layers from the root. Each node shows its state (run page) or its workers (tree page).
import { s } from "./dom";
import type { TreeView } from "./types";
import { STATE_LABEL, type AgentState } from "./state";

const W = 156;
const H = 52;
const GAP_X = 28;
const GAP_Y = 54;

export interface Edge {
  from: string;
  to: string;
  kind: "child" | "tool";
  label?: string;
}

export interface Layout {
  nodes: Map<string, { x: number; y: number; depth: number }>;
  edges: Edge[];
  width: number;
  height: number;
  order: string[];
}

export function edges(tree: TreeView): Edge[] {
  const out: Edge[] = [];
  for (const agent of tree.spec.agents) {
    for (const child of agent.children ?? []) out.push({ from: agent.name, to: child, kind: "child" });
    for (const tool of agent.tools ?? [])
      if (tool.agent) out.push({ from: agent.name, to: tool.agent, kind: "tool", label: tool.name });
  }
  return out;
}

/** Layers by breadth-first depth from the root (agents not reachable from it go last). */
export function layout(tree: TreeView): Layout {
  const all = edges(tree);
  const names = tree.spec.agents.map((a) => a.name);
  const depth = new Map<string, number>([[tree.spec.root, 0]]);
  const queue = [tree.spec.root];
  const order: string[] = [];
  while (queue.length) {
    const name = queue.shift()!;
    order.push(name);
    for (const e of all)
      if (e.from === name && !depth.has(e.to)) {
        depth.set(e.to, depth.get(name)! + 1);
        queue.push(e.to);
      }
  }
  const maxDepth = Math.max(0, ...depth.values());
  for (const name of names)
    if (!depth.has(name)) {
      depth.set(name, maxDepth + 1);
      order.push(name);
    }
  const layers: string[][] = [];
  for (const name of order) (layers[depth.get(name)!] ??= []).push(name);
  const widest = Math.max(1, ...layers.map((l) => l.length));
  const width = widest * W + (widest - 1) * GAP_X + 16;
  const nodes = new Map<string, { x: number; y: number; depth: number }>();
  layers.forEach((layer, d) => {
    const row = layer.length * W + (layer.length - 1) * GAP_X;
    layer.forEach((name, i) => nodes.set(name, { x: (width - row) / 2 + i * (W + GAP_X), y: 8 + d * (H + GAP_Y), depth: d }));
  });
  const height = layers.length * H + (layers.length - 1) * GAP_Y + 16;
  return { nodes, edges: all, width, height, order };
}

export interface NodeInfo {
  state?: AgentState;
  /** A second line under the name (the tree page: workers ready). */
  note?: string;
  current?: boolean;
}

/** The graph as an <svg>; ``info(name)`` says what each node shows. */
export function renderGraph(tree: TreeView, info: (name: string) => NodeInfo, label: string): SVGElement {
  const l = layout(tree);
  const svg = s("svg", {
    class: "graph",
    viewBox: `0 0 ${l.width} ${l.height}`,
    width: l.width,
    height: l.height,
    role: "img",
    "aria-label": label,
  });
  svg.append(
    s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }))),
  );
  for (const e of l.edges) {
    const a = l.nodes.get(e.from);
    const b = l.nodes.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + W / 2;
    const y1 = a.y + H;
    const x2 = b.x + W / 2;
    const y2 = b.y;
    const down = y2 > y1;
    const d = down
      ? `M${x1},${y1} C${x1},${(y1 + y2) / 2} ${x2},${(y1 + y2) / 2} ${x2},${y2}`
      : `M${a.x + W},${a.y + H / 2} C${a.x + W + 40},${a.y + H / 2} ${b.x + W + 40},${b.y + H / 2} ${b.x + W},${b.y + H / 2}`;
    const path = s("path", { d, class: `edge edge-${e.kind}`, "marker-end": "url(#arrow)" });
    path.append(s("title", {}, e.kind === "tool" ? `${e.from} calls ${e.to} as tool ${e.label}` : `${e.from} hands off to ${e.to}`));
    svg.append(path);
    if (e.kind === "tool" && e.label && down)
      svg.append(s("text", { x: (x1 + x2) / 2 + 4, y: (y1 + y2) / 2, class: "edge-label" }, `tool ${e.label}`));
  }
  for (const name of l.order) {
    const p = l.nodes.get(name)!;
    const i = info(name);
    const state = i.state;
    const text = [name, state ? STATE_LABEL[state] : "", i.note ?? ""].filter(Boolean).join(", ");
    const g = s("g", {
      class: `node${state ? ` state-${state}` : ""}${i.current ? " current" : ""}`,
      transform: `translate(${p.x},${p.y})`,
      "data-agent": name,
      "data-state": state ?? "",
    });
    g.append(s("title", {}, text));
    g.append(s("rect", { width: W, height: H, rx: 8, ry: 8 }));
    g.append(s("text", { x: W / 2, y: 21, class: "node-name" }, name.length > 20 ? name.slice(0, 19) + "…" : name));
    const second = [state ? STATE_LABEL[state] : "", i.note ?? ""].filter(Boolean).join(" · ");
    if (second) g.append(s("text", { x: W / 2, y: 39, class: "node-state" }, second));
    svg.append(g);
  }
  return svg;
}

/** A graph from the steps alone (the AgentTree was deleted or may not be read): agents as they
 * appear, a handoff back from A to B drawn as B -> A. */
export function treeFromSteps(namespace: string, name: string, steps: { type: string; agent?: string | null; data: Record<string, any> }[]): TreeView | null {
  const agents: string[] = [];
  const children = new Map<string, Set<string>>();
  for (const step of steps) {
    const who = step.agent ?? step.data?.agent;
    if (who && !agents.includes(who)) agents.push(who);
    if (step.type === "handoff" && who && step.data.to_agent && step.data.to_agent !== who) {
      const parent = String(step.data.to_agent);
      if (!agents.includes(parent)) agents.push(parent);
      (children.get(parent) ?? children.set(parent, new Set()).get(parent)!).add(who);
    }
  }
  if (!agents.length) return null;
  return {
    namespace,
    name,
    spec: { root: agents[0], agents: agents.map((a) => ({ name: a, children: Array.from(children.get(a) ?? []) })) },
    status: {},
  };
}
