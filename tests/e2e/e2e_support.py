"""Helpers the browser tests share: where Chromium and the screenshots are, and how to wait
for, look at and navigate a Streamlit page. (tests/e2e/conftest.py puts this folder on
sys.path, so test files import it by name.)

Every wait is on what the page shows: `wait_until` polls a condition on the page, `idle`
waits for streamlit to have finished its run (no status widget, no stale element, seen twice
in a row). The polls are short; only their total has a limit, so a loaded machine is slower,
never wrong.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
POLL_MS = 150
JOB_TIMEOUT_S = 900


@contextlib.contextmanager
def browser_page(height: int, timeout_ms: int) -> Iterator[object]:
    """A page in headless Chromium, 1500 px wide and `height` tall, that accepts downloads and
    waits up to `timeout_ms` for an element; the browser is closed after."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        ctx = browser.new_context(viewport={"width": 1500, "height": height},
                                  accept_downloads=True)
        pg = ctx.new_page()
        pg.set_default_timeout(timeout_ms)
        try:
            yield pg
        finally:
            ctx.close()
            browser.close()


def wait_until(page, condition: Callable[[], object], what: str, timeout: float = 180) -> None:
    """Poll `condition()` (a look at the page) until it holds; fail naming `what`."""
    deadline = time.time() + timeout
    while True:
        try:
            held = condition()
        except Exception:  # noqa: BLE001 - an element mid-rerender: look again
            held = False
        if held:
            return
        if time.time() > deadline:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "failed_wait.png"), full_page=True)
            raise AssertionError(f"the page never showed: {what} (test-artifacts/e2e/"
                                 "failed_wait.png)")
        page.wait_for_timeout(POLL_MS)


def _busy(page) -> bool:
    return bool(page.locator('[data-testid="stStatusWidget"]').is_visible()
                or page.locator('[data-stale="true"]').count())


def idle(page, timeout: float = 300) -> None:
    """Wait until streamlit has finished the current run: not busy on two looks in a row."""
    calm = 0
    deadline = time.time() + timeout
    while calm < 2:
        calm = 0 if _busy(page) else calm + 1
        if time.time() > deadline:
            raise AssertionError("the app kept running")
        page.wait_for_timeout(POLL_MS)


def go(page, server: dict, path: str, ws: str = "demo") -> None:
    """Open a page of the app for workspace `ws` and wait for it to render."""
    page.goto(f"{server['url']}/{path}?ws={ws}")
    page.get_by_role("heading", level=1).first.wait_for()
    idle(page)


def click_key(page, key: str, expander: str | None = None) -> None:
    """Click the button streamlit renders for widget `key` (unambiguous, unlike its label),
    opening the expander it sits in first when that is collapsed."""
    button = page.locator(f".st-key-{key} button").first
    if expander and not button.is_visible():
        page.locator('[data-testid="stExpander"] summary').filter(has_text=expander).first.click()
        button.wait_for()
    button.click()
    idle(page)


def metric(page, label: str) -> str:
    """The value of the st.metric labelled `label` ('' when it is not shown)."""
    for m in page.locator('[data-testid="stMetric"]').all():
        lab = m.locator('[data-testid="stMetricLabel"]').inner_text().strip()
        if lab == label:
            return m.locator('[data-testid="stMetricValue"]').inner_text().strip()
    return ""


def wait_job(page, title: str) -> None:
    """Wait for the job panel to say the job finished; fail at once when it says it failed."""
    done = page.get_by_text(re.compile(rf"{re.escape(title)} finished")).first
    bad = page.locator('[data-testid="stAlertContentWarning"]').filter(
        has_text=re.compile(rf"{re.escape(title)} (failed|stopped|was cancelled)"))

    def finished() -> bool:
        if bad.count():
            raise AssertionError(bad.first.inner_text())
        return done.is_visible()

    deadline = time.time() + JOB_TIMEOUT_S
    while not finished():
        if time.time() > deadline:
            raise AssertionError(f"{title} did not finish in time")
        page.wait_for_timeout(POLL_MS * 4)
    idle(page)


def shot(page, name: str) -> None:
    idle(page)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def no_error(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, "a traceback is shown"
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, errors.all_inner_texts()


def pick_option(page, key: str, index: int) -> None:
    """Choose option `index` of the select box `key`, opening it again whenever a rerun of the
    page closed it before its options showed."""
    options = page.get_by_role("option")

    def shown() -> bool:
        if options.count() <= index:
            box = page.locator(f".st-key-{key} [data-baseweb='select']")
            (box.first if box.count() else page.locator(f".st-key-{key}")).click()
        return options.count() > index

    idle(page)
    wait_until(page, shown, f"the options of {key}")
    options.nth(index).click()
