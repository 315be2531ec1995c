"""The whole demo flow in a real browser: pool -> target -> features -> clusters -> 10 UCB
rounds -> export, against `streamlit run app.py` on a free localhost
port.

Needs Debian's Chromium at /usr/bin/chromium (skipped with the reason otherwise). Screenshots
of every page go to test-artifacts/e2e/. Uses the bundled demo model when it has been built,
else the tiny test model (tests/conftest.py), so the flow runs on a fresh checkout too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from e2e_support import (
    ARTIFACTS,
    browser_page,
    click_key,
    go,
    idle,
    no_error,
    shot,
    wait_job,
)

from clusterucb_core.workspace import Workspace

pytestmark = pytest.mark.e2e

@pytest.fixture(scope="module")
def server(tmp_path_factory, start_app):
    root = tmp_path_factory.mktemp("e2e") / "workspaces"
    url = start_app(root.parent, {"CLUSTERUCB_WORKSPACES": str(root)})
    return {"url": url, "root": root, "log": root.parent / "server.log"}


@pytest.fixture(scope="module")
def page(server):
    with browser_page(1700, 60_000) as pg:
        yield pg


def _use_small_model_if_needed(server, request) -> str:
    """The demo workspace's model: the bundled one when built, else the tiny test model."""
    from clusterucb_core.config import DEMO_MODEL

    if (DEMO_MODEL / "config.json").exists():
        return str(DEMO_MODEL)
    folder = request.getfixturevalue("tiny_model_dir")  # tests/conftest.py
    Workspace.open(server["root"] / "demo").update_config("model",
                                                          {"name_or_path": str(folder)})
    return str(folder)


def test_demo_flow(page, server, request):
    # 1. Pool: the demo workspace opens by default; use the bundled pool
    page.goto(server["url"])
    page.get_by_role("heading", name="Pool", exact=True).wait_for()
    idle(page)
    assert "ws=demo" in page.url
    page.get_by_role("button", name="Use the demo pool").click()
    idle(page)
    page.get_by_text("Usable rows").first.wait_for()
    page.get_by_role("tab", name="Sources").click()
    no_error(page)
    shot(page, "01_pool")
    model = _use_small_model_if_needed(server, request)

    # 2. Target
    page.get_by_role("link", name="2 · Target").click()
    page.get_by_role("heading", name="Target", exact=True).wait_for()
    idle(page)
    page.get_by_role("button", name="Use this target").click()
    idle(page)
    page.get_by_text("Examples per subtask").first.wait_for()
    no_error(page)
    shot(page, "02_target")

    # 3. Model & features: warm-up, then cluster features (background jobs)
    go(page, server, "features")
    click_key(page, "btn_warmup")
    wait_job(page, "Warm-up")
    go(page, server, "features")
    click_key(page, "btn_cfeat")
    wait_job(page, "Cluster features")
    no_error(page)
    shot(page, "03_features")

    # 4. Clusters: k-means, then the UMAP map
    go(page, server, "clusters")
    click_key(page, "cl_run", expander="Cluster the pool")
    wait_job(page, "Clustering")
    go(page, server, "clusters")  # the finished job reran the page; start from a fresh load
    click_key(page, "cl_map", expander="Cluster the pool")
    wait_job(page, "UMAP map")
    go(page, server, "clusters")
    page.get_by_text("Clusters (arms)").first.wait_for()
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    chart.wait_for()
    no_error(page)
    shot(page, "04_clusters")
    chart.scroll_into_view_if_needed()
    chart.screenshot(path=str(ARTIFACTS / "04_clusters_map.png"))

    # 5. UCB rounds: new run, cold start, 10 rounds
    go(page, server, "rounds")
    start = page.get_by_role("button", name="Start a new run")
    if not start.is_visible():  # a prebuilt demo may hold runs: the settings are collapsed
        page.locator('[data-testid="stExpander"] summary').filter(
            has_text="Settings").first.click()
    start.click()
    idle(page)
    page.get_by_role("button", name="Cold start", exact=True).click()
    idle(page, timeout=600)
    page.get_by_role("button", name="Step N rounds").click()  # N defaults to 10
    idle(page, timeout=600)
    page.get_by_text("Last round (10)").first.wait_for()
    scored = page.get_by_test_id("stMetric").filter(has_text="Rows scored").first.inner_text()
    assert "/" in scored
    no_error(page)
    shot(page, "05_rounds")

    # 6. Curate & export
    go(page, server, "export")
    page.get_by_role("button", name="Save export to the workspace").click()
    page.get_by_text("Export written").wait_for(timeout=300_000)
    idle(page)
    with page.expect_download() as dl:
        page.get_by_role("button", name="selected.jsonl").click()
    got = Path(dl.value.path()).read_bytes().splitlines()
    no_error(page)
    shot(page, "06_export")

    from clusterucb_core.config import DEMO_POOL

    pool_lines = set(DEMO_POOL.read_bytes().splitlines())
    exports = sorted((server["root"] / "demo" / "exports").iterdir(),
                     key=lambda p: (p / "manifest.json").stat().st_mtime)
    on_disk = (exports[-1] / "selected.jsonl").read_bytes().splitlines()
    manifest = json.loads((exports[-1] / "manifest.json").read_text())
    assert got == on_disk and len(on_disk) > 0
    assert set(on_disk) <= pool_lines  # the user's own lines, byte for byte
    assert manifest, model
