"""Best subtask per row, coverage, and the round-robin `balance = "subtasks"` selection."""

from __future__ import annotations

import numpy as np

from clusterucb_core.features.influence import subtask_scores
from clusterucb_core.selection.subtasks import balanced_top, best_subtask, coverage


def test_best_subtask_is_the_column_of_the_max():
    per = np.array([[0.1, 0.3], [0.5, -0.2], [np.nan, np.nan], [np.nan, 0.0]])
    assert best_subtask(per).tolist() == [1, 0, -1, 1]
    # on real influence columns, the best subtask's column is the row's score
    rng = np.random.default_rng(0)
    train, target = rng.normal(size=(20, 8)), rng.normal(size=(9, 8))
    ids = np.repeat([0, 1, 2], 3)
    per = subtask_scores(train, target, ids)
    best = best_subtask(per)
    np.testing.assert_allclose(per[np.arange(20), best], per.max(axis=1))
    table = coverage(best, ["a", "b", "c"])
    assert table["subtask"].tolist() == ["a", "b", "c"] and table["rows"].sum() == 20


def test_balanced_top_gives_every_subtask_a_share_where_max_gives_one_all():
    # subtask 0 is easy: every row scores higher on it than any row scores on subtask 1
    rows = np.arange(10, 20)
    per = np.column_stack([np.linspace(0.9, 0.5, 10), np.linspace(0.0, 0.4, 10)])
    by_max = rows[np.argsort(-per.max(axis=1))[:4]]
    assert (best_subtask(per[np.isin(rows, by_max)]) == 0).all()
    got = balanced_top(rows, per, 4)
    # round-robin: subtask 0's best (row 10), subtask 1's best (row 19), then the next each
    assert got.tolist() == [10, 19, 11, 18]
    assert len(set(got)) == 4
    # never more than the usable rows; all-NaN rows never taken
    per[3] = np.nan
    assert 13 not in balanced_top(rows, per, 10).tolist()
    assert len(balanced_top(rows, per, 50)) == 9
