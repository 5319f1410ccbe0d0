"""The fault and load suite (docs/reliability.md): one command, results as JSON and as the table of the doc.

    python bench/faults.py --size full --doc docs/reliability.md --out bench/results/faults-full.json

Everything it kills or restarts is private to it (its own Temporal dev server on a SQLite file,
PostgreSQL, Redis, etcd + kube-apiserver, operator and workers), so it never disturbs the shared
platform of ``hack/platform``. Sizes: ``reduced`` (what ``tests/faults`` runs), ``medium``, ``full``
(the numbers of issue 15); ``--set name=value`` overrides one field of a size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faultsuite import report, suite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(suite.SIZES), default="reduced")
    parser.add_argument(
        "--only", default=",".join(suite.SCENARIOS), help="comma-separated: " + ", ".join(suite.SCENARIOS)
    )
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a size field: " + ", ".join(f.name for f in fields(suite.Size)))  # fmt: skip
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--doc", type=Path, help="replace the table of this markdown file (docs/reliability.md)")
    parser.add_argument("--dir", type=Path, help="working folder (logs, data); default: a new temp folder")
    parser.add_argument("--from-json", type=Path, nargs="+",
                        help="run nothing: write --doc from these reports (a cut run's too), tables joined")  # fmt: skip
    args = parser.parse_args(argv)
    if args.from_json:
        if not args.doc:
            parser.error("--from-json needs --doc")
        report.write_doc(args.doc, report.combine([json.loads(f.read_text()) for f in args.from_json]))
        return 0
    size = suite.SIZES[args.size]
    for item in args.set:
        name, _, value = item.partition("=")
        kinds = {f.name: f.type for f in fields(suite.Size)}
        if name not in kinds:
            parser.error(f"--set {item}: {name!r} is not a size field ({', '.join(kinds)})")
        size = replace(size, **{name: (float if kinds[name] == "float" else int)(value)})
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = set(only) - set(suite.SCENARIOS)
    if unknown:
        parser.error(f"--only: unknown scenario(s) {sorted(unknown)}; choose from {', '.join(suite.SCENARIOS)}")
    root = args.dir or Path(tempfile.mkdtemp(prefix="agent-tree-faults-"))
    print(f"working folder: {root}", flush=True)
    began = time.monotonic()
    out = {
        "command": "python bench/faults.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "size": args.size,
        "parameters": asdict(size),
        "scenarios": list(only),
        "machine": report.machine(),
        "results": [],
    }

    def progress(results: list[dict]) -> None:
        out.update(results=results, finished=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        out["seconds"] = time.monotonic() - began
        out["complete"] = False
        if args.out:
            report.write_json(args.out, out)

    results = asyncio.run(suite.run(root, size, only, say=lambda line: print(line, flush=True), progress=progress))
    progress(results)
    out["complete"] = True
    print(report.table(results))
    if args.out:
        report.write_json(args.out, out)
    if args.doc:
        report.write_doc(args.doc, out)
    bad = [r["fault"] for r in results if r["lost"] or r.get("duplicated_side_effects") or r.get("started_twice")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
