"""The local platform (docs/development.md): etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok (fake node), the pod runner,
Temporal, PostgreSQL and Redis on free loopback ports, state in one directory."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import procs
from .components import ORDER
from .control import down, status, stop, up
from .core import Dir, PlatformError, read_env_file


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    d = Dir()
    if argv[:1] == ["kubectl"]:  # pass everything through untouched
        if not (d.bin / "kubectl").exists():
            print(f"platform: no kubectl in {d.bin}: run `hack/platform up`", file=sys.stderr)
            return 1
        env = dict(os.environ, **read_env_file(d.env_file)) if d.env_file.exists() else dict(os.environ)
        os.execve(str(d.bin / "kubectl"), ["kubectl", f"--kubeconfig={d.kubeconfig}", *argv[1:]], env)

    ap = argparse.ArgumentParser(prog="hack/platform", description=__doc__)
    ap.add_argument(
        "--dir", help="platform directory (default $AGENT_TREE_PLATFORM_DIR or ~/.cache/agent-tree/platform)"
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("up", help="start everything not running (or only COMPONENT... and what they need)")
    p.add_argument("components", nargs="*", metavar="COMPONENT")
    p.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every readiness deadline")
    p = sub.add_parser("down", help="stop everything")
    p.add_argument("--purge", action="store_true", help="also remove the platform directory (cluster state, data)")
    p = sub.add_parser("status", help="each component: port, pid, health, memory; exit 1 unless all healthy")
    p.add_argument("--json", action="store_true")
    for name, help_ in (("start", "start components"), ("stop", "stop components"),
                        ("restart", "stop then start components (same ports)")):  # fmt: skip
        sub.add_parser(name, help=help_).add_argument("components", nargs="+", metavar="COMPONENT", choices=ORDER)
    sub.add_parser("env", help="print the env file")
    sub.add_parser("envfile", help="print the env file's path (hack/test sources it)")
    p = sub.add_parser("logs", help="print the tail of a component's log and its path")
    p.add_argument("component", choices=[*ORDER, "audit"])
    p.add_argument("-n", type=int, default=40)
    sub.add_parser("kubectl", help="run the platform's kubectl with its kubeconfig")
    args = ap.parse_args(argv)
    if args.dir:
        d = Dir(args.dir)

    try:
        if args.cmd == "up":
            print(f"platform dir: {d.root}", file=sys.stderr)
            up(d, args.components or None, timeout_scale=args.timeout_scale)
        elif args.cmd == "down":
            down(d, purge=args.purge)
        elif args.cmd == "start":
            up(d, args.components)
        elif args.cmd == "stop":
            stop(d, args.components)
        elif args.cmd == "restart":
            stop(d, args.components)
            up(d, args.components)
        elif args.cmd == "status":
            rows = status(d)
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                print(f"{'COMPONENT':<19} {'PORT':<6} {'PID':<8} {'RSS MiB':>8}  STATE")
                for r in rows:
                    st = ("healthy" if r["healthy"] else "UNHEALTHY") if r["running"] else "stopped"
                    if r["healthy"] is None:
                        st = r["detail"]
                    elif r["running"] and not r["healthy"]:
                        st += f": {r['detail']}"
                    print(f"{r['component']:<19} {r['port'] or '-':<6} {r['pid'] or '-':<8} {r['rss_mib']:>8}  {st}")
                total = sum(r["rss_mib"] for r in rows)
                print(f"{'total':<19} {'':<6} {'':<8} {total:>8.1f}")
                print(f"env: {d.env_file}   logs: {d.logs}")
            return 0 if all(r["healthy"] for r in rows if r["healthy"] is not None) else 1
        elif args.cmd == "envfile":
            print(d.env_file)
        elif args.cmd == "env":
            if not d.env_file.exists():
                raise PlatformError(f"no env file at {d.env_file}: run `hack/platform up`")
            print(d.env_file.read_text(), end="")
        elif args.cmd == "logs":
            log = d.logs / "audit.log" if args.component == "audit" else d.log(args.component)
            print(procs.tail(log, args.n))
            print(f"--- {log}", file=sys.stderr)
    except PlatformError as e:
        print(f"platform: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
