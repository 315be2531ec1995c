"""Helpers the browser tests share: where Chromium and the screenshots are, and how to wait
for, look at and navigate a Streamlit page. (tests/e2e/conftest.py puts this folder on
sys.path, so test files import it by name.)"""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def idle(page, timeout: float = 120) -> None:
    """Wait until streamlit has finished the current run (no 'Running...' widget)."""
    page.wait_for_timeout(300)
    deadline = time.time() + timeout
    widget = page.locator('[data-testid="stStatusWidget"]')
    while time.time() < deadline:
        if not widget.is_visible():
            page.wait_for_timeout(300)
            if not widget.is_visible():
                return
        page.wait_for_timeout(250)
    raise AssertionError("the app kept running")


def go(page, server: dict, path: str, ws: str = "demo") -> None:
    """Open a page of the app for workspace `ws` and wait for it to render."""
    page.goto(f"{server['url']}/{path}?ws={ws}")
    page.get_by_role("heading", level=1).first.wait_for()
    idle(page)


def shot(page, name: str) -> None:
    idle(page)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def no_error(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, "a traceback is shown"
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, errors.all_inner_texts()
