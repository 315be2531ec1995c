"""Budget curves (run / random / exhaustive) and their figures."""

from __future__ import annotations

import numpy as np

from clusterucb_app.plots_rounds import budget_figure, coverage_figure
from clusterucb_core.config import SelectionSpec
from clusterucb_core.selection.fidelity import random_curve, run_curve
from clusterucb_core.selection.oracle import TableOracle, recall
from clusterucb_core.selection.run import SelectionRun
from clusterucb_core.selection.subtasks import coverage


def test_run_curve_ends_at_the_runs_recall_and_random_recall_tracks_the_budget():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 2000)
    scores = rng.normal(size=10)[labels] + 0.3 * rng.normal(size=2000)
    run = SelectionRun(labels, TableOracle(scores), SelectionSpec(budget=0.3, top_p=0.05))
    run.run_to_end()
    curve = run_curve(run.round_drawn, scores, run.n_top)
    assert curve["budget"].is_monotonic_increasing
    assert abs(curve["budget"].iloc[-1] - 0.3) < 1e-9
    assert curve["recall"].iloc[-1] == recall(run.selected(), scores, run.n_top)
    assert curve["recall"].is_monotonic_increasing  # more rows scored never loses a top row
    rand = random_curve(scores, run.n_top, budgets=np.array([0.2, 0.5, 1.0]), seeds=5)
    # a random sample of b holds about b of the top rows; all rows: everything
    assert abs(rand["recall"].iloc[1] - 0.5) < 0.1 and rand["recall"].iloc[2] == 1.0
    assert rand["mass_share"].iloc[2] == 1.0
    fig = budget_figure(curve, rand)
    names = {t.name for t in fig.data}
    assert names == {"this run", "random draws", "exhaustive LESS"}
    bars = coverage_figure(coverage(np.array([0, 0, 1, -1]), ["add", "mul"]))
    assert list(bars.data[0].y) == [2, 1]
