"""The board in a real browser (Debian's chromium driven by Playwright) against the local
two-party stack (`fedmq local`, separate processes on RabbitMQ, PostgreSQL and Redis).

One stack, one job, one browser for the module: the guest's jobs page is open while the breast
hetero_lr job is submitted, and its row appears and turns to success without a reload (server-
sent events); the job's page then shows every component succeeded in the DAG, draws the loss
and ROC charts from the job's own numbers (read back from the chart objects on the page and
compared with the REST API's metrics), and its crossed-messages table equals what the audit
API lists; a wrong token sees none of it. Screenshots of each page go to
$FEDMQ_BOARD_SCREENSHOTS when set (docs/board/ holds the committed ones), else to a temporary
directory.

Never skipped: without chromium or Playwright the module fails, naming what to install
(scripts/ensure-services installs chromium, requirements/dev.txt Playwright).
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.local_stack import DATA, GUEST, HOST, REPO, SHARED_TOKEN, Stack, shared_stack_fixture
from tests.polling import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

CHROMIUM = "/usr/bin/chromium"
TOKEN = SHARED_TOKEN
EPOCHS = 3
PIPELINE = (
    (REPO / "examples" / "pipelines" / "hetero_lr_breast.yaml")
    .read_text()
    .replace("epochs: 30,", f"epochs: {EPOCHS},")
)
COMPONENTS = {"reader_0", "psi_0", "hetero_lr_0", "predict_0", "eval_0"}


def _playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: scripts/setup installs requirements/dev.txt")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure-services (apt chromium)")
    return sync_playwright


# The two-party stack tests/e2e and tests/security share (tests/local_stack.py).
shared_stack = shared_stack_fixture("shared_stack")


@pytest.fixture(scope="module")
def stack(shared_stack: Stack) -> Stack:
    shared_stack.guest.upload_table(
        "breast_hetero_guest", DATA / "breast_hetero_guest.csv", label_column="y", replace=True
    )
    shared_stack.host.upload_table(
        "breast_hetero_host", DATA / "breast_hetero_host.csv", replace=True
    )
    shared_stack.host.grant("breast_hetero_host", GUEST, ["psi", "hetero_lr", "hetero_lr_predict"])
    return shared_stack


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with _playwright()() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("FEDMQ_BOARD_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("board-shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def api(stack: Stack, party: str, path: str, token: str = TOKEN) -> httpx.Response:
    client = stack.guest if party == GUEST else stack.host
    return httpx.get(
        f"{client.base_url}/api/v1{path}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )


def login(context: Any, base_url: str, token: str) -> Any:
    page = context.new_page()
    page.goto(f"{base_url}/board/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    return page


@pytest.fixture(scope="module")
def guest_page(stack: Stack, browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = login(context, stack.guest.base_url, TOKEN)
    yield page
    context.close()


@pytest.fixture(scope="module")
def job_id(stack: Stack, guest_page: Any, shots: Path) -> str:
    """The breast hetero_lr job, submitted while the guest's jobs page is open; that page must
    show it arrive and succeed by itself (no reload: the marker set on `window` survives)."""
    page = guest_page
    assert page.url.endswith("/board/jobs"), page.url
    page.evaluate("window.__notReloaded = true")
    job = stack.guest.submit(PIPELINE, job_id=f"board-{uuid.uuid4().hex[:6]}")
    row = f'tr[data-job-id="{job.job_id}"]'
    page.wait_for_selector(row, timeout=60_000)
    # The job's own page, opened while it runs, follows it too (its DAG polls while it runs)
    job_page = page.context.new_page()
    job_page.goto(f"{stack.guest.base_url}/board/jobs/{job.job_id}")
    opened_at = job_page.get_attribute("#dag-live", "data-job-state")
    job_page.evaluate("window.__notReloaded = true")
    page.wait_for_selector(f'{row}[data-state="success"]', timeout=240_000)
    assert page.evaluate("window.__notReloaded === true"), "the jobs page reloaded itself"
    assert opened_at in ("waiting", "running"), opened_at
    job_page.wait_for_selector('#dag-live[data-job-state="success"]', timeout=30_000)
    states = job_page.eval_on_selector_all(
        "svg.dag .dag-node", "els => els.map(e => e.dataset.state)"
    )
    assert set(states) == {"success"} and job_page.evaluate("window.__notReloaded === true")
    job_page.close()
    ended = stack.guest.wait(job.job_id, timeout=30)
    assert ended.state == "success", ended.reason
    page.screenshot(path=str(shots / "jobs.png"))
    return job.job_id


def test_the_session_cookie_is_http_only_and_same_site_strict(
    stack: Stack, guest_page: Any
) -> None:
    cookies = {c["name"]: c for c in guest_page.context.cookies()}
    cookie = cookies["fedmq_board"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/board"
    assert TOKEN not in cookie["value"]
    # Over plain HTTP (the local stack) it is not Secure; scripts cannot read it
    assert guest_page.evaluate("document.cookie") == ""


def test_the_job_page_shows_every_component_succeeded_with_the_jobs_numbers(
    stack: Stack, guest_page: Any, job_id: str, shots: Path
) -> None:
    page = guest_page
    # Prepare: what the REST API says about the job
    metrics = api(stack, GUEST, f"/jobs/{job_id}/metrics").json()
    loss = sorted(
        (m["step"], m["value"])
        for m in metrics["data"]
        if m["component"] == "hetero_lr_0" and m["name"] == "loss" and m["step"] >= 0
    )
    roc = next(c for c in metrics["curves"] if c["component"] == "eval_0" and c["name"] == "roc")
    charts_api = api(stack, GUEST, f"/board/jobs/{job_id}/charts").json()

    # Execute: open the job from the jobs list
    page.click(f'tr[data-job-id="{job_id}"] a')
    page.wait_for_selector(".plot[data-points]")

    # Assert: the DAG has the pipeline's components, each succeeded, with its edges
    nodes = page.eval_on_selector_all(
        "svg.dag .dag-node",
        "els => els.map(e => [e.dataset.component, e.dataset.state])",
    )
    assert {name for name, _ in nodes} == COMPONENTS
    assert {state for _, state in nodes} == {"success"}, nodes
    edges = page.eval_on_selector_all(
        "svg.dag .edge", "els => els.map(e => [e.dataset.from, e.dataset.to])"
    )
    assert ["psi_0", "hetero_lr_0"] in edges and ["predict_0", "eval_0"] in edges
    # The page's chart data is the API's, and the drawn charts hold the job's numbers
    assert page.evaluate("JSON.parse(document.getElementById('board-charts').textContent)") == (
        charts_api
    )
    assert len(loss) == EPOCHS
    drawn_loss = page.evaluate(f"fedmqBoard.plots['hetero_lr_0.{GUEST}.loss'].data")
    assert drawn_loss == [[float(s) for s, _ in loss], [v for _, v in loss]]
    drawn_roc = page.evaluate(f"fedmqBoard.plots['eval_0.{GUEST}.roc'].data")
    assert drawn_roc == [roc["x"], roc["y"]]
    assert len(roc["x"]) > 10
    auc = page.inner_text('#component-eval_0 tr[data-metric="auc"] td.num')
    assert float(auc) == pytest.approx(metrics_value(metrics, "eval_0", "auc"), rel=1e-5)
    for cell in ("tp", "fp", "tn", "fn"):
        shown = page.inner_text(f'#component-eval_0 table.confusion td[data-cell="{cell}"]')
        assert int(shown) == metrics_value(metrics, "eval_0", cell), cell
    page.screenshot(path=str(shots / "job.png"))
    page.locator("#component-hetero_lr_0 .panel-charts").screenshot(
        path=str(shots / "job-loss.png")
    )
    page.locator("#component-eval_0 .panel-charts").screenshot(path=str(shots / "job-eval.png"))

    # And the crossed table matches the audit API's records of the job, per tag and direction
    rows = page.eval_on_selector_all(
        "#crossed-table tbody tr[data-tag]",
        "els => els.map(e => [e.dataset.tag, e.dataset.direction, e.dataset.peer,"
        " +e.dataset.messages, +e.dataset.bytes])",
    )
    events = api(stack, GUEST, f"/audit/jobs/{job_id}/events?limit=10000").json()["data"]
    counted: Counter[tuple[str, str, str]] = Counter()
    sizes: Counter[tuple[str, str, str]] = Counter()
    for e in events:
        if e["direction"] == "local":  # stayed inside the party: not a crossing
            continue
        peer = e["destination_party"] if e["direction"] == "out" else e["source_party"]
        counted[(e["tag"], e["direction"], peer)] += 1
        sizes[(e["tag"], e["direction"], peer)] += e["size"]
    shown_n: Counter[tuple[str, str, str]] = Counter()
    shown_b: Counter[tuple[str, str, str]] = Counter()
    for tag, direction, peer, n, size in rows:
        shown_n[(tag, direction, peer)] += n
        shown_b[(tag, direction, peer)] += size
    assert shown_n == counted and shown_b == sizes
    assert (
        {d for _, d, _ in counted} == {"in", "out"}
        and set(counted)
        and HOST in {p for _, _, p in counted}
    )
    page.locator(".panel-crossed").screenshot(path=str(shots / "job-crossed.png"))
    assert rows == [
        [r["tag"], r["direction"], r["peer"], r["messages"], r["bytes"]]
        for r in api(stack, GUEST, f"/board/jobs/{job_id}/crossed").json()["data"]
    ]


def metrics_value(metrics: dict[str, Any], component: str, name: str) -> float:
    return next(
        m["value"]
        for m in metrics["data"]
        if m["component"] == component and m["name"] == name and m["step"] < 0
    )


def test_the_job_page_fits_a_narrow_window(
    stack: Stack, guest_page: Any, job_id: str, shots: Path
) -> None:
    page = guest_page
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        page.goto(f"{stack.guest.base_url}/board/jobs/{job_id}")
        page.wait_for_selector(".plot[data-points]")
        too_wide = page.evaluate(
            """() => [...document.querySelectorAll('main *')]
                .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1
                             && !e.closest('.table-wrap, .dag-wrap, table, pre'))
                .map(e => e.tagName + '.' + e.className).slice(0, 10)"""
        )
        # Wide content (the DAG, tables) scrolls in its own box; the page itself does not
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), (
            too_wide
        )
        page.screenshot(path=str(shots / "job-narrow.png"))
    finally:
        page.set_viewport_size({"width": 1280, "height": 800})


def test_data_audit_and_site_pages_show_this_partys_read_models(
    stack: Stack, browser: Any, guest_page: Any, job_id: str, shots: Path
) -> None:
    page, base = guest_page, stack.guest.base_url
    page.goto(f"{base}/board/data")
    assert page.inner_text('tr[data-table="breast_hetero_guest"] td.num >> nth=0') == "569"
    page.click("text=Profile of breast_hetero_guest")
    assert page.is_visible('tr.profile th:text-is("x0")')
    page.screenshot(path=str(shots / "data.png"), full_page=True)
    page.goto(f"{base}/board/audit?job_id={job_id}")
    assert page.inner_text("#chain-status").startswith("Hash chain: verifies")
    page.screenshot(path=str(shots / "audit.png"))
    page.goto(f"{base}/board/site")

    def link_up() -> bool | None:
        page.reload()
        return page.get_attribute(f'tr[data-peer="{HOST}"]', "data-connected") == "true" or None

    wait_for(link_up, timeout=30, interval=0.5)
    site = api(stack, GUEST, "/board/site").json()
    assert site["own_certificate"]["days_left"] > 0
    assert [p["party_id"] for p in site["peers"]] == [HOST]
    page.screenshot(path=str(shots / "site.png"))

    # The serving page is there (the gateway has the serving API); the local stack runs no
    # serving service, so it says so instead of hanging or failing
    page.get_by_role("navigation").get_by_role("link", name="Models & serving").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", level=1).inner_text() == "Models & serving"
    assert page.locator("#serving-error").count() == 1 or page.locator("table.models").count()

    # The host's board shows the grant it gave, to its own logged-in user
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    host_page = login(context, stack.host.base_url, TOKEN)
    host_page.goto(f"{stack.host.base_url}/board/data")
    grants = host_page.inner_text("table.grants tbody")
    assert "breast_hetero_host" in grants and GUEST in grants and "hetero_lr_predict" in grants
    host_page.screenshot(path=str(shots / "data-host.png"))
    context.close()


def test_a_wrong_token_sees_neither_the_board_nor_its_data(
    stack: Stack, browser: Any, job_id: str, shots: Path
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    base = stack.guest.base_url
    # Without a session every page sends the browser to the login form
    page.goto(f"{base}/board/jobs/{job_id}")
    assert "/board/login" in page.url
    assert job_id not in page.inner_text("body") and page.locator("svg.dag").count() == 0
    # A wrong token is refused and opens no session
    page = login(context, base, "not-" + TOKEN)
    assert page.get_by_role("alert").inner_text() == "That token is not valid here."
    page.screenshot(path=str(shots / "login-refused.png"))
    assert [c for c in context.cookies() if c["name"] == "fedmq_board"] == []
    page.goto(f"{base}/board/jobs/{job_id}")
    assert "/board/login" in page.url and page.locator("svg.dag").count() == 0
    # A made-up session cookie is no better, and neither is the JSON with a wrong bearer
    context.add_cookies([{"name": "fedmq_board", "value": "forged", "url": f"{base}/board/"}])
    page.goto(f"{base}/board/jobs")
    assert "/board/login" in page.url
    for path in (f"/board/jobs/{job_id}/dag", f"/board/jobs/{job_id}/charts", "/board/site"):
        assert api(stack, GUEST, path, token="not-" + TOKEN).status_code == 401
    refused = httpx.get(
        f"{base}/board/jobs/{job_id}",
        headers={"Authorization": f"Bearer x{TOKEN}"},
        follow_redirects=False,
    )
    assert refused.status_code == 303 and job_id not in refused.text
    context.close()


AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"


def test_the_pages_pass_the_wcag_aa_checks_and_work_from_the_keyboard(
    stack: Stack, browser: Any, job_id: str
) -> None:
    # axe-core is injected into the page, which the board's CSP forbids: this context ignores it
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    page = login(context, stack.guest.base_url, TOKEN)
    base = stack.guest.base_url
    found = {}
    # The job page (the largest: DAG, panels, charts) and the login form by default; every
    # page with FEDMQ_BOARD_FULL=1 (axe takes seconds per page on a loaded machine)
    paths = [f"/board/jobs/{job_id}", "/board/login"]
    if os.environ.get("FEDMQ_BOARD_FULL") == "1":
        paths += ["/board/jobs", "/board/data", "/board/serving", "/board/audit", "/board/site"]
    for path in paths:
        page.goto(base + path)
        page.add_script_tag(path=str(AXE))
        result = page.evaluate(
            "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa']},"
            " resultTypes: ['violations']})"
        )
        found[path] = [
            (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
            for v in result["violations"]
            if v["impact"] in ("serious", "critical")
        ]
    assert all(v == [] for v in found.values()), found

    # Keyboard: the skip link comes first, then the navigation; a DAG node is a link that
    # takes the reader to its component's section
    page.goto(f"{base}/board/jobs/{job_id}")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.focus('svg.dag a[data-component="eval_0"]')
    page.keyboard.press("Enter")
    page.wait_for_function("location.hash === '#component-eval_0'")
    context.close()
