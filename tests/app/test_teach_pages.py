"""The teaching pages (Playground, Policy race, Compare runs) and the guided tour, in AppTest."""

from __future__ import annotations

import json

import numpy as np
import pytest

PG_STEP = "pg_step1"
RACE_RUN = "FormSubmitter:race_form-Run the race"


@pytest.fixture(autouse=True)
def _tour_home(tmp_path, monkeypatch):
    """The tour remembers itself under CLUSTERUCB_HOME; never in the real home."""
    monkeypatch.setenv("CLUSTERUCB_HOME", str(tmp_path / "home"))


def _ok(at):
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _metrics(at, label):
    return [m.value for m in at.metric if m.label == label]


def test_playground_steps_reveal_and_survive_a_refresh(app_env):
    at = app_env("pages/7_playground.py")
    at.run()
    _ok(at)
    assert at.title[0].value == "Playground"
    assert any(e.label == "What is this step?" for e in at.expander)
    assert _metrics(at, "Rows scored") == ["0 / 194", "0 / 194"]  # A and B side by side
    at.button(key=PG_STEP).click().run()  # the cold start
    _ok(at)
    assert _metrics(at, "Rows scored") == ["44 / 194", "44 / 194"]
    assert any(i.value.startswith("Next:") for i in at.info)
    at.button(key="pg_stepn").click().run()  # 5 more rounds
    _ok(at)
    scored = _metrics(at, "Rows scored")
    assert all(int(s.split(" / ")[0]) > 44 for s in scored)
    assert not at.success  # the truth is hidden until asked for
    at.toggle(key="pg_truth").set_value(True).run()
    _ok(at)
    assert "The best arm is **arm 3**" in at.success[0].value
    best = _metrics(at, "Draws on the best arm")
    assert len(best) == 2 and int(best[0].split()[0]) > int(best[1].split()[0])  # UCB > random
    saved = json.loads((app_env.root / "fixture" / "playground.json").read_text())
    assert saved["rounds"] == 6
    # a new browser session (a refresh) replays the same rounds from the workspace
    again = app_env("pages/7_playground.py")
    again.run()
    _ok(again)
    assert _metrics(again, "Rows scored") == scored
    at.button(key="pg_end").click().run()
    _ok(at)
    assert _metrics(at, "Rows scored") == ["194 / 194", "194 / 194"]
    assert sum("Finished" in s.value for s in at.success) == 2


def test_playground_new_arms_from_the_form(app_env):
    at = app_env("pages/7_playground.py")
    at.run()
    at.slider(key="pg_n_arms").set_value(4)
    at.checkbox(key="pg_both").uncheck()
    at.button(key="FormSubmitter:pg_arms-Make these arms").click().run()
    _ok(at)
    saved = json.loads((app_env.root / "fixture" / "playground.json").read_text())
    assert saved["arms"]["n_arms"] == 4 and saved["rounds"] == 0
    assert any("4 arms" in c.value for c in at.caption)
    # a budget below top-p is refused with a message naming it, nothing saved
    at.number_input(key="pg_budget").set_value(0.001)
    at.button(key="FormSubmitter:pg_policies-Apply (starts the rounds over)").click().run()
    assert not at.exception
    assert at.error and "top_p = 0.05: cannot exceed the budget" in at.error[0].value
    saved = json.loads((app_env.root / "fixture" / "playground.json").read_text())
    assert saved["shared"]["budget"] == 0.2


def test_race_page_runs_on_the_playground_and_on_the_workspace(app_env):
    (app_env.root / "fixture" / "race.json").write_text(json.dumps(
        {"source": "playground", "policies": ["ucb_beta", "random", "oracle"], "betas": "1",
         "race": {"seeds": [0, 1], "budget": 0.2, "top_p": 0.05, "cold_start": 0.05,
                  "draw_batch": 8}}))
    at = app_env("pages/8_race.py")
    at.run()  # a first visit races the playground arms at once
    _ok(at)
    assert at.title[0].value == "Policy race"
    head = [m.value for m in at.markdown if m.value.startswith("After scoring")]
    assert head and "**ucb_beta β=1**" in head[0] and "**random**" in head[0]
    assert "2 seed(s)" in head[0] and "972 rows" in head[0]
    at.radio(key="race_source").set_value("workspace").run()
    at.button(key=RACE_RUN).click().run()
    _ok(at)
    head = [m.value for m in at.markdown if m.value.startswith("After scoring")]
    assert "120 rows, 4 clusters" in head[0]
    saved = json.loads((app_env.root / "fixture" / "race.json").read_text())
    assert saved["source"] == "workspace"
    at.text_input(key="race_betas").input("one, two")
    at.button(key=RACE_RUN).click().run()
    assert not at.exception and "β values must be numbers" in at.error[0].value


def _two_runs(root):
    from clusterucb_core.clustering.clusterset import load_clusters
    from clusterucb_core.config import SelectionSpec
    from clusterucb_core.selection.oracle import TableOracle
    from clusterucb_core.selection.run import SelectionRun
    from clusterucb_core.workspace import Workspace

    ws = Workspace.open(root / "fixture")
    labels = load_clusters(ws, "k4").labels
    scores = np.load(ws.root / "scores" / "exhaustive.npy")
    for run_id, beta, budget in (("run-a", 0.0, 0.2), ("run-b", 2.0, 0.4)):
        run = SelectionRun(labels, TableOracle(scores),
                           SelectionSpec(beta=beta, budget=budget, top_p=0.1, seed=3),
                           ws.runs(run_id), meta={"clustering": "k4", "reward": "exhaustive"})
        run.run_to_end()


def test_compare_page(app_env):
    at = app_env("pages/9_compare.py")
    at.run()
    _ok(at)
    assert any("comparing needs two" in i.value for i in at.info)
    _two_runs(app_env.root)
    at = app_env("pages/9_compare.py")
    at.run()
    _ok(at)
    assert _metrics(at, "Selected by A") == ["12"] and _metrics(at, "Selected by B") == ["12"]
    both = int(_metrics(at, "By both")[0])
    assert 0 <= both <= 12
    assert _metrics(at, "Rows scored (A / B)")[0] in ("24 / 48", "48 / 24")
    at.segmented_control(key="cmp_where").set_value("both").run()
    _ok(at)


TOUR_SCRIPT = """
import streamlit as st
from clusterucb_app import tour
with st.sidebar:
    tour.card()
st.write("page")
"""


def _tour_app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_string(TOUR_SCRIPT, default_timeout=30)


def _tour_state(tmp_path):
    return json.loads((tmp_path / "home" / "tour.json").read_text())


def test_tour_steps_skip_and_is_remembered(tmp_path):
    from clusterucb_app import tour

    at = _tour_app()
    at.run()
    _ok(at)
    assert at.expander[0].label == f"Guided tour · 1/{len(tour.STEPS)}: Welcome"
    assert at.button(key="tour_back").disabled
    at.button(key="tour_next").click().run()
    _ok(at)
    assert _tour_state(tmp_path) == {"done": False, "step": 1}
    assert at.expander[0].label.startswith(f"Guided tour · 2/{len(tour.STEPS)}")
    at.button(key="tour_back").click().run()
    assert _tour_state(tmp_path)["step"] == 0
    at.button(key="tour_skip").click().run()
    _ok(at)
    assert _tour_state(tmp_path)["done"] is True
    assert not at.expander and at.button(key="tour_restart")
    # a new session (another day, another workspace) remembers it is done
    again = _tour_app()
    again.run()
    assert not again.expander
    again.button(key="tour_restart").click().run()
    _ok(again)
    assert again.expander[0].label.endswith("Welcome")
    assert _tour_state(tmp_path) == {"done": False, "step": 0}


def test_tour_finishes_on_the_last_step_and_tolerates_a_bad_file(tmp_path):
    from clusterucb_app import tour

    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "tour.json").write_text(json.dumps({"step": len(tour.STEPS) - 1}))
    at = _tour_app()
    at.run()
    assert at.button(key="tour_next").label == "Finish"
    at.button(key="tour_next").click().run()
    assert _tour_state(tmp_path)["done"] is True
    (tmp_path / "home" / "tour.json").write_text("{not json")
    at = _tour_app()
    at.run()
    _ok(at)
    assert at.expander[0].label.endswith("Welcome")
