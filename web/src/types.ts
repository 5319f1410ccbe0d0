// The API's response bodies (docs/api/openapi.json), as far as the web view reads them.

export interface Problem {
  status: number;
  reason: string;
  message: string;
  errors?: { field: string; message: string }[];
}

export interface RunSummary {
  namespace: string;
  name: string;
  uid?: string | null;
  workflowId?: string | null;
  tree?: string | null;
  phase?: string | null;
  currentAgent?: string | null;
  steps: number;
  tokens: number;
  answer?: string | null;
  startedAt?: string | null;
  finishedAt?: string | null;
  durationSeconds?: number | null;
  forkedFrom?: string | null;
  inCluster: boolean;
}

export interface Budgets {
  maxTurns?: number | null;
  maxToolCalls?: number | null;
  maxTokens?: number | null;
  maxCostUSD?: number | null;
  onExhausted?: string | null;
}

export interface Usage {
  turns?: number;
  toolCalls?: number;
  tokens?: number;
  costUSD?: number;
}

export interface RunView extends RunSummary {
  spec?: { treeRef?: { name: string }; input?: string; budgets?: Budgets | null; [k: string]: unknown } | null;
  status?: {
    phase?: string;
    currentAgent?: string;
    usage?: Usage | null;
    message?: string | null;
    waiting?: string | null;
    result?: unknown;
    forkedFrom?: { run: string; step: number } | null;
    [k: string]: unknown;
  } | null;
  input?: string | null;
  result?: unknown;
  recordedSteps?: number;
  lastPosition?: string | null;
}

export interface Step {
  ord: number[];
  type: string;
  agent?: string | null;
  data: Record<string, any>;
  ts: string;
}

export interface StepItem extends Step {
  number: number;
  position: string;
}

export interface Page<T> {
  items: T[];
  nextCursor?: string | null;
}

export interface ToolSpec {
  name: string;
  agent?: string | null;
  entrypoint?: string | null;
  approval?: unknown;
}

export interface AgentSpec {
  name: string;
  description?: string;
  children?: string[];
  tools?: ToolSpec[];
  entrypoint?: string | null;
  model?: { name: string } | null;
}

export interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  lastTransitionTime?: string | null;
}

export interface TreeView {
  namespace: string;
  name: string;
  spec: { root: string; agents: AgentSpec[]; budgets?: Budgets | null; maxSteps?: number };
  status: {
    ready?: string | null;
    revision?: string | null;
    agents?: { name: string; taskQueue: string; deployment: string; replicas?: number; readyReplicas?: number }[];
    conditions?: Condition[];
  };
  createdAt?: string | null;
}

export interface Approval {
  id: string;
  name: string;
  agent: string;
  tool: string;
  arguments: string;
  requestedAt: string;
  expiresAt?: string | null;
  pending: boolean;
  decision?: string | null;
  decidedBy?: string | null;
  reason?: string | null;
}

export interface Created {
  namespace: string;
  name: string;
  uid: string;
  createdBy: string;
}

export const TERMINAL = new Set(["Succeeded", "Failed", "Cancelled"]);
