"""Where the time of ``bench_platform.py``'s AgentRun batches goes: CPU seconds of every process on the
machine (``/proc/<pid>/stat``) before and after the batches, grouped (Temporal, workers, operator,
API server, ...). Same platform and arguments as bench_platform.py::

    .venv/bin/python bench/bench_platform_profile.py --runs 100 --batches 2
"""

import argparse
import collections
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_platform as b

TICK = os.sysconf("SC_CLK_TCK")


def group(cmd: str) -> str:
    for key, name in (
        ("kube-apiserver", "kube-apiserver"),
        ("etcd", "etcd"),
        ("temporal", "temporal dev server"),
        ("postgres", "postgresql"),
        ("redis", "redis"),
        (" operator", "operator (kopf)"),
        ("worker", "workers (4 agents)"),
        ("kwok", "kwok"),
        ("controller-manager", "controller-manager"),
        ("scheduler", "scheduler"),
        ("podrunner", "pod runner"),
        ("bench_platform", "bench (client)"),
        ("profile_bench", "bench (client)"),
    ):
        if key in cmd:
            return name
    return "other"


def snap() -> dict:
    out = collections.Counter()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            cmd = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
        except OSError:
            continue
        out[(pid, group(cmd))] = (int(stat[11]) + int(stat[12])) / TICK
    return out


orig = b.agentrun_batches


def wrapped(*a, **k):
    s, t0 = snap(), time.time()
    r = orig(*a, **k)
    e, wall = snap(), time.time() - t0
    per = collections.Counter()
    for key, v in e.items():
        per[key[1]] += v - s.get(key, 0.0)
    total = sum(per.values())
    print(f"\nCPU during the AgentRun batches ({wall:.1f} s wall, {total:.1f} CPU s on 2 cores):", file=sys.stderr)
    for name, v in per.most_common():
        if v > 0.05:
            print(f"  {name:24s} {v:7.1f} s  {100 * v / total:5.1f} %", file=sys.stderr)
    return r


b.agentrun_batches = wrapped
p = argparse.ArgumentParser()
for n, d in (("--runs", 100), ("--batches", 2), ("--bare-batches", 1), ("--active", 0), ("--sequential", 2)):
    p.add_argument(n, type=int, default=d)
p.add_argument("--keep", action="store_true")
r = b.main(p.parse_args())
print(b.markdown(r))
