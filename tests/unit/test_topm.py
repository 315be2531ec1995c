"""Rounds that play the top-m arms (SelectionSpec.arms_per_round): the m arms of largest
index, every draw logged, and a reopened log replays to the same run."""

from __future__ import annotations

import numpy as np
import pytest

from clusterucb_core.config import ConfigError, SelectionSpec
from clusterucb_core.selection.oracle import TableOracle
from clusterucb_core.selection.run import SelectionRun
from clusterucb_core.selection.topm import arms_for_budget, rows_at_length


def table(n: int = 600, k: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    scores = rng.normal(0, 0.03, k)[labels] + rng.normal(0, 0.01, n)
    return labels, scores, rng.normal(size=(n, 8))


@pytest.mark.parametrize("order", ["random", "predicted", "similar"])
def test_top_m_round_plays_the_m_best_arms_and_replays(tmp_path, order):
    labels, scores, feats = table()
    spec = SelectionSpec(arms_per_round=3, draw_batch=4, draw_order=order, budget=0.3)
    run = SelectionRun(labels, TableOracle(scores), spec, log_dir=tmp_path / "r",
                       features=feats)
    run.step()  # cold start
    stats = run.stats(run.banned_mask())
    vals = run.policy.masked_values(stats)
    rec = run.step()
    arms = rec.explanation["arms"]
    assert len(arms) == 3 and len(set(arms)) == 3
    assert rec.explanation["arm_rows"] == [4, 4, 4] and len(rec.rows) == 12
    assert sorted(arms) == sorted(np.argsort(-vals, kind="stable")[:3].tolist())
    assert [int(labels[r]) for r in rec.rows] == [a for a in arms for _ in range(4)]
    run.run_to_end()
    assert run.budget_used == run.budget_total
    again = SelectionRun.open(tmp_path / "r", labels, TableOracle(scores), features=feats)
    assert np.array_equal(again.scores, run.scores, equal_nan=True)
    assert np.array_equal(again.round_drawn, run.round_drawn)
    assert np.array_equal(again.selected(), run.selected())


def test_one_arm_a_round_is_the_paper_and_a_tampered_log_is_refused(tmp_path):
    labels, scores, _ = table()
    one = SelectionRun(labels, TableOracle(scores), SelectionSpec(), log_dir=tmp_path / "a")
    one.run_to_end()
    assert all("arms" not in r.explanation for r in one.records)
    spec = SelectionSpec(arms_per_round=2)
    two = SelectionRun(labels, TableOracle(scores), spec, log_dir=tmp_path / "b")
    two.run_to_end()
    assert len(two.records) < len(one.records)
    log = tmp_path / "b" / "log.jsonl"
    lines = log.read_text().splitlines()
    lines[2] = lines[2].replace('"arm_rows": [8, 8]', '"arm_rows": [7, 9]')
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="round 1"):
        SelectionRun.open(tmp_path / "b", labels, TableOracle(scores))


def test_arms_per_round_settings():
    with pytest.raises(ConfigError, match="arms_per_round"):
        SelectionSpec(arms_per_round=0)
    with pytest.raises(ConfigError, match="split_hot"):
        SelectionSpec(arms_per_round=2, split_hot=4)
    assert arms_for_budget(16, 8) == 2 and arms_for_budget(5, 8) == 1
    assert arms_for_budget(rows_at_length(4096, [40, 50, 60]), 8) == 11
