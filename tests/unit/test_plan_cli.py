"""`clusterucb plan`: the table and --json before a run, the calibration kept, and the run
summary's predicted-against-measured stages (the demo model on a 40-row pool)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from clusterucb_core import config as C
from clusterucb_core.cli import build_parser, main
from clusterucb_core.cli.demo import DEMO_CONFIG

FLAGS = ("--config", "--workspace", "--recalibrate", "--lazy-row-ms", "--json")


@pytest.fixture(scope="module")
def small_config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plan")
    cfg = C.load_config(DEMO_CONFIG)
    lines = Path(cfg.pool).read_bytes().splitlines(keepends=True)[:40]
    (root / "pool.jsonl").write_bytes(b"".join(lines))
    data = C.config_to_dict(replace(cfg, pool=str(root / "pool.jsonl"), use_warmup=False,
                                    make_map=False, workspace=str(root / "ws")))
    path = root / "run.toml"
    C.save_toml(data, path)
    return path


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["plan", "--help"])
    out = capsys.readouterr().out
    for flag in FLAGS:
        assert flag in out
    assert "speed-up" in out


def test_a_bad_lazy_row_cost_is_one_line(small_config, capsys):
    assert main(["plan", "--config", str(small_config), "--lazy-row-ms", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --lazy-row-ms = 0.0: must be > 0 milliseconds"


def test_plan_json_then_table_then_a_run_compares(small_config, capsys):
    assert main(["plan", "--config", str(small_config), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["calibrated_now"] is True
    stages = plan["stages"]
    assert {"cluster_features", "bandit_gradients", "exhaustive_gradients",
            "target_gradients", "model_load"} <= set(stages) and "warmup" not in stages
    assert stages["bandit_gradients"]["rows"] == 8  # 20% of 40
    assert stages["exhaustive_gradients"]["rows"] == 40
    assert all(s["seconds"] > 0 and s["cpu_hours"] >= 0 for s in stages.values())
    assert plan["predicted_speedup"] > 0 and plan["bound_formula"].startswith("1 / (c + b)")
    cal = plan["calibration"]
    assert cal["device"] == "cpu" and cal["gradient"]["per_batch_s"] >= 0

    # the table, from the kept calibration (nothing timed again)
    assert main(["plan", "--config", str(small_config)]) == 0
    out = capsys.readouterr().out
    assert "predicted speed-up" in out and "bandit gradients" in out
    assert "kept from an earlier plan" in out

    # a run records each stage's seconds and its summary compares them with the plan
    from clusterucb_core.pipeline import Pipeline
    from clusterucb_core.runtime.timings import read_timings

    cfg = C.load_config(small_config)
    pipe = Pipeline(cfg, log=None)
    summary = pipe.run_all()
    measured = read_timings(cfg.workspace)
    assert measured["cluster_features"]["rows"] == 40
    assert measured["bandit_gradients"]["rows"] == 8
    assert measured["bandit_gradients"]["key"] == cfg.run_id
    assert measured["model_load"]["rows"] == 2  # cluster features' model, the rewards'
    compared = {r["stage"] for r in summary["plan"]["stages"]}
    assert {"cluster_features", "bandit_gradients", "target_gradients", "model_load",
            "kmeans"} <= compared
    assert summary["plan"]["planner_error"] == max(r["error"]
                                                   for r in summary["plan"]["stages"])
    json.dumps(summary)  # plain JSON
    saved = json.loads((pipe.ws.runs(cfg.run_id) / "summary.json").read_text())
    assert saved["plan"]["stages"] == summary["plan"]["stages"]
