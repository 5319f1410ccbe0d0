"""The suite's output: one JSON document and a markdown table written into docs/reliability.md."""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- fault-table:begin -->", "<!-- fault-table:end -->"


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    try:
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = 0
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _dup(r: dict[str, Any]) -> str:
    return f"{r.get('duplicated_steps', 0)} / {r.get('duplicated_side_effects', 0)}"


def _secs(value: Any) -> str:
    return "never" if value == float("inf") else f"{value:g}"


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| fault | repetitions | runs | completed | lost | duplicated (steps / side effects) | max seconds to recover |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        reps = r["repetitions"] if r["repetitions"] else "-"
        recover = _secs(r["max_recover_seconds"]) if r["repetitions"] else "-"
        lines.append(
            f"| {r['fault']} | {reps} | {r['runs']} | {r['completed']} | {r['lost']} | {_dup(r)} | {recover} |"
        )
    notes = []
    for r in results:
        if "latency_seconds" in r or "per_minute" in r:
            mem = r.get("memory", {})
            pg = r.get("postgres", {})
            lat = r.get("latency_seconds") or {}
            notes.append(
                f"- {r['fault']}: success rate {r['success_rate']:.2%}"
                + (f", latency p50 {lat['p50']} s / p99 {lat['p99']} s" if lat else "")
                + (f", {r['runs_per_second']} runs/s" if "runs_per_second" in r else "")
                + f"; operator RSS {mem.get('operator_mib', {}).get('first')} -> {mem.get('operator_mib', {}).get('last')}"
                f" MiB (max {mem.get('operator_mib', {}).get('max')}), workers {mem.get('workers_mib', {}).get('first')}"
                f" -> {mem.get('workers_mib', {}).get('last')} MiB; PostgreSQL {pg.get('step_rows_per_run')} step rows"
                f" and {pg.get('bytes_per_run')} bytes per run"
            )
            api = r.get("api")
            if api:
                api_mem = mem.get("api_mib", {})
                notes.append(
                    f"  - through the REST API: {api['ended']}/{api['followed']} SSE followers got `end`"
                    f" ({api['ended_completed']} completed), {api['events']} step events,"
                    f" {api['out_of_order_or_repeated']} out of order or repeated, {api['reconnects']} reconnects;"
                    f" runs list p50 {api['list_ms']['p50']} ms / p99 {api['list_ms']['p99']} ms over"
                    f" {api['list_requests']} requests ({len(api['list_errors'])} errors); API RSS"
                    f" {api_mem.get('first')} -> {api_mem.get('last')} MiB (max {api_mem.get('max')})"
                    + (f"; reconnect reasons {api['reconnect_reasons']}" if api.get("reconnect_reasons") else "")
                )
        for m in r.get("per_minute") or []:
            notes.append(f"  - minute {m['minute']}: {m['succeeded']}/{m['runs']} succeeded, latency p50 {m['p50']} s"
                         f" / p99 {m['p99']} s, operator {m['operator_mib']} MiB, workers {m['workers_mib']} MiB"
                         + (f", API {m['api_mib']} MiB" if "api_mib" in m else ""))  # fmt: skip
        requested = r.get("requested_repetitions")
        if requested and requested != r["repetitions"]:
            notes.append(f"- {r['fault']}: {r['repetitions']} of {requested} requested kills happened (the runs "
                         "had finished before the others)")  # fmt: skip
        if (r.get("side_effects") or {}).get("missing"):
            notes.append(f"- {r['fault']}: {r['side_effects']['missing']} counted calls never completed in runs "
                         "that completed (the model was told the call failed)")  # fmt: skip
        if "rows_lost" in r:
            notes.append(f"- {r['fault']}: {r['rows_lost']} step rows lost, {r['started_twice']} runs started "
                         f"twice, {len(r.get('status_regressions') or [])} status regressions")  # fmt: skip
        if "converge_seconds" in r:
            in_flight = [k.get("in_flight") for k in r.get("kills", [])]
            notes.append(f"- {r['fault']}: runs in flight at each kill {in_flight}; every AgentRun final "
                         f"{r['converge_seconds']} s after the last restart; {r['started_twice']} runs started "
                         f"twice; {len(r.get('status_regressions') or [])} status regressions")  # fmt: skip
        for key in ("status_regressions",):
            if r.get(key):
                notes.append(f"- {r['fault']}: {len(r[key])} status regressions: {r[key][:3]}")
        if r.get("started_twice"):
            notes.append(f"- {r['fault']}: {r['started_twice']} runs started twice")
    return "\n".join(lines + (["", *notes] if notes else []))


def combine(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Several reports as one: their results in order, every command, the first one's machine."""
    if len(reports) == 1:
        return reports[0]
    return {
        **reports[0],
        "command": "` then `".join(r["command"] for r in reports),
        "size": ", ".join(r["size"] for r in reports),
        "finished": reports[-1].get("finished", ""),
        "seconds": sum(r.get("seconds", 0) for r in reports),
        "complete": all(r.get("complete", True) for r in reports),
        "results": [x for r in reports for x in r["results"]],
    }


def write_doc(doc: Path, report: dict[str, Any]) -> None:
    """Replace the table between the markers of ``doc`` with this report's (command and machine included)."""
    m = report["machine"]
    block = "\n".join(
        [
            BEGIN,
            f"Produced by `{report['command']}` on {report['finished']} ({report['seconds']:.0f} s), size "
            f"`{report['size']}`, on {m['cpus']} CPUs ({m['cpu'] or 'unknown CPU'}), {m['memory_gib']} GiB, Linux "
            f"{m['kernel']}, Python {m['python']}; load average at start {m['load_average_at_start']}."
            + ("" if report.get("complete", True) else " The run was cut: only the scenarios below finished."),
            "",
            table(report["results"]),
            END,
        ]
    )
    text = doc.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{doc} has no {BEGIN} ... {END} block to replace")
    doc.write_text(pattern.sub(lambda _m: block, text))


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
