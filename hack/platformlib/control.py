"""up / down / start / stop / status of the platform's components."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from . import procs
from .components import COMPONENTS, K8S, ORDER, Component, resolve_bins
from .core import Dir, PlatformError

Say = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def closure(names: Iterable[str]) -> list[str]:
    """names plus everything they need, in start order."""
    want: set[str] = set()
    stack = list(names)
    while stack:
        n = stack.pop()
        if n not in COMPONENTS:
            raise PlatformError(f"unknown component {n!r}; components: {', '.join(ORDER)}")
        if n not in want:
            want.add(n)
            stack.extend(COMPONENTS[n].after)
    return [n for n in ORDER if n in want]


def is_running(state: dict[str, Any], name: str) -> bool:
    c = state["components"].get(name)
    return bool(c) and procs.alive(c.get("pid"), c.get("start"))


def _failure(d: Dir, comp: Component, what: str) -> PlatformError:
    log = d.log(comp.name)
    return PlatformError(
        f"{comp.name} {what}\n  log: {log}\n  --- last lines of {log.name} ---\n"
        + "\n".join("  " + line for line in procs.tail(log).splitlines())
    )


def _start(d: Dir, state: dict[str, Any], comp: Component) -> None:
    d.ports_for(state, comp.ports)
    comp.prepare(d, state)
    argv = comp.argv(d, state)
    try:
        p = procs.spawn(argv, d.log(comp.name), env=comp.env(d, state), cwd=comp.cwd(d, state),
                        user=comp.user(d, state))  # fmt: skip
    except OSError as e:
        raise _failure(d, comp, f"could not be started ({argv[0]}): {e}") from e
    state["components"][comp.name] = {
        "pid": p.pid, "start": procs.start_time(p.pid), "log": str(d.log(comp.name)),
        "ports": {k: state["ports"][k] for k in comp.ports}, "argv": argv,
    }  # fmt: skip
    d.save(state)


def up(d: Dir, names: Iterable[str] | None = None, say: Say = _stderr, timeout_scale: float = 1.0) -> list[str]:
    """Start what is not running among names (default: all) and their
    dependencies; wait until every one is ready. Returns the names started.
    Raises PlatformError naming the failing component and its log."""
    t0 = time.monotonic()
    with d.lock():
        state = d.load()
        state.setdefault("components", {})
        pending = closure(names or ORDER)
        # Temporal/PostgreSQL/Redis alone (integration tests) need no Go build
        state["bins"] = {**state.get("bins", {}), **resolve_bins(build=bool(set(pending) & K8S))}
        d.link_bins(state["bins"])
        d.logs.mkdir(parents=True, exist_ok=True)
        started: list[str] = []
        ready: set[str] = set()
        waiting: dict[str, float] = {}  # name -> deadline
        while pending or waiting:
            for name in list(pending):
                comp = COMPONENTS[name]
                if all(a in ready for a in comp.after):
                    pending.remove(name)
                    if not is_running(state, name):
                        _start(d, state, comp)
                        started.append(name)
                    waiting[name] = time.monotonic() + comp.deadline * timeout_scale
            for name, deadline in list(waiting.items()):
                comp = COMPONENTS[name]
                try:
                    ok, detail = comp.ready(d, state)
                except Exception as e:  # a check that crashed is a check that failed
                    ok, detail = False, f"{type(e).__name__}: {e}"
                if ok:
                    comp.post_ready(d, state)
                    del waiting[name]
                    ready.add(name)
                    info = state["components"][name]
                    verb = "started" if name in started else "already up"
                    say(f"  {name:<19} {verb:<10} port {comp.port(state) or '-':<6} pid {info['pid']:<8}"
                        f" ({time.monotonic() - t0:5.1f}s)")  # fmt: skip
                elif not is_running(state, name):
                    raise _failure(d, comp, f"exited while starting (last check: {detail})")
                elif time.monotonic() > deadline:
                    raise _failure(d, comp, f"not ready after {comp.deadline * timeout_scale:.0f}s: {detail}")
            time.sleep(0.2)
        d.save(state)
        d.write_kubeconfig(state) if "apiserver" in state["ports"] else None
        d.write_env(state)
    say(f"platform up in {time.monotonic() - t0:.1f}s: . {d.env_file}")
    return started


def stop(d: Dir, names: Iterable[str] | None = None, say: Say = _stderr) -> None:
    """Stop the named components (default: all), in reverse start order."""
    with d.lock():
        state = d.load()
        state.setdefault("components", {})
        targets = [n for n in reversed(ORDER) if n in set(names or ORDER)]
        for name in targets:
            if name not in COMPONENTS:
                raise PlatformError(f"unknown component {name!r}")
            comp, info = COMPONENTS[name], state["components"].get(name)
            if info and procs.alive(info["pid"], info.get("start")):
                t = time.monotonic()
                procs.terminate(info["pid"], info.get("start"), comp.stop_signal, comp.stop_grace)
                say(f"  {name:<19} stopped    ({time.monotonic() - t:.1f}s)")
            state["components"].pop(name, None)
            if name == "podrunner":
                _kill_orphan_pods(d, say)
            d.save(state)


def _kill_orphan_pods(d: Dir, say: Say) -> None:
    """Processes the pod runner recorded but did not stop (it was killed -9)."""
    try:
        pods = json.loads(d.podrunner_state.read_text()).get("pods", {})
    except (OSError, ValueError):
        return
    for key, p in pods.items():
        if procs.alive(p.get("pid"), p.get("start")):
            procs.terminate(p["pid"], p.get("start"), grace=10)
            say(f"  pod process {key} (pid {p['pid']}) stopped")


def down(d: Dir, purge: bool = False, say: Say = _stderr) -> None:
    if not d.root.exists():
        say(f"no platform at {d.root}")
        return
    stop(d, None, say)
    if purge:
        state = d.load()
        if state.get("postgres_root") and not str(state["postgres_root"]).startswith(str(d.root)):
            shutil.rmtree(state["postgres_root"], ignore_errors=True)
        shutil.rmtree(d.root, ignore_errors=True)
        say(f"removed {d.root}")
    else:
        say(f"platform down (state kept in {d.root}; `down --purge` removes it)")


def status(d: Dir) -> list[dict[str, Any]]:
    state = d.load()
    state.setdefault("components", {})
    rows = []
    for name in ORDER:
        comp, info = COMPONENTS[name], state["components"].get(name) or {}
        running = is_running(state, name)
        healthy, detail = False, "stopped"
        if running:
            try:
                healthy, detail = comp.ready(d, state)
            except Exception as e:
                detail = f"{type(e).__name__}: {e}"
        rss = procs.rss_kib(procs.group_members(info["pid"])) if running else 0
        rows.append({
            "component": name, "port": comp.port(state) if running else None, "pid": info.get("pid") if running else None,
            "running": running, "healthy": healthy, "detail": detail, "rss_mib": round(rss / 1024, 1),
            "log": str(d.log(name)),
        })  # fmt: skip
    rows.append(_pods_row(d))
    return rows


def _pods_row(d: Dir) -> dict[str, Any]:
    try:
        pods = json.loads(d.podrunner_state.read_text()).get("pods", {})
    except (OSError, ValueError):
        pods = {}
    pids = [p["pid"] for p in pods.values() if procs.alive(p.get("pid"), p.get("start"))]
    members = [m for pid in pids for m in procs.group_members(pid)]
    return {
        "component": "(pod processes)", "port": None, "pid": None, "running": bool(pids), "healthy": None,
        "detail": f"{len(pids)} process(es)", "rss_mib": round(procs.rss_kib(members) / 1024, 1),
        "log": str(d.logs / "pods"),
    }  # fmt: skip
