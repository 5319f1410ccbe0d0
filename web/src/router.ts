// Client-side routes under /ui (the API returns index.html for each of them, so links and reloads work).

export type Route =
  | { page: "home" }
  | { page: "runs"; ns: string; params: URLSearchParams }
  | { page: "run"; ns: string; name: string }
  | { page: "trees"; ns: string }
  | { page: "tree"; ns: string; name: string }
  | { page: "missing"; path: string };

export function parse(path: string, search = ""): Route {
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return { page: "home" };
  if (parts[0] === "ui" && parts[1] === "ns" && parts[2]) {
    const ns = parts[2];
    if (parts[3] === "runs" && parts.length === 4) return { page: "runs", ns, params: new URLSearchParams(search) };
    if (parts[3] === "runs" && parts[4] && parts.length === 5) return { page: "run", ns, name: parts[4] };
    if (parts[3] === "trees" && parts.length === 4) return { page: "trees", ns };
    if (parts[3] === "trees" && parts[4] && parts.length === 5) return { page: "tree", ns, name: parts[4] };
    if (parts.length === 3) return { page: "runs", ns, params: new URLSearchParams(search) };
  }
  return { page: "missing", path };
}

export const paths = {
  runs: (ns: string) => `/ui/ns/${encodeURIComponent(ns)}/runs`,
  run: (ns: string, name: string) => `/ui/ns/${encodeURIComponent(ns)}/runs/${encodeURIComponent(name)}`,
  trees: (ns: string) => `/ui/ns/${encodeURIComponent(ns)}/trees`,
  tree: (ns: string, name: string) => `/ui/ns/${encodeURIComponent(ns)}/trees/${encodeURIComponent(name)}`,
};

let listener: (() => void) | null = null;

export function onNavigate(fn: () => void): void {
  listener = fn;
  window.addEventListener("popstate", fn);
  // Same-origin links navigate without a reload (modifier clicks keep the browser's behaviour).
  document.addEventListener("click", (ev) => {
    const a = (ev.target as Element | null)?.closest?.("a");
    if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin || !url.pathname.startsWith("/ui/") || a.target) return;
    ev.preventDefault();
    navigate(url.pathname + url.search);
  });
}

export function navigate(path: string, replace = false): void {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  listener?.();
}
