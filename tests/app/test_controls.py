"""The controls do what they say (issue 13): each test failed before its fix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clusterucb_core.workspace import Workspace
from tests.app.conftest import frame, metric, ok

START = "FormSubmitter:ucb_settings-Start a new run"


# ---------------------------------------------------------------------------------- workspaces
def test_new_workspace_opens_it_in_url_and_picker(app_env):
    """Bug 1: Create made the folder but the URL and the picker stayed on the old one."""
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import ENTRY

    at = AppTest.from_file(str(ENTRY), default_timeout=60)  # no preset session: the demo
    at.query_params["ws"] = "fixture"
    at.run()
    assert at.session_state["ws_picker_fixture"] == "fixture"
    at.sidebar.text_input(key="ws_new_name").set_value("mine")
    at.sidebar.button(key="ws_create").click().run()
    ok(at)
    assert (app_env.root / "mine" / "workspace.json").exists()
    # AppTest reruns only the page after a widget callback (not the sidebar), so the URL
    # and the picker's label are checked in the browser (tests/e2e/test_user_data_flow.py)
    assert at.session_state["ws_name"] == "mine"


def test_url_for_a_missing_workspace_does_not_create_it(app_env):
    """Item 15: ?ws=NAME for a name that does not exist silently created it."""
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import ENTRY

    at = AppTest.from_file(str(ENTRY), default_timeout=60)
    at.query_params["ws"] = "typo"
    at.run()
    ok(at)
    assert not (app_env.root / "typo").exists()
    assert at.query_params["ws"] == "demo"
    assert any("no workspace named 'typo'" in w.value for w in at.sidebar.warning)


def test_tour_only_in_the_demo_workspace(app_env, tmp_path, monkeypatch):
    """Item 15: the demo's guided tour stayed open in other workspaces."""
    monkeypatch.setenv("CLUSTERUCB_HOME", str(tmp_path / "home"))
    at = app_env()
    at.run()
    assert not any(e.label.startswith("Guided tour") for e in at.sidebar.expander)


def test_tour_steps_follow_the_page_order():
    """Item 15: Next jumped back (Policy race -> Curate & Export; Compare runs -> Pool)."""
    from clusterucb_app import tour

    order = [int(s.page.split("/")[1].split("_")[0]) for s in tour.STEPS]
    assert order == sorted(order)
    assert tour.STEPS[-1].page == "pages/9_compare.py"


# ---------------------------------------------------------------------------------- runs
def test_new_run_and_reset_show_the_new_run(app_env):
    """Bug 2: Start a new run / Reset made a run but the page kept the old one (the picker's
    stale choice put it back); Reset piled up empty runs."""
    at = app_env("pages/5_rounds.py")
    at.run()
    at.button(key=START).click().run()
    at.button(key="ucb_end").click().run()
    assert metric(at, "Rows scored") == "24 / 24"
    at.button(key=START).click().run()
    ok(at)
    assert metric(at, "Rows scored") == "0 / 24"
    ws = Workspace.open(app_env.root / "fixture")
    assert len(ws.list("runs")) == 2
    at.button(key="ucb_step1").click().run()
    at.button(key="ucb_reset").click().run()
    ok(at)
    assert metric(at, "Rows scored") == "0 / 24"
    assert at.button(key="ucb_reset").disabled  # nothing to reset in a fresh run
    at.button(key=START).click().run()  # replaces the empty run, keeps the others
    assert len(ws.list("runs")) == 3
    again = app_env("pages/5_rounds.py")  # a reload shows the same (new) run
    again.run()
    assert metric(again, "Rows scored") == "0 / 24"
    (picker,) = [s for s in again.selectbox if s.label == "Run"]
    labels = picker.options
    assert all("ucb_beta β=1 · budget" in s for s in labels), labels  # named by settings


def test_cold_start_button_relabels_at_once(app_env):
    """Bug 4: after Cold start the button still read 'Cold start' until a reload."""
    at = app_env("pages/5_rounds.py")
    at.run()
    at.button(key=START).click().run()
    assert at.button(key="ucb_step1").label == "Cold start"
    at.button(key="ucb_step1").click().run()
    ok(at)
    assert metric(at, "Rows scored") == "4 / 24"
    assert at.button(key="ucb_step1").label == "Step 1 round"


def test_reward_source_is_remembered(app_env, monkeypatch):
    """Item 14: 'Reward source' reset to the first option every time the form opened."""
    from clusterucb_app import rounds

    monkeypatch.setattr(rounds, "reward_sources", lambda ws, n: ["exhaustive", "lazy"])
    Workspace.open(app_env.root / "fixture").update_meta(ucb_reward="lazy")
    at = app_env("pages/5_rounds.py")
    at.run()
    box = next(s for s in at.selectbox if s.label == "Reward source")
    assert box.value == "lazy"


def test_stale_exhaustive_table_is_not_used(app_env):
    """Issue 15, bug 4: a score table of the right length but for another target counted."""
    ws = Workspace.open(app_env.root / "fixture")
    side = ws.root / "scores" / "exhaustive.json"
    data = json.loads(side.read_text())
    data["identity"]["target"] = "0" * 64
    side.write_text(json.dumps(data))
    at = app_env("pages/5_rounds.py")
    at.run()
    ok(at)
    reward = next(s for s in at.selectbox if s.label == "Reward source")
    assert "exhaustive" not in reward.options


def test_arm_and_drawn_tables_show_scores_and_marks(app_env):
    """Item 12: the UCB tables had no score / pinned / rejected columns."""
    at = app_env("pages/5_rounds.py")
    at.run()
    at.button(key=START).click().run()
    at.button(key="ucb_step1").click().run()
    drawn = frame(at, "status")
    assert {"score", "cluster", "status"} <= set(drawn.columns)
    assert np.isfinite(drawn["score"]).all()
    arms = frame(at, "pulls")
    assert {"state", "curation", "mean"} <= set(arms.columns)


# ---------------------------------------------------------------------------------- curation
def test_ban_says_what_it_did_marks_the_cluster_and_undoes(app_env):
    """Item 11: Ban gave no feedback, no marks in the cluster table, and no undo."""
    from clusterucb_core.selection.curation import Ledger

    ws = Workspace.open(app_env.root / "fixture")
    at = app_env("pages/4_clusters.py")
    at.run()
    at.multiselect(key="cl_ban_pick").set_value([3]).run()
    at.button(key="cl_ban").click().run()
    ok(at)
    assert any(t.value.startswith("Banned cluster: ") for t in at.toast)
    assert frame(at, "curation").set_index("cluster")["curation"][3] == "banned"
    assert 3 in Ledger(ws.ledger_path).state().banned
    at.button(key="cl_undo").click().run()
    ok(at)
    assert 3 not in Ledger(ws.ledger_path).state().banned
    assert frame(at, "curation").set_index("cluster")["curation"][3] == ""


def test_ban_then_unban_touches_only_the_chosen_cluster(app_env):
    """Item 11: the ban multiselect kept its old choice, so Unban 5 also unbanned 6."""
    at = app_env("pages/4_clusters.py")
    at.run()
    at.multiselect(key="cl_ban_pick").set_value([1]).run()
    at.button(key="cl_ban").click().run()
    ok(at)
    assert at.multiselect(key="cl_ban_pick").value == []  # cleared after the edit
    assert any("Banned cluster" in t.value for t in at.toast)
    at.multiselect(key="cl_ban_pick").set_value([2]).run()
    at.button(key="cl_ban").click().run()
    at.multiselect(key="cl_ban_pick").set_value([2]).run()
    at.button(key="cl_unban").click().run()
    ok(at)
    status = frame(at, "curation").set_index("cluster")["curation"]
    assert status[1] == "banned" and status[2] == ""


def test_selection_rule_in_words_matches_the_selection(app_env):
    """Bug 6: the help said 'top floor(N·p) plus every pin' while pins take slots."""
    from clusterucb_core.selection.curation import Ledger

    ws = Workspace.open(app_env.root / "fixture")
    at = app_env("pages/5_rounds.py")
    at.run()
    at.button(key=START).click().run()
    at.button(key="ucb_end").click().run()
    Ledger(ws.ledger_path).pin([0, 1])
    ex = app_env("pages/6_export.py")
    ex.run()
    ok(ex)
    assert metric(ex, "Selected") == "6"  # floor(120 × 0.05): the pins took 2 slots
    rule = " ".join(c.value for c in ex.caption)
    assert "every pinned row first (2), then the 4 best-scored rows" in rule
    table = frame(ex, "rank")
    assert "None" not in table["rank"].astype(str).tolist()


@pytest.mark.parametrize("kind", ["hidden", "gradient"])
def test_cluster_features_label_is_what_the_job_builds(app_env, kind):
    """Bug 5: the page said 'gradient' while the job built hidden-state features."""
    from clusterucb_app import tasks

    ws = Workspace.open(app_env.root / "fixture")
    if kind == "gradient":
        ws.update_config("cluster_features", {"kind": "gradient"})
    assert tasks.run_config(ws.root).cluster_features.kind == kind
    at = app_env("pages/3_features.py")
    at.run()
    ok(at)
    words = {"hidden": "Hidden-state embeddings", "gradient": "Gradient features"}[kind]
    assert any(c.value.startswith(words) for c in at.caption), [c.value for c in at.caption]


def test_pool_page_names_id_and_source_columns(app_env, tmp_path):
    """Item 13: no way to choose the id or source column; every source was the format name."""
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"uid": f"u{i}", "origin": "ab"[i % 2], "messages": [
        {"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]})
        + "\n" for i in range(6)))
    at = app_env("pages/1_pool.py")
    at.run()
    at.radio(key="pool_source").set_value("Local path").run()
    at.text_input(key="pool_path").set_value(str(path))
    at.text_input(key="pool_id_field").set_value("uid")
    at.text_input(key="pool_source_field").set_value("origin")
    at.button(key="pool_use_path").click().run()
    ok(at)
    counts = frame(at, "rows")
    assert dict(zip(counts["source"], counts["rows"])) == {"a": 3, "b": 3}
    assert frame(at, "prompt")["id"].tolist()[:2] == ["u0", "u1"]
    assert any("`uid`" in c.value for c in at.caption)  # the columns are listed


def test_empty_pool_hint_points_at_the_chosen_source(app_env):
    """Item 16: with Local path chosen the hint said 'pick the demo pool above'."""
    Workspace.open(app_env.root / "fresh")
    at = app_env("pages/1_pool.py", ws="fresh")
    at.run()
    at.radio(key="pool_source").set_value("Local path").run()
    ok(at)
    assert any("type the path of your file above" in i.value for i in at.info)


def test_new_run_form_sets_arms_per_round(app_env):
    """Issue 21: the new-run form starts a run that plays the top-m arms a round."""
    at = app_env("pages/5_rounds.py")
    at.run()
    at.number_input(key="ucb_new_arms_per_round").set_value(2)
    at.button(key=START).click().run()
    ok(at)
    ws = Workspace.open(app_env.root / "fixture")
    (rid,) = ws.list("runs")
    header = json.loads((ws.runs(rid) / "log.jsonl").read_text().splitlines()[0])
    assert header["spec"]["arms_per_round"] == 2
