"""What a second new user's walk found in the app (issue 23, items 1-9), each seen through
AppTest on the synthetic workspace (no model)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from clusterucb_core.runtime import jobs
from clusterucb_core.selection.curation import Ledger
from clusterucb_core.selection.oracle import recall
from clusterucb_core.selection.run import LedgerView, select_top
from clusterucb_core.workspace import Workspace
from tests.app.conftest import frame, metric, ok, select_rows

START = "FormSubmitter:ucb_settings-Start a new run"
SLOTS = 6  # floor(120 x 0.05)


def _ws(app_env) -> Workspace:
    return Workspace.open(app_env.root / "fixture", create=False)


def _finished_run(app_env):
    """A run played to the end on the UCB page (exhaustive rewards); its AppTest."""
    at = app_env("pages/5_rounds.py")
    at.run()
    at.button(key=START).click().run()
    at.button(key="ucb_end").click().run()
    ok(at)
    return at


def _lowest(app_env, n: int) -> list[int]:
    ex = np.load(app_env.root / "fixture" / "scores" / "exhaustive.npy")
    return np.argsort(ex)[:n].tolist()


def _pin(app_env, rows) -> None:
    Ledger(_ws(app_env).ledger_path, clustering="k4").pin(rows, note="test")


# ------------------------------------------------------------------------------ item 1
def test_select_all_then_unpin_keeps_the_page(app_env):
    """More pins than slots, every row of the table selected, Unpin: the table shrinks from 8
    rows to 6 and the page (Export included) still renders."""
    _finished_run(app_env)
    _pin(app_env, _lowest(app_env, 8))
    at = app_env("pages/6_export.py")
    at.run()
    ok(at)
    assert len(frame(at, "tags")) == 8
    select_rows(at, "ex_table", range(8))
    at.run()
    at.button(key="ex_unpin").click().run()
    ok(at)
    assert metric(at, "Pinned") == "0" and len(frame(at, "tags")) == SLOTS
    assert at.button(key="ex_save")  # the export section is still there
    assert at.button(key="ex_unpin").disabled  # the old selection is gone with its frame


# ------------------------------------------------------------------------------ item 2
def test_saved_export_older_than_an_edit_says_so(app_env):
    _finished_run(app_env)
    at = app_env("pages/6_export.py")
    at.run()
    at.button(key="ex_save").click().run()
    ok(at)
    assert not any("older than the selection" in w.value for w in at.warning)
    shown = frame(at, "tags")
    Ledger(_ws(app_env).ledger_path, clustering="k4").reject([int(shown["row"].iat[0])])
    at.run()
    ok(at)
    warn = [w.value for w in at.warning if "older than the selection" in w.value]
    assert warn and "1 row(s) added and 1 removed" in warn[0]
    at.button(key="ex_save").click().run()  # saving again clears it
    assert not any("older than the selection" in w.value for w in at.warning)


# ------------------------------------------------------------------------------ item 3
def test_bandit_and_curated_recall_side_by_side_and_pins_over_slots(app_env):
    at = _finished_run(app_env)
    ex = np.load(app_env.root / "fixture" / "scores" / "exhaustive.npy")
    pins = _lowest(app_env, 8)
    _pin(app_env, pins)
    at.run()
    at.tabs[3]  # "Against exhaustive" (AppTest renders every tab)
    ok(at)
    from clusterucb_app import rounds

    run = rounds.get(_ws(app_env), rounds.current_id(_ws(app_env)))
    own = select_top(run.scores, run.labels, SLOTS, LedgerView())
    assert metric(at, "Bandit recall") == f"{recall(own, ex, SLOTS):.1%}"
    assert metric(at, "Curated recall") == "0.0%"  # only the 8 worst pins
    assert metric(at, "Mass: bandit / curated").endswith(" / n/a")  # 8 rows for 6 slots
    assert any(f"8 pinned rows for {SLOTS} top-p slots" in w.value for w in at.warning)
    done = next(s.value for s in at.success if "Finished" in s.value)
    assert f"8 rows are selected: your 8 pins, more than the {SLOTS} top-p slots" in done
    for page in ("pages/6_export.py", "pages/4_clusters.py"):
        other = app_env(page)
        other.run()
        ok(other)
        assert any(f"8 pinned rows for {SLOTS} top-p slots" in w.value for w in other.warning)
    ex_at = app_env("pages/6_export.py")
    ex_at.run()
    assert metric(ex_at, "Selected") == "8"


# ------------------------------------------------------------------------------ item 4
def test_sidebar_ticks_only_finished_steps(app_env):
    ws = _ws(app_env)
    (ws.checkpoints() / "warmup-abc").mkdir(parents=True)  # a warm-up that has saved nothing
    from clusterucb_core.features.store import FeatureStore

    FeatureStore.create_or_open(ws.features("half"), 120, 4, {"half": 1}, "float32")
    for name in ws.list("features"):  # no store complete: the fixture's one loses a row
        if name != "half":
            store = FeatureStore.open(ws.features(name), writable=True)
            assert store.complete
    from clusterucb_app import state

    steps = dict(state.progress_summary(ws))
    assert not steps["Warm-up checkpoint"]
    assert steps["Features"]  # the fixture's complete store
    steps = dict(state.progress_summary(ws, ["cluster_features", "clusters"]))
    assert not steps["Features"] and not steps["Clusters"]  # still being made


def _running_job(ws: Workspace) -> str:
    """A job that counts slowly, seen running (it has reported progress)."""
    jid = jobs.start(ws, "exhaustive", target="tests.job_tasks:demo_task",
                     kwargs={"total": 100_000, "delay_s": 0.05}, title="Exhaustive scoring")
    while not (jobs.status(ws, jid).done or 0) and jobs.status(ws, jid).active:
        time.sleep(0.05)
    assert jobs.status(ws, jid).active
    return jid


def test_a_running_job_shows_its_count_in_the_sidebar_and_locks_the_job_buttons(app_env):
    ws = _ws(app_env)
    jid = _running_job(ws)
    try:
        home = app_env()  # AppTest shows the sidebar on the default page only
        home.run()
        ok(home)
        side = " ".join(c.value for c in home.sidebar.caption)
        assert "Exhaustive scoring:" in side and " / 100,000 rows)" in side
        at = app_env("pages/3_features.py")
        at.run()
        ok(at)
        for key in ("btn_warmup", "btn_cfeat", "btn_exh"):
            assert at.button(key=key).disabled, key
        cl = app_env("pages/4_clusters.py")
        cl.run()
        assert cl.button(key="cl_run").disabled and cl.button(key="cl_kscan_btn").disabled
    finally:
        jobs.cancel(ws, jid)
    at.run()
    assert not at.button(key="btn_cfeat").disabled


# ------------------------------------------------------------------------------ items 5, 9
def _map_select(at, rows) -> None:
    at.session_state["cl_map_fig"] = {"selection": {
        "points": [{"customdata": int(r), "point_index": int(r)} for r in rows],
        "box": [], "lasso": [], "point_indices": [int(r) for r in rows]}}


def test_map_pin_updates_the_counts_and_can_be_undone_after_a_reload(app_env):
    at = app_env("pages/4_clusters.py")
    at.run()
    ok(at)
    _map_select(at, [3, 4, 5])
    at.run()
    at.button(key="cl_pin").click().run()
    ok(at)
    assert metric(at, "Pinned / rejected rows") == "3 / 0"  # not stale
    table = frame(at, "curation")
    assert table["curation"].str.contains("pinned").any()
    # Undo is read from the ledger: a new session (a reload) still offers it
    again = app_env("pages/4_clusters.py")
    again.run()
    ok(again)
    _map_select(again, [3, 4, 5])
    again.run()
    assert again.button(key="cl_map_undo").label == "Undo: pin 3 rows"
    again.button(key="cl_map_undo").click().run()
    ok(again)
    assert metric(again, "Pinned / rejected rows") == "0 / 0"


def _act(at, rows, key: str) -> None:
    """Click `key` on the map's action panel with `rows` selected on the map (AppTest keeps
    a chart's selection for one run only; a browser sends it with every run)."""
    _map_select(at, rows)
    at.run()
    assert not at.button(key=key).disabled, key
    at.button(key=key).click().run()
    ok(at)


def test_map_panel_unpins_and_unrejects(app_env):
    at = app_env("pages/4_clusters.py")
    at.run()
    _map_select(at, [7, 8])
    at.run()
    assert at.button(key="cl_unpin").disabled and at.button(key="cl_unreject").disabled
    _act(at, [7, 8], "cl_pin")
    assert metric(at, "Pinned / rejected rows") == "2 / 0"
    _act(at, [7, 8], "cl_unpin")
    assert metric(at, "Pinned / rejected rows") == "0 / 0"
    _act(at, [7, 8], "cl_reject")
    assert metric(at, "Pinned / rejected rows") == "0 / 2"
    _act(at, [7, 8], "cl_unreject")
    assert metric(at, "Pinned / rejected rows") == "0 / 0"


# ------------------------------------------------------------------------------ item 6
def test_pinned_rows_rank_first_in_the_curate_table(app_env):
    _finished_run(app_env)
    worst = _lowest(app_env, 1)[0]
    _pin(app_env, [worst])
    at = app_env("pages/6_export.py")
    at.run()
    ok(at)
    shown = frame(at, "tags")
    assert int(shown["row"].iat[0]) == worst and shown["rank"].iat[0] == "1"
    assert shown["status"].iat[0] == "pinned" and len(shown) == SLOTS


# ------------------------------------------------------------------------------ item 7
def test_race_uses_a_runs_defaults_offers_the_draw_order_and_says_what_differs(app_env):
    from clusterucb_app import state

    ws = _ws(app_env)
    spec = state.settings(ws, "selection")
    at = app_env("pages/8_race.py")
    at.run()
    at.radio(key="race_source").set_value("workspace").run()
    ok(at)
    assert at.number_input(key="race_budget").value == pytest.approx(spec.budget)
    assert at.text_input(key="race_betas").value == f"{spec.beta:g}"
    order = at.selectbox(key="race_draw_order_workspace")
    assert spec.draw_order == "predicted" and order.value == "predicted"  # a run's default
    at.button(key="FormSubmitter:race_form-Run the race").click().run()
    ok(at)
    note = next(c.value for c in at.caption if "Compared with a run on the UCB page" in c.value)
    assert "seeds 0–4 (a run uses seed 42)" in note and "every other setting is the same" in note
    at.selectbox(key="race_draw_order_workspace").set_value("random")
    at.button(key="FormSubmitter:race_form-Run the race").click().run()
    ok(at)
    note = next(c.value for c in at.caption if "Compared with a run on the UCB page" in c.value)
    assert "draw order random here, predicted in a run" in note


# ------------------------------------------------------------------------------ item 8
def test_ucb_page_says_where_rewards_come_from_and_how_defaults_differ(app_env):
    ws = _ws(app_env)
    at = app_env("pages/5_rounds.py")
    at.run()
    ok(at)
    # a run's default draw order is "predicted", not the paper's
    assert any("except the draw order: predicted" in i.value for i in at.info)
    ws.update_meta(config={"selection": {"draw_order": "random"}})
    at.run()
    assert any("The defaults are the paper's (random draws" in i.value for i in at.info)
    at.button(key=START).click().run()
    ok(at)
    assert any("Rewards: the exhaustive scores table" in c.value for c in at.caption)


# ------------------------------------------------------------------------------ item 9
def test_find_then_more_like_this_and_clear(app_env):
    at = app_env("pages/4_clusters.py")
    at.run()
    at.text_input(key="cl_found_q").input("poems_1")
    at.button(key="cl_found_go").click().run()
    ok(at)
    like = at.button(key="cl_found_like")
    assert not like.disabled and "found rows" in like.label
    assert not at.button(key="cl_found_clear").disabled
    like.click().run()
    ok(at)
    assert any("like the 11 found" in c.value for c in at.caption)
    at.button(key="cl_found_clear").click().run()
    ok(at)
    assert at.button(key="cl_found_clear").disabled
    assert not any("ringed on the map" in c.value for c in at.caption)


def test_play_has_a_speed(app_env):
    from clusterucb_app import rounds_ui

    at = _finished_run(app_env)
    speed = at.select_slider(key="ucb_speed")
    assert speed.value == "normal" and list(speed.options) == [
        f"{k} ({v:g} s per round)" for k, v in rounds_ui.SPEEDS.items()]
    speed.set_value("slow").run()
    ok(at)
    assert at.session_state["ucb_speed"] == "slow"
