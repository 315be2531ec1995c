"""Every page on a synthetic workspace (no model): renders, and its controls drive the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clusterucb_core.runtime import jobs
from clusterucb_core.workspace import Workspace
from tests.app.conftest import metric, ok

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["pages/1_pool.py", "pages/2_target.py", "pages/3_features.py", "pages/4_clusters.py",
         "pages/5_rounds.py", "pages/6_export.py"]
START = "FormSubmitter:ucb_settings-Start a new run"


def _arm_table(at):
    tables = [d.value for d in at.dataframe if "pulls" in d.value.columns]
    assert len(tables) == 1, "the arm table is shown once"
    return tables[0]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(app_env, page):
    at = app_env(page)
    at.run()
    ok(at)
    assert at.title and at.title[0].value
    assert not at.error, [e.value for e in at.error]
    assert any(e.label == "What is this step?" for e in at.expander)


def test_workspace_name_goes_into_the_url(app_env):
    at = app_env()  # the default page (Pool)
    at.run()
    ok(at)
    assert at.query_params["ws"] == "fixture"
    assert at.sidebar.selectbox(key="ws_picker_fixture").value == "fixture"


def test_fresh_session_opens_the_demo_workspace(monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CLUSTERUCB_WORKSPACES", str(tmp_path / "ws"))
    at = AppTest.from_file(str(ROOT / "app.py"),
                            default_timeout=60)
    at.run()
    ok(at)
    assert at.query_params["ws"] == "demo"
    meta = json.loads((tmp_path / "ws" / "demo" / "workspace.json").read_text())
    assert meta.get("pool"), "the demo workspace points at the bundled pool"


def test_stepping_rounds_changes_arms_and_budget(app_env):
    at = app_env("pages/5_rounds.py")
    at.run()
    ok(at)
    at.button(key=START).click().run()
    ok(at)
    assert metric(at, "Rows scored") == "0 / 24"
    before = _arm_table(at)
    assert before["pulls"].sum() == 0
    at.button(key="ucb_step1").click().run()  # the cold start
    ok(at)
    assert metric(at, "Rows scored") == "4 / 24"
    cold = _arm_table(at)
    assert list(cold["pulls"]) == [1, 1, 1, 1]
    assert any("Next:" in i.value for i in at.info)  # the why-sentence of the next round
    at.button(key="ucb_step1").click().run()
    ok(at)
    after = _arm_table(at)
    assert metric(at, "Rows scored") == "12 / 24"
    assert after["pulls"].sum() == 12 and not after["pulls"].equals(cold["pulls"])
    at.button(key="ucb_end").click().run()
    ok(at)
    assert metric(at, "Rows scored") == "24 / 24"
    assert any("Finished" in s.value for s in at.success)
    # exhaustive scores exist in the fixture: recall is reported
    assert "%" in metric(at, "Bandit recall")


def test_run_survives_a_new_session(app_env):
    at = app_env("pages/5_rounds.py")
    at.run()
    at.button(key=START).click().run()
    at.button(key="ucb_step1").click().run()
    at.button(key="ucb_step1").click().run()
    again = app_env("pages/5_rounds.py")  # a refresh: new session, state from the log
    again.run()
    ok(again)
    assert metric(again, "Rows scored") == "12 / 24"


def test_bad_settings_give_a_message(app_env):
    at = app_env("pages/5_rounds.py")
    at.run()
    form = at.get("form")
    nums = {n.label: n for n in at.number_input}
    nums["Top-p (fraction selected)"].set_value(0.5)
    nums["Budget (fraction of the pool scored)"].set_value(0.1)
    at.button(key=START).click().run()
    ok(at)
    assert any("top_p" in e.value for e in at.error)
    assert form is not None


def test_ban_from_cluster_table_reaches_the_bandit(app_env):
    at = app_env("pages/4_clusters.py")
    at.run()
    ok(at)
    at.multiselect(key="cl_ban_pick").set_value([2]).run()
    at.button(key="cl_ban").click().run()
    ok(at)
    assert metric(at, "Banned clusters") == "1"
    rounds = app_env("pages/5_rounds.py")
    rounds.run()
    rounds.button(key=START).click().run()
    rounds.button(key="ucb_step1").click().run()
    arms = _arm_table(rounds)
    assert bool(arms.loc[arms["arm"] == 2, "banned"].iloc[0])
    assert int(arms.loc[arms["arm"] == 2, "pulls"].iloc[0]) == 0


def test_bad_pool_file_gives_an_error_and_keeps_the_page(app_env, tmp_path):
    at = app_env("pages/1_pool.py")
    at.run()
    before = metric(at, "Usable rows")
    at.radio(key="pool_source").set_value("Upload a file").run()
    at.file_uploader(key="pool_upload").upload("broken.jsonl", b"{not json\n\x00\xff\n",
                                               "application/jsonl").run()
    at.button(key="pool_use_upload").click().run()
    ok(at)
    assert any("failed" in e.value for e in at.error)
    assert metric(at, "Usable rows") == before  # the previous pool is still shown
    # a missing path too
    at.radio(key="pool_source").set_value("Local path").run()
    at.text_input(key="pool_path").set_value(str(tmp_path / "nope.jsonl")).run()
    at.button(key="pool_use_path").click().run()
    ok(at)
    assert any("not found" in e.value for e in at.error)


def test_pool_with_some_bad_lines_loads_with_a_report(app_env, tmp_path):
    good = json.dumps({"messages": [{"role": "user", "content": "hi"},
                                    {"role": "assistant", "content": "hello"}]})
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([good, "{oops", good, json.dumps({"messages": []})]) + "\n")
    at = app_env("pages/1_pool.py")
    at.run()
    at.radio(key="pool_source").set_value("Local path").run()
    at.text_input(key="pool_path").set_value(str(path)).run()
    at.button(key="pool_use_path").click().run()
    ok(at)
    assert metric(at, "Usable rows") == "2"
    report = [d.value for d in at.dataframe if "line" in d.value.columns]
    assert report
    errors = report[0][report[0]["severity"] == "error"]
    assert set(errors["line"]) == {2, 4}


def test_bad_target_gives_an_error(app_env, tmp_path):
    bad = tmp_path / "bad_target.jsonl"
    bad.write_text('{"subtask": "a"}\n')
    at = app_env("pages/2_target.py")
    at.run()
    at.radio(key="target_source").set_value("LESS folder or local file").run()
    at.text_input(key="target_path").set_value(str(bad)).run()
    at.button(key="target_use_path").click().run()
    ok(at)
    assert any("failed" in e.value for e in at.error)
    assert metric(at, "Subtasks") == "2"  # the fixture target is still the one shown


def test_export_writes_original_lines(app_env):
    at = app_env("pages/5_rounds.py")
    at.run()
    at.button(key=START).click().run()
    at.button(key="ucb_end").click().run()
    ex = app_env("pages/6_export.py")
    ex.run()
    ok(ex)
    assert metric(ex, "Selected") == "6"
    ex.checkbox(key="ex_ds").uncheck().run()
    ex.button(key="ex_save").click().run()
    ok(ex)
    assert any("Export written" in s.value for s in ex.success)
    ws = Workspace.open(app_env.root / "fixture")
    (run_id,) = ws.list("exports")
    out = ws.exports(run_id)
    pool_lines = set((ws.root / "pool.jsonl").read_bytes().splitlines())
    sel = (out / "selected.jsonl").read_bytes().splitlines()
    assert len(sel) == 6 and set(sel) <= pool_lines
    assert json.loads((out / "manifest.json").read_text())
    labels = [b.label for b in ex.get("download_button")]
    assert "selected.jsonl" in labels and "Everything (zip)" in labels


def test_job_panel_shows_finished_and_crashed_jobs(app_env):
    ws = Workspace.open(app_env.root / "fixture")
    done = jobs.start(ws, "warmup", target="tests.job_tasks:demo_task",
                      kwargs={"total": 3, "delay_s": 0.0}, title="Warm-up", unit="steps")
    assert jobs.wait(ws, done, timeout_s=60).status == jobs.DONE
    crashed = jobs.start(ws, "exhaustive", target="tests.job_tasks:demo_task",
                         kwargs={"total": 3, "delay_s": 0.0}, title="Exhaustive scoring")
    jobs.wait(ws, crashed, timeout_s=60)
    prog = ws.jobs(crashed) / jobs.PROGRESS
    data = json.loads(prog.read_text())
    data.update(status="running", pid=2**22 + 12345, done=1, total=3, finished=None)
    prog.write_text(json.dumps(data))  # as if the process had been killed mid-way
    at = app_env("pages/3_features.py")
    at.run()
    ok(at)
    assert any("Warm-up" in s.value and "finished" in s.value for s in at.success)
    assert any("stopped unexpectedly" in w.value for w in at.warning)
    assert at.button(key="job_exhaustive_resume")
    at.button(key="job_exhaustive_resume").click().run()
    ok(at)
    assert jobs.wait(ws, crashed, timeout_s=60).status == jobs.DONE


def test_play_advances_until_paused(app_env):
    """Play steps a round per tick; Pause stops it for good (issue 13, bug 3): a click on
    Pause sets the state (never toggles it), so further ticks do not move the run."""
    at = app_env("pages/5_rounds.py")
    at.run()
    at.button(key=START).click().run()
    at.button(key="ucb_play_btn").click().run()
    ok(at)
    assert at.session_state["ucb_play"] is True
    assert at.button(key="ucb_pause_btn").label == "Pause"
    at.run()  # a tick of the auto-advance (the fragment's timer reruns it in a browser)
    assert metric(at, "Rows scored") != "0 / 24"
    at.button(key="ucb_pause_btn").click().run()
    ok(at)
    assert at.session_state["ucb_play"] is False
    assert at.button(key="ucb_play_btn").label == "Play"
    scored = metric(at, "Rows scored")
    for _ in range(3):  # more timer ticks after the pause
        at.run()
        assert metric(at, "Rows scored") == scored  # paused: nothing moves
