"""The web view in a real headless browser (Debian's chromium driven by Playwright) against the API,
the operator and the workers as processes on the local platform.

Runs of the gated invoice tree (conftest.py) stand still in the invoice specialist until the test
opens its ERP gate, and wait for a person before the verifier's ``verify_answer``, so each page is
looked at while the run is at a known place. Every wait polls with a deadline (Playwright's expect).
"""

from __future__ import annotations

import re
import uuid

import pytest
from platformlib import wait_for
from playwright.sync_api import Page, expect
from web_site import IMG, TREE, Web

pytestmark = pytest.mark.browser
LIVE = 120_000  # ms: a run moving through the operator, Temporal and the workers


def run_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def shot(page: Page, name: str) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(IMG / name), full_page=True)


# [steps shown, timeline marks] (page.wait_for_function would evaluate a string: the page's CSP forbids it)
COUNTS = "() => [Number(document.querySelector('main').dataset.steps), document.querySelectorAll('#timeline [data-i]').length]"


def grown(page: Page, steps: int, marks: int) -> list[int]:
    """Wait until the page shows more steps and more timeline marks than given (redrawn at most once a second)."""
    return wait_for(lambda: (c := page.evaluate(COUNTS))[0] > steps and c[1] > marks and c, 60, "the timeline grows")


def test_a_live_run_page_follows_the_run_and_an_approval_from_the_page_finishes_it(web: Web) -> None:
    name = run_name("live")
    web.create_run(name, "4821")
    ctx = web.context()
    page = ctx.new_page()
    page.goto(f"/ui/ns/{web.ns}/runs/{name}")
    page.evaluate("window.__sameDocument = 'yes'")  # gone if the page ever reloads

    # held in the specialist's ERP lookup: the page shows where the run is
    expect(page.locator("#current-agent")).to_have_text("invoice-specialist", timeout=LIVE)
    graph = page.locator("#run-graph")
    expect(graph.locator('[data-agent="invoice-specialist"]')).to_have_attribute("data-state", "running")
    expect(graph.locator('[data-agent="triage"]')).to_have_attribute("data-state", "needs_more_info")
    expect(graph.locator('[data-agent="verifier"]')).to_have_attribute("data-state", "idle")
    expect(page.locator("#stream-state")).to_have_text("● live")
    before, marks_before = grown(page, 0, 0)

    web.open_gate("erp", "4821")
    # the run moves on to the verifier, whose tool call waits for a person: all without a reload
    expect(page.locator("#current-agent")).to_have_text("verifier", timeout=LIVE)
    expect(graph.locator('[data-agent="verifier"]')).to_have_attribute("data-state", "awaiting", timeout=LIVE)
    expect(graph.locator('[data-agent="invoice-specialist"]')).to_have_attribute("data-state", "needs_more_info")
    expect(page.locator("#run-summary .badge")).to_have_text("AwaitingApproval", timeout=LIVE)
    grown(page, before, marks_before)
    approve = page.get_by_role("button", name="Approve verify_answer")
    expect(approve).to_be_visible(timeout=LIVE)
    shot(page, "web-live-run.png")

    approve.click()
    expect(page.locator("#action-result")).to_contain_text("approved approval", timeout=LIVE)
    expect(page.locator("#run-summary .badge")).to_have_text("Succeeded", timeout=LIVE)
    expect(page.locator("#answer")).to_contain_text("Invoice #4821 rejected due to missing PO number", timeout=LIVE)
    expect(graph.locator('[data-agent="verifier"]')).to_have_attribute("data-state", "ok")
    expect(page.locator("#current-agent")).to_have_text("—")
    expect(page.locator("#stream-state")).to_have_text("finished")
    # the inspector names who approved the call
    page.locator("#steps-scroll li button", has_text="approval_decided").first.click()
    expect(page.locator("#inspector")).to_contain_text(f"system:serviceaccount:{web.ns}:alice")
    assert page.evaluate("window.__sameDocument") == "yes"
    shot(page, "web-finished-run.png")
    ctx.close()


def test_fork_from_a_step_lands_on_the_new_run(web: Web) -> None:
    source = run_name("src")
    web.open_gate("erp", "4790")
    web.create_run(source, "4790")
    pending = web.phase(source, "AwaitingApproval")
    assert pending["name"] == source
    (approval,) = [a for a in web.call("GET", f"/runs/{source}/approvals")["items"] if a["pending"]]
    web.call("POST", f"/runs/{source}/approvals/{approval['id']}/approve", {"reason": "checked"})
    web.phase(source, "Succeeded")

    ctx = web.context()
    page = ctx.new_page()
    page.goto(f"/ui/ns/{web.ns}/runs/{source}")
    expect(page.locator("#stream-state")).to_have_text("finished")
    step = page.locator("#steps-scroll li button", has_text="handoff").first  # triage handing back
    number = int(step.get_attribute("data-n"))
    step.click()
    expect(page.locator("#inspector h3")).to_contain_text(f"#{number} handoff")
    page.locator("#fork-input").fill("Why was invoice #4790 paid?")
    page.get_by_role("button", name=f"Fork from step #{number}").click()
    expect(page).to_have_url(re.compile(rf"/ui/ns/{web.ns}/runs/{source}-fork-[a-z0-9]+$"), timeout=30_000)
    forked = page.url.rsplit("/", 1)[1]
    expect(page.locator("h1")).to_contain_text(forked)
    expect(page.locator("#run-summary")).to_contain_text(f"Forked from{source}", timeout=LIVE)
    spec = web.run(forked)["spec"]
    assert spec["forkFrom"]["run"] == source and spec["forkFrom"]["step"] == number
    assert spec["forkFrom"]["input"] == "Why was invoice #4790 paid?"
    ctx.close()


def test_the_runs_list_updates_live(web: Web) -> None:
    ctx = web.context()
    page = ctx.new_page()
    page.goto(f"/ui/ns/{web.ns}/runs")
    expect(page.locator("main")).to_have_attribute("data-loaded", "true")
    page.evaluate("window.__sameDocument = 'yes'")
    name = run_name("list")
    web.create_run(name, "4824")  # held at the ERP gate: Running
    row = page.locator(f'tr[data-run="{name}"]')
    expect(row).to_be_visible(timeout=30_000)
    expect(row).to_have_attribute("data-phase", "Running", timeout=LIVE)
    expect(row.locator("td.agent")).to_have_text("invoice-specialist", timeout=LIVE)
    web.open_gate("erp", "4824")
    expect(row).to_have_attribute("data-phase", "AwaitingApproval", timeout=LIVE)
    expect(row.locator("td.agent")).to_have_text("verifier", timeout=LIVE)
    expect(row).to_contain_text("● live")
    # the tree filter keeps the list to one tree
    page.locator("#filter-phase").select_option("Succeeded")
    expect(row).to_have_count(0, timeout=10_000)
    page.locator("#filter-phase").select_option("")
    expect(row).to_be_visible(timeout=10_000)
    assert page.evaluate("window.__sameDocument") == "yes"
    ctx.close()


def test_signing_in_with_a_token_that_may_not_read_the_namespace_is_refused_clearly(web: Web) -> None:
    ctx = web.context(who=None)
    page = ctx.new_page()
    page.goto(f"/ui/ns/{web.ns}/runs")
    page.get_by_label("Kubernetes bearer token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("did not accept this token")

    page.get_by_label("Kubernetes bearer token").fill(web.tokens["stranger"])
    page.get_by_role("button", name="Sign in").click()
    stranger = f"system:serviceaccount:{web.ns}:stranger"
    expect(page.locator("#whoami")).to_have_text(stranger)
    alert = page.locator("#runs-error [role=alert]")
    expect(alert).to_contain_text("403 Forbidden")
    expect(alert).to_contain_text(
        f'User "{stranger}" cannot list resource "agentruns" in API group "agenttree.io" in the namespace "{web.ns}"'
    )
    assert page.locator("tr[data-run]").count() == 0
    # a run's page refuses the same way, and signing out forgets the token
    page.goto(f"/ui/ns/{web.ns}/runs/anything")
    expect(page.locator("#run-error [role=alert]")).to_contain_text("forbidden")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Kubernetes bearer token")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('agent-tree.token')") is None
    ctx.close()


def test_the_tree_page_shows_the_graph_workers_and_conditions(web: Web) -> None:
    ctx = web.context(scheme="dark")
    page = ctx.new_page()
    page.goto(f"/ui/ns/{web.ns}/trees/{TREE}")
    expect(page.locator("main")).to_have_attribute("data-loaded", "true")
    graph = page.locator("#tree-graph")
    for agent in ("supervisor", "triage", "invoice-specialist", "verifier"):
        expect(graph.locator(f'[data-agent="{agent}"]')).to_contain_text("workers 1/1")
    expect(page.locator('#conditions tr[data-condition="Ready"]')).to_contain_text("True")
    expect(page.locator("tbody tr[data-run]").first).to_be_visible()
    shot(page, "web-tree.png")
    ctx.close()
