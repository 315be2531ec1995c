"""The cost planner in the app: the plan on the Model & Features page (from a kept
calibration, re-planned when a setting changes, or calibrated by the button's job) and
predicted against measured on the UCB page."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from clusterucb_app import tasks
from clusterucb_core.config import config_to_dict
from clusterucb_core.features import cost, planner
from clusterucb_core.features.memplan import ModelShape
from clusterucb_core.features.model import resolve_device
from clusterucb_core.runtime import jobs
from clusterucb_core.runtime.timings import TIMINGS_FILE
from clusterucb_core.workspace import Workspace
from tests.app.conftest import frame, metric, ok

PAGE = "pages/3_features.py"
OP = cost.OpCost(per_batch_s=0.01, per_flop_s=1e-10, per_row_s=0.001)


def _calibration() -> cost.Calibration:
    return cost.Calibration("cpu", 1.5, gradient=OP, forward=OP, train=OP, seconds=2.0,
                            note="fake", kmeans_row_s=1e-4)


def _saved_plan(ws: Workspace) -> dict:
    """A plan for the workspace's current settings, made from a fake calibration."""
    cfg = tasks.run_config(ws.root)
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 60, 120)
    shape = ModelShape(hidden=16, layers=2, intermediate=32, heads=2, kv_heads=2, vocab=50,
                       lora_rank=2)
    plan = cost.plan_stages(shape, _calibration(), cost.Tokens(lengths, lengths // 2),
                            cost.Tokens(np.full(6, 20), np.full(6, 3)),
                            cost.RunShape(n_rows=120)).to_dict()
    plan.update(config_key=planner.plan_config_key(cfg), calibration=_calibration().to_dict(),
                calibrated_now=True, tokens_note="token counts of all 120 rows")
    planner.save_plan(ws.root, plan)
    return plan


def test_no_plan_says_how_to_get_one(app_env):
    at = app_env(PAGE)
    at.run()
    ok(at)
    assert any("No plan yet" in i.value for i in at.info)
    assert at.button(key="btn_plan").label == "Calibrate on this device"
    assert any("times about ten" in c.value for c in at.caption)  # the page explains it


def test_a_saved_plan_is_shown_per_stage(app_env):
    ws = Workspace.open(app_env.root / "fixture")
    plan = _saved_plan(ws)
    at = app_env(PAGE)
    at.run()
    ok(at)
    assert metric(at, "Predicted speed-up") == f"{plan['predicted_speedup']:.2f}x"
    assert metric(at, "Bound") == f"{plan['bound']:.2f}x"
    table = frame(at, "CPU-hours")
    assert list(table["stage"]) == [s["title"] for s in cost.ordered_stages(plan)]
    assert list(table["stage"])[:2] == ["model loads", "warm-up"]
    assert "bandit gradients" in set(table["stage"])
    assert not any("other settings" in w.value for w in at.warning)


def test_a_changed_setting_replans_from_the_kept_calibration(app_env):
    """Changing the budget needs no new timing: the kept calibration plans it at once."""
    ws = Workspace.open(app_env.root / "fixture")
    old = _saved_plan(ws)
    cfg = tasks.run_config(ws.root)
    key = planner.calibration_key(cfg, str(resolve_device(cfg.model.device)))
    (planner.plan_dir(ws.root) / f"calibration-{key}.json").write_text(
        json.dumps(_calibration().to_dict()))
    ws.update_meta(config=config_to_dict(replace(cfg, selection=replace(cfg.selection,
                                                                       budget=0.5))))
    at = app_env(PAGE)
    at.run()
    ok(at)
    new = planner.load_plan(ws.root)
    assert new["config_key"] != old["config_key"]
    assert new["calibrated_now"] is False  # nothing was timed
    assert new["stages"]["bandit_gradients"]["rows"] == 60  # 50% of 120 rows
    assert metric(at, "Predicted speed-up") == f"{new['predicted_speedup']:.2f}x"


def test_the_button_calibrates_in_a_job(app_env):
    ws = Workspace.open(app_env.root / "fixture")
    at = app_env(PAGE)
    at.run()
    at.button(key="btn_plan").click().run()
    ok(at)
    job = jobs.latest(ws, "plan")
    assert job is not None
    done = jobs.wait(ws, job.job_id, timeout_s=1800)
    assert done.status == jobs.DONE, done.error
    plan = planner.load_plan(ws.root)
    assert plan["calibrated_now"] is True and plan["device"] == "cpu"
    at.run()
    ok(at)
    assert metric(at, "Predicted speed-up") == f"{plan['predicted_speedup']:.2f}x"


def test_the_ucb_page_shows_predicted_against_measured(app_env):
    ws = Workspace.open(app_env.root / "fixture")
    plan = _saved_plan(ws)
    exh = plan["stages"]["exhaustive_gradients"]
    (ws.root / TIMINGS_FILE).write_text(json.dumps({"stages": {
        "exhaustive_gradients": {"seconds": exh["seconds"] * 1.25, "rows": exh["rows"],
                                 "key": "s"},
        "cluster_features": {"seconds": 0.01, "rows": 0, "key": "c"}}}))  # reused: not shown
    at = app_env("pages/5_rounds.py")
    at.run()
    ok(at)
    table = frame(at, "measured s")
    assert list(table["stage"]) == ["exhaustive LESS gradients"]
    assert table["error"].iloc[0] == "20%"
