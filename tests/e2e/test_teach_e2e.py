"""The teaching pages in a real browser: the guided tour, the playground (play, reveal the
truth), the policy race (and its PNG download), and run comparison.

Needs Debian's Chromium at /usr/bin/chromium (skipped with the reason otherwise). Screenshots
go to test-artifacts/e2e/teach_*.png. The server gets its own workspaces folder and its own
CLUSTERUCB_HOME, so the tour starts fresh and nothing touches the real home.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from e2e_support import (
    ARTIFACTS,
    ROOT,
    browser_page,
    go,
    idle,
    no_error,
    shot,
    wait_until,
)

pytestmark = pytest.mark.e2e



def _fixture_workspace(root: Path) -> None:
    """The app tests' synthetic workspace ('fixture') plus two saved runs to compare."""
    import numpy as np

    spec = importlib.util.spec_from_file_location("_teach_app_conftest",
                                                  ROOT / "tests" / "app" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.build_workspace(root)
    from clusterucb_core.clustering.clusterset import load_clusters
    from clusterucb_core.config import SelectionSpec
    from clusterucb_core.selection.oracle import TableOracle
    from clusterucb_core.selection.run import SelectionRun
    from clusterucb_core.workspace import Workspace

    ws = Workspace.open(root / "fixture")
    labels = load_clusters(ws, "k4").labels
    scores = np.load(ws.root / "scores" / "exhaustive.npy")
    for run_id, beta, budget in (("run-beta0", 0.0, 0.2), ("run-beta2", 2.0, 0.4)):
        SelectionRun(labels, TableOracle(scores),
                     SelectionSpec(beta=beta, budget=budget, top_p=0.1, seed=3),
                     ws.runs(run_id), meta={"clustering": "k4",
                                            "reward": "exhaustive"}).run_to_end()


@pytest.fixture(scope="module")
def server(tmp_path_factory, start_app):
    base = tmp_path_factory.mktemp("e2e_teach")
    root = base / "workspaces"
    _fixture_workspace(root)
    url = start_app(base, {"CLUSTERUCB_WORKSPACES": str(root),
                           "CLUSTERUCB_HOME": str(base / "home")})
    return {"url": url, "root": root, "home": base / "home"}


@pytest.fixture(scope="module")
def page(server):
    with browser_page(2200, 60_000) as pg:
        # A deep link (/playground) as the server's very first request is served in
        # Streamlit's old pages/ mode (no entry script, no sidebar) until one session has
        # run app.py's st.navigation; open the root once, as a user's first visit does.
        pg.goto(server["url"] + "/?ws=demo")
        pg.get_by_role("heading", level=1).first.wait_for()
        idle(pg)
        yield pg


def _rows_scored(page) -> list[int]:
    """The 'Rows scored' metrics (one per policy), as numbers of rows."""
    out = []
    for m in page.locator('[data-testid="stMetric"]').all():
        text = m.inner_text()
        if text.startswith("Rows scored"):
            out.append(int(re.search(r"([\d,]+)\s*/", text).group(1).replace(",", "")))
    return out


def test_guided_tour(page, server):
    go(page, server, "")  # the first visit: the default page
    card = page.get_by_text("Guided tour · 1/")
    card.wait_for()
    shot(page, "teach_tour")
    page.get_by_role("button", name="Next ›").click()
    idle(page)
    page.get_by_text("Guided tour · 2/").wait_for()
    page.get_by_role("button", name="Next ›").click()  # step 3 opens the Target page
    idle(page)
    page.get_by_text("Guided tour · 3/").wait_for()
    assert "/target" in page.url
    page.get_by_role("button", name="Skip the tour").click()
    idle(page)
    page.get_by_role("button", name="Restart the guided tour").wait_for()
    assert '"done": true' in (server["home"] / "tour.json").read_text()
    no_error(page)


def test_playground_play_and_reveal(page, server):
    go(page, server, "playground")
    no_error(page)
    wait_until(page, lambda: _rows_scored(page) == [0, 0], "two fresh runs")
    page.get_by_role("button", name="Cold start", exact=True).click()
    wait_until(page, lambda: len(set(_rows_scored(page))) == 1 and _rows_scored(page)[0] > 0,
               "both cold starts")
    idle(page)
    after_cold = _rows_scored(page)
    page.get_by_role("button", name="Step N rounds").click()  # 5 rounds
    wait_until(page, lambda: all(n > c for n, c in zip(_rows_scored(page), after_cold)),
               "five more rounds in both runs")
    idle(page)
    page.locator('[data-testid="stCheckbox"]').filter(has_text="Reveal the truth").click()
    idle(page)
    page.get_by_text("The best arm is").wait_for()
    best = [m.inner_text() for m in page.locator('[data-testid="stMetric"]').all()
            if m.inner_text().startswith("Draws on the best arm")]
    draws = [int(re.search(r"arm\s+(\d+)", t).group(1)) for t in best]
    assert draws[0] > draws[1], best  # UCB has found the gem, random has not
    no_error(page)
    shot(page, "teach_playground")
    page.get_by_role("button", name="▶ Play").click()
    wait_until(page, lambda: _rows_scored(page) == [194, 194], "both runs at the budget",
               timeout=300)
    no_error(page)
    shot(page, "teach_playground_end")


def test_race_and_png_download(page, server):
    go(page, server, "race")
    page.get_by_text("After scoring").wait_for(timeout=120_000)
    no_error(page)
    text = page.get_by_text("After scoring").inner_text()
    for policy in ("ucb_beta", "random", "oracle", "thompson"):
        assert policy in text
    shot(page, "teach_race")
    with page.expect_download() as dl:
        page.get_by_role("button", name="Figure PNG").click()
    path = dl.value.path()
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = ARTIFACTS / "teach_race_download.png"
    dl.value.save_as(str(target))


def test_compare_runs(page, server):
    go(page, server, "compare", ws="fixture")
    no_error(page)
    page.get_by_text("Jaccard overlap").wait_for()
    page.get_by_text("Selected rows per cluster").first.wait_for()
    shot(page, "teach_compare")
