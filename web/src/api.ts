// Calls to the REST API with the signed-in bearer token; errors carry the API's own message.
import type { Problem } from "./types";

const TOKEN_KEY = "agent-tree.token";

export const session = {
  token(): string | null {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set(token: string): void {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  clear(): void {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

/** An answer of the API that is not a success: ``message`` is the API's message, shown as it is. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

async function problem(resp: Response): Promise<ApiError> {
  let body: Partial<Problem> = {};
  try {
    body = await resp.json();
  } catch {
    // not JSON (a proxy's page): keep the status line
  }
  return new ApiError(resp.status, body.reason ?? resp.statusText, body.message ?? `HTTP ${resp.status} ${resp.statusText}`);
}

export function authHeaders(token = session.token()): Record<string, string> {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** ``/api/v1`` + ``path``; throws ApiError for a non-2xx answer. */
export async function call<T>(method: string, path: string, body?: unknown, token?: string): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json", ...authHeaders(token ?? session.token()) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp: Response;
  try {
    resp = await fetch(`/api/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, "Unreachable", `the API could not be reached (${(err as Error).message})`);
  }
  if (!resp.ok) throw await problem(resp);
  if (resp.status === 202 || resp.status === 204) return undefined as T;
  return (await resp.json()) as T;
}

export const get = <T>(path: string) => call<T>("GET", path);
export const post = <T>(path: string, body?: unknown) => call<T>("POST", path, body ?? {});

export function nsPath(ns: string, rest = ""): string {
  return `/namespaces/${encodeURIComponent(ns)}${rest}`;
}

export function query(params: Record<string, string | number | null | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
  const text = q.toString();
  return text ? `?${text}` : "";
}
