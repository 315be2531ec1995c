"""The UCB and Export pages' comparison panel: the run beside random, RDS+ and exhaustive LESS
at the same budget (the fixture workspace has exhaustive scores), with the engine's numbers."""

from __future__ import annotations

import json

import numpy as np

from clusterucb_core.data.targets import load_target
from clusterucb_core.selection import baselines as bl
from clusterucb_core.workspace import Workspace
from tests.app.conftest import ok

START = "FormSubmitter:ucb_settings-Start a new run"


def _write_rds(root) -> np.ndarray:
    """RDS+ scores as workspace_rds saves them (made here without a model)."""
    ws = Workspace.open(root)
    n = 120
    rng = np.random.default_rng(5)
    scores = rng.normal(size=n).astype(np.float32)
    best = rng.integers(0, 2, size=n).astype(np.int32)
    np.save(ws.root / "scores" / "rds.npy", scores)
    np.save(ws.root / "scores" / "rds_subtask.npy", best)
    target = load_target(ws.meta()["target"]["path"])
    (ws.root / "scores" / "rds.json").write_text(json.dumps({
        "identity": {"features": "x", "target": target.fingerprint},
        "subtasks": list(target.subtasks), "features": "the cluster features",
        "store": "synthetic", "n_rows": n}))
    return scores


def _table(at, first_col: str):
    return [d.value for d in at.dataframe if first_col in d.value.columns]


def test_the_panel_offers_rds_then_compares_at_the_same_budget(app_env):
    at = app_env("pages/5_rounds.py")
    at.run()
    at.button(key=START).click().run()
    ok(at)  # a run without rounds yet: the panel compares at its size
    at.button(key="ucb_end").click().run()
    ok(at)
    assert at.button(key="ucb_rds_go").label == "Compute RDS+ scores"
    summ = _table(at, "gradients")[0]
    assert list(summ["method"]) == [bl.RANDOM, bl.UCB, bl.EXHAUSTIVE]  # no RDS+ yet

    rds = _write_rds(app_env.root / "fixture")
    at.run()
    ok(at)
    assert not [b for b in at.button if b.key == "ucb_rds_go"]
    summ = _table(at, "gradients")[0].set_index("method")
    assert list(summ.index) == [bl.RANDOM, bl.RDS, bl.UCB, bl.EXHAUSTIVE]
    ws = Workspace.open(app_env.root / "fixture")
    ex = np.load(ws.root / "scores" / "exhaustive.npy")
    from clusterucb_core.selection.rds import screen
    from clusterucb_core.selection.runs import open_run

    run = open_run(ws, ws.meta()["current_run"])
    assert run.done and summ.loc[bl.RDS, "gradients"] == run.budget_used
    want = screen(np.where(run.labels >= 0, rds.astype(float), np.nan), ex, run.budget_used,
                  run.n_top)
    from clusterucb_core.selection.oracle import recall

    assert np.isclose(summ.loc[bl.RDS, "recall"], recall(want, ex, run.n_top))
    assert summ.loc[bl.EXHAUSTIVE, "recall"] == 1.0
    per = _table(at, "subtask")
    per = [p for p in per if bl.RDS in p.columns][0]
    assert list(per["subtask"]) == ["math", "code"] or list(per["subtask"]) == ["code", "math"]
    assert (per[bl.UCB].sum(), per[bl.RDS].sum()) == (run.n_top, run.n_top)


def test_the_export_page_compares_the_curated_selection(app_env):
    at = app_env("pages/5_rounds.py")
    at.run()
    at.button(key=START).click().run()
    at.button(key="ucb_end").click().run()
    _write_rds(app_env.root / "fixture")
    ex = app_env("pages/6_export.py")
    ex.run()
    ok(ex)
    summ = _table(ex, "gradients")[0]
    assert bl.RDS in set(summ["method"])
    over = [d.value for d in ex.dataframe if bl.RDS in d.value.columns and
            bl.RDS in d.value.index]
    assert over and int(over[0].loc[bl.UCB, bl.UCB]) == int(summ.set_index("method").loc[
        bl.UCB, "rows"])
