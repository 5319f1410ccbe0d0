"""Static checks of the Dockerfiles (no Docker engine or hadolint here; this is the linter).

Checked: multi-stage build; the final stage runs as a numeric non-root user; every base image is
pinned to an exact version (no `latest`, no bare name, no floating major); what the build COPYs
exists and is not excluded by .dockerignore; the image's entrypoint is the `agent-tree` console
script that serves both `operator` and `worker`; the example worker image goes back to the
unprivileged user after installing as root.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
WORKER_EXAMPLE = ROOT / "examples" / "worker-image" / "Dockerfile"
PINNED_PYTHON = re.compile(r"^python:(\d+)\.(\d+)\.(\d+)-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?$")


@dataclass
class Instruction:
    cmd: str
    args: str
    line: int


def parse(path: Path) -> list[Instruction]:
    """Dockerfile instructions with line continuations joined and comments dropped."""
    out: list[Instruction] = []
    buf, start = "", 0
    for no, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # comment inside a continued instruction
        if not buf:
            start = no
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        cmd, _, args = buf.partition(" ")
        out.append(Instruction(cmd.upper(), args.strip(), start))
        buf = ""
    assert not buf, f"{path}: dangling line continuation"
    return out


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for ins in instructions:
        if ins.cmd == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    args = {}
    for ins in instructions:
        if ins.cmd == "FROM":
            break
        if ins.cmd == "ARG" and "=" in ins.args:
            key, value = ins.args.split("=", 1)
            args[key] = value
    return args


def resolve(image: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    hit = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/") or fnmatch.fnmatch(path, pat.replace("**/", "")):
            hit = not negate
    return hit


@pytest.fixture(scope="module")
def main() -> list[Instruction]:
    return parse(DOCKERFILE)


def test_multi_stage_with_named_build_stage(main: list[Instruction]) -> None:
    froms = [i for i in main if i.cmd == "FROM"]
    assert len(froms) >= 2, "the image must be multi-stage (build tools stay out of the runtime image)"
    assert re.search(r"\bAS build$", froms[0].args)
    assert any(i.cmd == "COPY" and i.args.startswith("--from=build ") for i in stages(main)[-1])


def test_base_images_are_pinned(main: list[Instruction]) -> None:
    args = global_args(main)
    stage_names = set()
    for ins in (i for i in main if i.cmd == "FROM"):
        image, *rest = ins.args.split()
        resolved = resolve(image, args)
        if resolved in stage_names:
            continue
        assert "latest" not in resolved, f"line {ins.line}: {resolved}"
        m = PINNED_PYTHON.match(resolved)
        assert m, f"line {ins.line}: base image {resolved!r} is not pinned to an exact python X.Y.Z-slim-<suite>"
        requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
        assert requires == f">={m.group(1)}.{m.group(2)}", "the base image's Python must be the project's minimum"
        if rest:
            stage_names.add(rest[-1])


def test_final_stage_runs_as_numeric_non_root(main: list[Instruction]) -> None:
    users = [i for i in stages(main)[-1] if i.cmd == "USER"]
    assert users, "the final stage sets no USER (it would run as root)"
    user = users[-1].args
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user!r}: use a numeric uid[:gid] so runAsNonRoot can check it"
    assert int(user.split(":")[0]) != 0
    # The chart's pod securityContext (a helper shared by the operator and the retention job) uses the same uid.
    helpers = (ROOT / "charts" / "agent-tree" / "templates" / "_helpers.tpl").read_text()
    assert f"runAsUser: {user.split(':')[0]}" in helpers
    # Nothing after the last USER switches back.
    assert stages(main)[-1][-1].cmd in ("CMD", "ENTRYPOINT", "USER", "LABEL", "EXPOSE")


def test_entrypoint_is_the_agent_tree_command(main: list[Instruction]) -> None:
    final = stages(main)[-1]
    (entrypoint,) = [i for i in final if i.cmd == "ENTRYPOINT"]
    assert entrypoint.args == '["agent-tree"]'
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["agent-tree"] == "agent_tree.cli:run"
    env = " ".join(i.args for i in final if i.cmd == "ENV")
    assert "PATH=/opt/venv/bin:" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # the root filesystem is read-only in the chart


@pytest.mark.parametrize("command", ["operator", "worker"])
def test_both_entrypoints_exist(command: str) -> None:
    """The image installs this package; its `agent-tree` must serve both processes."""
    cli = Path(sys.executable).parent / "agent-tree"
    proc = subprocess.run([str(cli), command, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"agent-tree {command}" in proc.stdout


def test_no_latest_or_unpinned_installs(main: list[Instruction]) -> None:
    for ins in main:
        assert ":latest" not in ins.args, f"line {ins.line}"
        if ins.cmd == "RUN":
            assert "curl " not in ins.args and "wget " not in ins.args, f"line {ins.line}: downloads in the build"
            assert not re.search(r"apt-get install(?!.*--no-install-recommends)", ins.args), f"line {ins.line}"


def test_copied_sources_exist_and_are_in_the_context(main: list[Instruction]) -> None:
    patterns = dockerignore_patterns()
    for ins in main:
        if ins.cmd != "COPY" or ins.args.startswith("--from="):
            continue
        parts = [p for p in shlex.split(ins.args) if not p.startswith("--")]
        for src in parts[:-1]:
            assert (ROOT / src).exists(), f"line {ins.line}: COPY {src}: no such file in the repository"
            assert not ignored(src, patterns), f"line {ins.line}: COPY {src} is excluded by .dockerignore"
    for heavy in (".venv", ".git", "tests", "hack"):
        assert ignored(heavy, patterns), f"{heavy} should stay out of the build context"


def test_default_image_carries_the_invoice_example(main: list[Instruction], tmp_path: Path) -> None:
    """The chart's default worker image is this one: lay out the final stage's files as its COPYs do,
    then resolve every entrypoint of examples/invoice/agenttree.yaml there, from the image's WORKDIR
    with the tree's own PYTHONPATH (what a worker pod does), and nothing of the repository on the path."""
    final = stages(main)[-1]
    image = tmp_path / "image"
    workdir = "/"
    for ins in final:
        if ins.cmd == "WORKDIR":
            workdir = ins.args
        if ins.cmd != "COPY" or ins.args.startswith("--from="):
            continue
        *sources, dest = [p for p in shlex.split(ins.args) if not p.startswith("--")]
        for src in sources:
            target = image / dest.lstrip("/")
            if (ROOT / src).is_dir():
                shutil.copytree(ROOT / src, target, dirs_exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / src, target)
    tree = yaml.safe_load((ROOT / "examples" / "invoice" / "agenttree.yaml").read_text())
    env = {e["name"]: e["value"] for e in tree["spec"]["worker"]["env"]}
    entrypoints = [tree["spec"]["planner"]]
    for agent in tree["spec"]["agents"]:
        entrypoints += [agent["entrypoint"]] if agent.get("entrypoint") else []
        entrypoints += [tool["entrypoint"] for tool in agent.get("tools", []) if tool.get("entrypoint")]
    assert len(entrypoints) == 7
    cwd = image / workdir.lstrip("/")
    cwd.mkdir(parents=True, exist_ok=True)  # WORKDIR creates it
    # -I: no PYTHONPATH from the environment and no script directory on sys.path; the tree's PYTHONPATH
    # is put in front by hand, relative to the WORKDIR, as the interpreter in the pod would.
    script = (
        "import os, sys\n"
        "sys.path[:0] = os.environ['TREE_PYTHONPATH'].split(':')\n"
        "from agent_tree.registry import resolve\n"
        "for ep in sys.argv[1:]:\n"
        "    fn = resolve(ep)\n"
        "    where = sys.modules[fn.__module__].__file__\n"
        "    assert where.startswith(os.getcwd()), (ep, where)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", script, *entrypoints], cwd=cwd, capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "TREE_PYTHONPATH": env["PYTHONPATH"], "HOME": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, f"the invoice example is not importable in the image:\n{proc.stderr[-2000:]}"


def test_example_worker_image() -> None:
    instructions = parse(WORKER_EXAMPLE)
    args = global_args(instructions)
    froms = [i for i in instructions if i.cmd == "FROM"]
    assert len(froms) == 1
    base = resolve(froms[0].args, args)
    assert re.fullmatch(r"agent-tree:\d+\.\d+\.\d+", base), base
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert base == f"agent-tree:{version}"
    users = [i.args for i in instructions if i.cmd == "USER"]
    assert users[-1] == "10001:10001", "the worker image must end unprivileged"
    patterns = dockerignore_patterns()
    for ins in instructions:
        if ins.cmd == "COPY":
            parts = [p for p in shlex.split(ins.args) if not p.startswith("--")]
            for src in parts[:-1]:
                assert (ROOT / src).exists(), f"line {ins.line}: {src}"
                assert not ignored(src, patterns), f"line {ins.line}: {src} excluded by .dockerignore"
    # The invoice tree's workers import from PYTHONPATH=examples/invoice, relative to WORKDIR /app.
    tree = (ROOT / "examples" / "invoice" / "agenttree.yaml").read_text()
    assert "value: examples/invoice" in tree
    assert any(i.cmd == "COPY" and i.args.endswith("/app/examples/invoice") for i in instructions)
    assert "WORKDIR /app" in DOCKERFILE.read_text()
