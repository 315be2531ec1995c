"""A new user's walk with their own data, in a real browser (issue 13): a workspace made from
the sidebar, an Alpaca-style CSV with multi-line fields and named id / source columns (made
from the bundled demo pool at test time, so it never skips for want of data), an MMLU-layout
target folder, every job (exhaustive scoring cancelled and resumed), K auto then a fixed K, two
runs, Reset, Play then Pause, pin / reject / ban / unban with their marks, and the export of
the chosen run with its sorted.csv indices checked against the pool's records; then (issue
23) the sidebar following a running job, pins beyond the slots with both recalls, select all
then Unpin, and a download after an edit.

Every wait is on what the page shows (e2e_support.wait_until / idle), never a fixed sleep.
"""

from __future__ import annotations

import csv
import json
import re

import pytest
from e2e_support import (
    ARTIFACTS,
    browser_page,
    click_key,
    go,
    idle,
    metric,
    no_error,
    pick_option,
    shot,
    wait_job,
    wait_until,
)

from clusterucb_core.workspace import Workspace

pytestmark = pytest.mark.e2e

N_ROWS = 240
WS = "mine"


def _alpaca_csv(path) -> None:
    """Alpaca rows (instruction / input / output) with multi-line fields, from the demo pool;
    ids in `uid`, sources in `category`."""
    from clusterucb_core.config import DEMO_POOL

    rows = []
    with open(DEMO_POOL, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
                user = next(m["content"] for m in rec["messages"] if m["role"] == "user")
                answer = next(m["content"] for m in rec["messages"] if m["role"] == "assistant")
            except (ValueError, KeyError, StopIteration, TypeError):
                continue
            if not answer.strip():
                continue
            i = len(rows)
            rows.append({"uid": f"case-{i:04d}", "category": rec.get("dataset", "misc"),
                         "instruction": f"{user}\nAnswer step by step.",
                         "input": "" if i % 3 else "Context line one.\nContext line two.",
                         "output": answer + "\n\nThat is the answer."})
            if len(rows) == N_ROWS:
                break
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _mmlu_folder(root):
    """LESS's MMLU dev layout: dev/<subject>_dev.csv, no header, question, A-D, answer."""
    dev = root / "mmlu" / "dev"
    dev.mkdir(parents=True)
    for subject in ("algebra", "astronomy"):
        with open(dev / f"{subject}_dev.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            for i in range(4):
                w.writerow([f"{subject} question {i}: what is {i} + {i}?", str(2 * i),
                            str(i), str(i + 1), str(3 * i), "A"])
    return root / "mmlu"


@pytest.fixture(scope="module")
def server(tmp_path_factory, start_app):
    base = tmp_path_factory.mktemp("user")
    root = base / "workspaces"
    url = start_app(base, {"CLUSTERUCB_WORKSPACES": str(root),
                           "CLUSTERUCB_HOME": str(base / "home")})
    return {"url": url, "root": root, "base": base}


@pytest.fixture(scope="module")
def page(server):
    with browser_page(1900, 120_000) as pg:
        yield pg


def _round(page) -> int:
    text = metric(page, "Round")
    return -1 if text.strip() == "-" else int(text)


def _radio(page, option: str) -> None:
    page.get_by_test_id("stRadioGroup").get_by_text(option, exact=True).first.click()


def _grid(page, key: str):
    """The st.dataframe whose widget key is `key` or starts with it (the Curate table's key
    follows the rows it lists)."""
    grid = page.locator(f"[class*='st-key-{key}'] [data-testid='stDataFrameResizable']").first
    grid.scroll_into_view_if_needed()
    return grid.bounding_box()


def _select_rows(page, key: str, n: int) -> None:
    """Tick the first `n` rows of the st.dataframe with widget key `key` (its row markers)."""
    box = _grid(page, key)
    for i in range(n):
        page.mouse.click(box["x"] + 18, box["y"] + 35 * (i + 1) + 17)
        idle(page)


def _select_all(page, key: str) -> None:
    """Tick every row of the table (the tick in its header)."""
    box = _grid(page, key)
    page.mouse.click(box["x"] + 18, box["y"] + 17)
    idle(page)


def _sidebar_job(page, title: str) -> tuple[int, int] | None:
    """(done, total) the sidebar shows for the running job `title`, None when it shows none."""
    text = page.locator('[data-testid="stSidebar"]').inner_text()
    m = re.search(rf"{re.escape(title)}: \d+% \(([\d,]+) / ([\d,]+)", text)
    return None if m is None else (int(m[1].replace(",", "")), int(m[2].replace(",", "")))


def _downloaded_records(page, key: str) -> list[dict]:
    """Download the file of button `key` (a prefix of its key) and read it as the pool's
    own CSV."""
    with page.expect_download() as d:
        page.locator(f"[class*='st-key-{key}'] button").first.click()
    with open(d.value.path(), newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_user_data_flow(page, server, tmp_path_factory, tiny_model_dir):
    data = tmp_path_factory.mktemp("data")
    pool_csv = data / "alpaca.csv"
    _alpaca_csv(pool_csv)
    target = _mmlu_folder(data)

    # -- a new workspace from the sidebar: the URL and the picker follow (bug 1)
    go(page, server, "", ws="demo")  # the root first: a deep link as the first request
    page.get_by_role("button", name="New workspace").click()   # skips st.navigation
    page.locator(".st-key-ws_new_name input").fill(WS)
    page.locator(".st-key-ws_new_name input").press("Enter")
    click_key(page, "ws_create")
    wait_until(page, lambda: f"ws={WS}" in page.url, "the URL names the new workspace")
    picker = page.locator(f".st-key-ws_picker_{WS}").first
    wait_until(page, lambda: picker.locator("input").input_value() == WS, "the picker")
    page.keyboard.press("Escape")  # close the New workspace popover
    wait_until(page, lambda: page.get_by_text("Guided tour").count() == 0,
               "no guided tour outside the demo")
    ws_root = server["root"] / WS
    Workspace.open(ws_root).update_config("model", {"name_or_path": str(tiny_model_dir),
                                                    "max_length": 128})

    # -- the pool: a local CSV with multi-line fields, id and source columns named
    go(page, server, "", ws=WS)  # the Pool is the default page: its URL is the root
    _radio(page, "Local path")
    idle(page)
    page.locator(".st-key-pool_path input").fill(str(pool_csv))
    page.locator(".st-key-pool_id_field input").fill("uid")
    page.locator(".st-key-pool_source_field input").fill("category")
    page.locator(".st-key-pool_source_field input").press("Enter")
    idle(page)
    click_key(page, "pool_use_path")
    wait_until(page, lambda: metric(page, "Usable rows") == f"{N_ROWS:,}", "the pool loads")
    assert metric(page, "Format") == "csv" and metric(page, "Shape") == "alpaca"
    no_error(page)

    # -- the target: an MMLU dev folder
    go(page, server, "target", ws=WS)
    _radio(page, "LESS folder or local file")
    idle(page)
    page.locator(".st-key-target_path input").fill(str(target))
    page.locator(".st-key-target_path input").press("Enter")
    idle(page)
    click_key(page, "target_use_path")
    wait_until(page, lambda: metric(page, "Subtasks") == "2", "the target loads")
    no_error(page)

    # -- every job; exhaustive scoring is cancelled, then resumed (item 8)
    go(page, server, "features", ws=WS)
    click_key(page, "btn_warmup")
    cfeat = page.locator(".st-key-btn_cfeat button").first
    wait_until(page, cfeat.is_disabled, "the other job buttons wait while the warm-up runs")
    wait_job(page, "Warm-up")
    click_key(page, "btn_cfeat")
    wait_job(page, "Cluster features")
    click_key(page, "btn_exh")
    cancel = page.locator(".st-key-job_exhaustive_cancel button").first
    cancel.wait_for()
    cancel.click()
    page.get_by_text("Exhaustive scoring was cancelled").first.wait_for()
    click_key(page, "job_exhaustive_resume")
    wait_until(page, lambda: page.get_by_text("Exhaustive scoring was cancelled").count() == 0,
               "the resumed job running")
    # the sidebar follows the running job (issue 23, item 4), and the other job buttons wait
    wait_until(page, lambda: (_sidebar_job(page, "Exhaustive scoring") or (0, 0))[0] > 0,
               "the sidebar counts the job's rows")
    first = _sidebar_job(page, "Exhaustive scoring")
    page.screenshot(path=str(ARTIFACTS / "user_sidebar_job.png"))  # mid-job: no idle wait
    assert page.locator(".st-key-btn_cfeat button").first.is_disabled()
    wait_until(page, lambda: (_sidebar_job(page, "Exhaustive scoring") or (0, 0))[0] > first[0]
               or _sidebar_job(page, "Exhaustive scoring") is None,
               "the sidebar's count moves on (or the job ends)")
    wait_job(page, "Exhaustive scoring")
    wait_until(page, lambda: _sidebar_job(page, "Exhaustive scoring") is None,
               "the sidebar drops the finished job")
    no_error(page)

    # -- clusters: K auto (by the rule; a warning when a scanned K looks poor), a fixed K; the map
    go(page, server, "clusters", ws=WS)
    _radio(page, "auto: pick K by the rule")
    idle(page)
    click_key(page, "cl_run")
    wait_job(page, "Clustering")
    go(page, server, "clusters", ws=WS)
    wait_until(page, lambda: metric(page, "Clusters (arms)") != "", "the clusters")
    k_auto = int(metric(page, "Clusters (arms)"))
    page.locator('[data-testid="stExpander"] summary').filter(
        has_text="Cluster the pool").first.click()
    _radio(page, "fixed K")
    idle(page)
    page.locator(".st-key-cl_k input").fill("5")
    page.locator(".st-key-cl_k input").press("Enter")
    idle(page)
    click_key(page, "cl_run")
    wait_job(page, "Clustering")
    click_key(page, "cl_map", expander="Cluster the pool")
    wait_job(page, "UMAP map")
    go(page, server, "clusters", ws=WS)
    wait_until(page, lambda: metric(page, "Clusters (arms)") == "5", "K=5 is shown")
    assert k_auto >= 2

    # -- two runs, Reset, Play then Pause
    go(page, server, "rounds", ws=WS)
    batch = page.get_by_label("Draw batch (rows per round)", exact=True)
    batch.fill("1")  # many short rounds: Play cannot reach the end before Pause
    batch.press("Tab")
    page.get_by_role("button", name="Start a new run").click()
    idle(page)
    click_key(page, "ucb_step1")  # the cold start; the button relabels at once (bug 4)
    wait_until(page, lambda: page.locator(".st-key-ucb_step1").inner_text().strip()
                == "Step 1 round", "the step button relabels")
    click_key(page, "ucb_play_btn")
    wait_until(page, lambda: _round(page) >= 2, "Play advances the rounds")
    click_key(page, "ucb_pause_btn")
    page.locator(".st-key-ucb_play_btn").wait_for()
    paused = _round(page)
    # within two polls of the Pause nothing more moves: a manual step adds exactly one round
    click_key(page, "ucb_step1")
    wait_until(page, lambda: _round(page) == paused + 1, "one manual step")
    idle(page)
    assert _round(page) == paused + 1, "Play kept running after Pause"
    first_run = page.locator(".st-key-ucb_run_pick_").count()  # one run: no picker yet
    assert first_run == 0
    page.locator('[data-testid="stExpander"] summary').filter(has_text="Settings").first.click()
    seed = page.get_by_label("Seed", exact=True)
    seed.fill("7")
    seed.press("Tab")
    page.get_by_role("button", name="Start a new run").click()
    wait_until(page, lambda: metric(page, "Rows scored").startswith("0 /"), "the new run shows")
    picker = page.locator("[class*='st-key-ucb_run_pick_']").first
    wait_until(page, lambda: "seed 7" in picker.locator("input").input_value(),
               "the picker names the run by its settings")
    click_key(page, "ucb_step1")
    wait_until(page, lambda: not metric(page, "Rows scored").startswith("0 /"), "cold start")
    click_key(page, "ucb_reset")
    wait_until(page, lambda: metric(page, "Rows scored").startswith("0 /"), "Reset shows it")
    runs = [p for p in (ws_root / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 3  # the two played runs and the fresh one after Reset
    click_key(page, "ucb_end")
    wait_until(page, lambda: page.get_by_text("Finished:").count() > 0, "the run ends")

    # -- pin and reject drawn rows, ban and unban a cluster: toasts, marks, undo
    page.get_by_role("tab", name="Last round's rows").click()
    last_key = next(c for c in page.locator("[class*='st-key-ucb_last_']").first
                    .get_attribute("class").split() if c.startswith("st-key-ucb_last_"))
    _select_rows(page, last_key[len("st-key-"):], 1)  # draw batch 1: the last round's row
    click_key(page, "ucb_pin")
    wait_until(page, lambda: "Undo: pin 1 row" in page.locator(".st-key-ucb_undo").inner_text(),
               "the Undo of the pin")
    go(page, server, "clusters", ws=WS)
    wait_until(page, lambda: metric(page, "Pinned / rejected rows").startswith("1 /"),
               "the pins count")
    page.get_by_text("pinned (1)").first.wait_for()  # the map's marker legend
    pick_option(page, "cl_ban_pick", 1)
    page.keyboard.press("Escape")
    idle(page)
    click_key(page, "cl_ban")
    wait_until(page, lambda: metric(page, "Banned clusters") == "1", "the ban counts")
    shot(page, "user_clusters_marked")
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    chart.scroll_into_view_if_needed()
    chart.screenshot(path=str(ARTIFACTS / "user_clusters_map_marked.png"))
    pick_option(page, "cl_ban_pick", 1)
    page.keyboard.press("Escape")
    idle(page)
    click_key(page, "cl_unban")
    wait_until(page, lambda: metric(page, "Banned clusters") == "0", "the unban counts")
    no_error(page)

    # -- Curate & Export: the chosen run, by name; a rejection; sorted.csv indexes records
    go(page, server, "export", ws=WS)
    named = page.locator('[data-testid="stMarkdownContainer"]').filter(has_text="Run:").first
    wait_until(page, lambda: "seed 7" in named.inner_text(), "the exported run, by name")
    _select_rows(page, "ex_table", 1)
    click_key(page, "ex_reject")
    wait_until(page, lambda: metric(page, "Rejected") == "1", "the rejection counts")
    shot(page, "user_export")
    click_key(page, "ex_save")
    page.get_by_text("Export written").first.wait_for()
    no_error(page)
    meta = json.loads((ws_root / "workspace.json").read_text())
    out = ws_root / "exports" / meta["current_run"]
    with open(pool_csv, newline="", encoding="utf-8") as fh:
        records = list(csv.DictReader(fh))
    lines = (out / "sorted.csv").read_text().splitlines()[1:]
    assert lines
    with open(out / "selection.csv", newline="") as fh:
        selection = {int(r["row"]): r for r in csv.DictReader(fh)}
    for line in lines:
        _, idx, _ = line.split(", ")
        i = int(idx)
        assert 0 <= i < N_ROWS  # a record index, not a physical line (up to ~3x N here)
        if i in selection:
            assert selection[i]["id"] == records[i]["uid"]  # the row's own record

    # -- pins beyond the slots (issue 23): every drawn row pinned, more than top-p's 12 slots
    slots = N_ROWS * 5 // 100
    page.locator(".st-key-ex_only label").first.click()  # every drawn row, not the selection
    idle(page)
    _select_all(page, "ex_table")
    click_key(page, "ex_pin")
    wait_until(page, lambda: int(metric(page, "Pinned") or 0) > slots, "the pins count")
    pinned = int(metric(page, "Pinned"))
    warn = page.locator('[data-testid="stAlertContentWarning"]').filter(
        has_text=f"{pinned} pinned rows for {slots} top-p slots")
    wait_until(page, lambda: warn.count() > 0, "the warning of pins beyond the slots")
    assert metric(page, "Selected") == str(pinned)  # every pin kept, nothing else
    # -- the saved export now predates the edit: the page says so, and a new save fixes it
    stale = page.get_by_text("The saved export is older than the selection below")
    wait_until(page, lambda: stale.count() > 0, "the stale export is marked")
    old = _downloaded_records(page, "ex_dl_selected")
    assert len(old) != pinned  # the saved file, as the warning says
    shot(page, "user_pins_over_slots")
    go(page, server, "rounds", ws=WS)
    page.get_by_role("tab", name="Against exhaustive").click()
    idle(page)
    assert page.get_by_text(f"{pinned} pinned rows for {slots} top-p slots").count()
    assert metric(page, "Bandit recall").endswith("%")
    assert metric(page, "Curated recall").endswith("%")
    shot(page, "user_ucb_two_recalls")
    # -- select all, then Unpin: the table shrinks under the selection, the page stays whole
    go(page, server, "export", ws=WS)
    _select_all(page, "ex_table")
    click_key(page, "ex_unpin")
    wait_until(page, lambda: metric(page, "Pinned") == "0", "every pin undone")
    no_error(page)
    assert metric(page, "Selected") == str(slots)
    page.locator(".st-key-ex_save button").first.wait_for()  # the export section is there
    shot(page, "user_unpin_all")
    # -- a download after the edit: save again, the files are the live selection
    click_key(page, "ex_save")
    wait_until(page, lambda: stale.count() == 0, "the new save is current")
    new = _downloaded_records(page, "ex_dl_selected")
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(new) == slots == manifest["counts"]["n_selected"]
    assert sorted(r["uid"] for r in new) == sorted(manifest["selected"]["ids"])  # pool order
    no_error(page)
