"""``agent-tree ... --server URL``: the run commands through the REST API (a real uvicorn server over
in-memory services, see client_fakes), printing what the local commands print."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from client_fakes import NS, World, free_port, serve

from agent_tree.cli import main
from agent_tree.step_text import history_table, render

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "alice-token"


@pytest.fixture
def world() -> World:
    return World()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_runs_history_and_logs_read_the_api(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    first = world.add_run("first", steps=2, status="completed")
    world.add_run("second", steps=3, status="failed")
    with serve(world) as url:
        code, out, err = run_cli(capsys, "runs", "-n", NS, "--server", url, "--token", TOKEN, "--limit", "1")
        assert code == 0 and "more: --cursor" in err
        lines = out.splitlines()
        assert lines[0].split() == ["NAME", "TREE", "PHASE", "STEPS", "TOKENS", "STARTED", "DURATION"]
        assert lines[1].split()[:4] == ["second", "tree", "Failed", "3"]

        code, out, _ = run_cli(capsys, "history", f"{NS}/first", "--server", url, "--token", TOKEN)
        steps = world.history.step_rows[first]
        assert code == 0 and out.splitlines()[0].startswith("run:    agentrun.")
        assert "status: Succeeded" in out and "tree tree @ rev1" in out
        assert out.splitlines()[-3:] == history_table(steps)

        code, out, _ = run_cli(capsys, "logs", f"{NS}/first", "--server", url, "--token", TOKEN)
        assert code == 0 and out.splitlines() == [render(s) for s in steps]
        code, out, _ = run_cli(capsys, "logs", f"{NS}/second", "--server", url, "--token", TOKEN)
        assert code == 1  # a failed run, as the local command says


def test_logs_follow_prints_steps_and_live_model_text_then_the_end(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    wid = world.add_run("live", steps=1)
    monkeypatch.setenv("AGENT_TREE_TOKEN", TOKEN)  # token and server from the environment
    with serve(world) as url:
        monkeypatch.setenv("AGENT_TREE_SERVER", url)

        def produce() -> None:
            deadline = time.monotonic() + 60
            while not world.feeds.following() and time.monotonic() < deadline:
                time.sleep(0.01)  # wait for the command's stream (polling with a deadline)
            world.feeds.delta(wid, "2", 0, "Hello")
            world.feeds.delta(wid, "2", 1, " world")
            while world.feeds.read < 2 and time.monotonic() < deadline:
                time.sleep(0.01)  # the feed has the text: it reaches the command before any later step
            world.history.add_step(wid, [2], thought="after the text")
            world.history.finish(wid)

        producer = threading.Thread(target=produce)
        producer.start()
        code, out, err = run_cli(capsys, "logs", "-f", f"{NS}/live")
        producer.join()
    lines = out.splitlines()
    assert code == 0 and err.strip() == "# run ended: completed"
    assert "step 1" in lines[0] and lines[1].endswith("~ root: Hello world") and "after the text" in lines[2]


def test_approve_retry_fork_and_submit_write_through_the_api(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.add_tree("invoice")
    world.add_run("src", steps=4, status="failed")
    world.add_approval("src", "a1")
    with serve(world) as url:
        auth = ["--server", url, "--token", TOKEN]
        code, out, _ = run_cli(capsys, "approve", f"{NS}/src", "--reason", "ok", "--wait", "0", *auth)
        assert code == 0 and out.strip() == f"approved approval a1 of {NS}/src (root calling refund) as alice"
        code, out, _ = run_cli(capsys, "approve", f"{NS}/src", "a1", "--wait", "0", *auth)
        assert code == 0 and out.strip().endswith("nothing to do")
        code, _, err = run_cli(capsys, "reject", f"{NS}/src", "a1", "--wait", "0", *auth)
        assert code == 1 and "a decision never changes" in err

        code, out, _ = run_cli(capsys, "retry", f"{NS}/src", "--name", "src-2", *auth)
        assert (code, out.strip()) == (0, "src-2")
        code, out, _ = run_cli(capsys, "fork", f"{NS}/src", "--step", "2", "--context", '{"k": 1}', *auth)
        assert code == 0 and out.strip().startswith("src-fork-")
        code, _, err = run_cli(capsys, "fork", f"{NS}/src", "--step", "0", *auth)
        assert code == 2 and "--step" in err

        manifest = str(ROOT / "examples" / "invoice" / "agenttree.yaml")
        code, out, err = run_cli(capsys, "submit", "-f", manifest, "--namespace", NS, "-i", "why?", *auth)
        assert code == 0 and out.strip().startswith("invoice-") and "as alice" in err
    runs = {p.rsplit("/", 1)[-1]: o for p, o in world.kube.objects.items() if "/agentruns/" in p}
    assert runs["src-2"]["spec"]["forkFrom"] == {"run": "src"}
    assert runs[out.strip()]["spec"] == {"treeRef": {"name": "invoice"}, "input": "why?"}
    approval = next(o for p, o in world.kube.objects.items() if "/agentapprovals/" in p)
    assert approval["spec"]["decidedBy"]["username"] == "alice" and approval["spec"]["reason"] == "ok"


def test_refusals_and_bad_usage(world: World, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    world.add_run("r", steps=1, status="completed")
    with serve(world) as url:
        code, _, err = run_cli(capsys, "history", f"{NS}/r", "--server", url)
        assert code == 1 and "401 Unauthorized" in err and "--token" in err
        code, _, err = run_cli(capsys, "runs", "--server", url, "--token", TOKEN)
        assert code == 2 and "-n NAMESPACE" in err
        code, _, err = run_cli(capsys, "logs", "agentrun.x.y", "--server", url, "--token", TOKEN)
        assert code == 2 and "NAMESPACE/NAME" in err
        code, _, err = run_cli(capsys, "runs", "-n", "other", "--server", url, "--token", TOKEN)
        assert code == 1 and "403 Forbidden" in err
        code, _, err = run_cli(capsys, "runs", "-n", NS, "--since", "soon", "--server", url, "--token", TOKEN)
        assert code == 1 and "since" in err
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        code, out, _ = run_cli(capsys, "logs", f"{NS}/r", "--server", url, "--token-file", str(token_file))
        assert code == 0 and "step 1" in out
    code, _, err = run_cli(capsys, "runs", "-n", NS, "--server", f"http://127.0.0.1:{free_port()}", "--token", "t")
    assert code == 3 and "cannot reach the agent-tree API at http://127.0.0.1:" in err
    code, _, err = run_cli(capsys, "runs", "-n", NS, "--token", TOKEN)
    assert code == 2 and "--server" in err
