// Each agent's state, derived from a run's steps (the history's vocabulary, agent_tree/contract).
import type { Step, TreeView } from "./types";

export type AgentState = "idle" | "running" | "awaiting" | "ok" | "needs_more_info" | "failed";

export const STATE_LABEL: Record<AgentState, string> = {
  idle: "not reached",
  running: "running",
  awaiting: "awaiting approval",
  ok: "ok",
  needs_more_info: "needs more info",
  failed: "failed",
};

export interface Derived {
  states: Map<string, AgentState>;
  /** The innermost agent that is running (or waiting for a person) after the last step, or null. */
  current: string | null;
}

/** (calling agent, tool name) -> the agent that tool runs (agents-as-tools). */
export function toolAgents(tree: TreeView | null): Map<string, string> {
  const out = new Map<string, string>();
  for (const agent of tree?.spec.agents ?? []) {
    for (const tool of agent.tools ?? []) if (tool.agent) out.set(`${agent.name}/${tool.name}`, tool.agent);
  }
  return out;
}

function ended(status: unknown): AgentState {
  if (status === "ok" || status === "completed") return "ok";
  if (status === "needs_more_info") return "needs_more_info";
  return "failed";
}

/** Fold ``steps`` (in order) into each agent's state; ``phase`` settles what a finished run left open. */
export function derive(tree: TreeView | null, steps: Iterable<Step>, phase?: string | null): Derived {
  const states = new Map<string, AgentState>();
  for (const agent of tree?.spec.agents ?? []) states.set(agent.name, "idle");
  const viaTool = toolAgents(tree);
  const stack: string[] = [];
  const pop = (name: string) => {
    const at = stack.lastIndexOf(name);
    if (at >= 0) stack.splice(at, 1);
  };
  for (const step of steps) {
    const who = (step.agent ?? step.data?.agent ?? null) as string | null;
    const d = step.data ?? {};
    switch (step.type) {
      case "agent_start":
        if (who) {
          states.set(who, "running");
          stack.push(who);
        }
        break;
      case "agent_end":
        if (who) {
          states.set(who, ended(d.status));
          pop(who);
        }
        break;
      case "tool_start":
      case "tool_end": {
        const callee = who ? viaTool.get(`${who}/${d.tool}`) : undefined;
        if (callee) {
          if (step.type === "tool_start") {
            states.set(callee, "running");
            stack.push(callee);
          } else {
            states.set(callee, d.status === "ok" ? "ok" : "failed");
            pop(callee);
          }
        } else if (who && states.get(who) === "idle") states.set(who, "running");
        break;
      }
      case "approval_requested":
        if (who) states.set(who, "awaiting");
        break;
      case "approval_decided":
        if (who && states.get(who) === "awaiting") states.set(who, "running");
        break;
      default:
        if (who && (states.get(who) ?? "idle") === "idle") states.set(who, "running");
    }
  }
  // A finished run left nothing running: what the (possibly partly loaded) steps leave open ended
  // as the run did.
  if (phase === "Failed" || phase === "Cancelled" || phase === "Succeeded") {
    const outcome: AgentState = phase === "Succeeded" ? "ok" : "failed";
    for (const [name, st] of states) if (st === "running" || st === "awaiting") states.set(name, outcome);
  }
  const open = stack.filter((name) => {
    const st = states.get(name);
    return st === "running" || st === "awaiting";
  });
  return { states, current: open.length ? open[open.length - 1] : null };
}
