// The web view's entry point: sign-in, the header, and the page for the current route.
import { ApiError, call, session } from "./api";
import { h, replace } from "./dom";
import { navigate, onNavigate, parse, paths, type Route } from "./router";
import { errorBox, setTitle } from "./ui";
import { runsPage } from "./pages/runs";
import { runPage } from "./pages/run";
import { treePage, treesPage } from "./pages/tree";

interface Who {
  username: string;
  groups: string[];
}

const NS_KEY = "agent-tree.namespace";
let who: Who | null = null;
let cleanup: (() => void) | null = null;

function nsOf(route: Route): string | null {
  return "ns" in route ? route.ns : sessionStorage.getItem(NS_KEY);
}

function header(route: Route): HTMLElement {
  const ns = nsOf(route);
  const input = h("input", { id: "ns-input", name: "namespace", value: ns ?? "", required: true, pattern: "[a-z0-9]([-a-z0-9]*[a-z0-9])?", size: 18, autocomplete: "off" });
  const form = h(
    "form",
    {
      class: "ns-form",
      role: "search",
      onsubmit: (ev: Event) => {
        ev.preventDefault();
        navigate(paths.runs(input.value.trim()));
      },
    },
    h("label", { for: "ns-input" }, "Namespace"),
    input,
    h("button", { type: "submit" }, "Open"),
  );
  const nav = ns
    ? h("nav", { "aria-label": "Sections" }, h("a", { href: paths.runs(ns), "aria-current": route.page === "runs" ? "page" : null }, "Runs"),
        h("a", { href: paths.trees(ns), "aria-current": route.page === "trees" ? "page" : null }, "Trees"))
    : null;
  const user = who
    ? h("div", { class: "who" }, h("span", { title: who.groups.join(", ") }, "Signed in as ", h("strong", { id: "whoami" }, who.username)),
        h("button", { type: "button", id: "sign-out", onclick: signOut }, "Sign out"))
    : null;
  return h("div", { class: "bar" }, h("a", { class: "brand", href: "/" }, "agent-tree"), nav, who ? form : null, user);
}

function signOut(): void {
  session.clear();
  who = null;
  navigate("/", true);
}

function signIn(main: HTMLElement, problem?: unknown): void {
  setTitle("Sign in");
  const token = h("textarea", { id: "token", name: "token", rows: 4, cols: 60, required: true, autocomplete: "off", spellcheck: "false", "aria-describedby": "token-help" });
  const out = h("div", { "aria-live": "polite" }, problem ? errorBox(problem, "Sign-in") : null);
  const form = h(
    "form",
    {
      class: "signin",
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        const value = token.value.trim();
        try {
          who = await call<Who>("GET", "/whoami", undefined, value);
          session.set(value);
          render();
        } catch (err) {
          replace(out, errorBox(err, "Sign-in"));
        }
      },
    },
    h("h1", {}, "Sign in"),
    h("label", { for: "token" }, "Kubernetes bearer token"),
    token,
    h("p", { id: "token-help", class: "help" }, "For example the output of ", h("code", {}, "kubectl create token NAME"),
      ". It is kept in this tab's session storage only; Kubernetes RBAC decides what you may see and do."),
    h("button", { type: "submit", id: "sign-in" }, "Sign in"),
    out,
  );
  replace(main, form);
  token.focus();
}

function home(main: HTMLElement): void {
  setTitle("Home");
  const ns = sessionStorage.getItem(NS_KEY);
  replace(main, h("h1", {}, "agent-tree"), h("p", {}, "Choose a namespace above to see its runs and trees."),
    ns ? h("p", {}, "Last used: ", h("a", { href: paths.runs(ns) }, ns)) : null);
}

async function render(): Promise<void> {
  cleanup?.();
  cleanup = null;
  const route = parse(location.pathname, location.search);
  const top = document.getElementById("top")!;
  const main = document.getElementById("main")!;
  if (!session.token()) {
    who = null;
    replace(top, header(route));
    signIn(main);
    return;
  }
  if (!who) {
    try {
      who = await call<Who>("GET", "/whoami");
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) session.clear();
      who = null;
      replace(top, header(route));
      signIn(main, err);
      return;
    }
  }
  if ("ns" in route) sessionStorage.setItem(NS_KEY, route.ns);
  replace(top, header(route));
  switch (route.page) {
    case "home":
      home(main);
      break;
    case "runs":
      cleanup = runsPage(main, route.ns, route.params);
      break;
    case "run":
      cleanup = runPage(main, route.ns, route.name);
      break;
    case "trees":
      cleanup = treesPage(main, route.ns);
      break;
    case "tree":
      cleanup = treePage(main, route.ns, route.name);
      break;
    default:
      setTitle("Not found");
      replace(main, h("h1", {}, "Not found"), errorBox(new Error(`no page at ${route.path}`)), h("p", {}, h("a", { href: "/" }, "Home")));
  }
}

onNavigate(() => void render());
void render();
