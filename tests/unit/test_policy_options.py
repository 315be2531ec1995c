"""Options beyond the paper, each on synthetic arms where the right answer is known:
pooled variance for arms with few draws, and within-arm draw orders (similar to the best rows,
predicted by a reward model on the features)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from clusterucb_core.config import SelectionSpec
from clusterucb_core.selection.oracle import TableOracle, recall
from clusterucb_core.selection.policies import ArmStats, UcbBeta, pooled_std
from clusterucb_core.selection.run import SelectionRun


def _played(labels, scores, spec, features=None) -> SelectionRun:
    """A run over a table of scores, played to the end."""
    run = SelectionRun(labels, TableOracle(scores), spec, features=features)
    run.run_to_end()
    return run


def test_pooled_std_shrinks_few_draw_arms_toward_the_pool():
    # arm 0: one draw (std 0, looks certain); arm 1: many spread draws
    stats = ArmStats.from_rewards([[0.10], [0.0, 0.2, 0.0, 0.2, 0.0, 0.2], [0.05, 0.05]],
                                  remaining=[5, 5, 5])
    plain = pooled_std(stats, 0.0)
    shrunk = pooled_std(stats, 2.0)
    assert plain[0] == 0.0 and shrunk[0] > 0.0  # one draw no longer means no uncertainty
    every = np.concatenate(stats.rewards)
    n = stats.n.astype(float)
    want = np.sqrt((n * stats.std ** 2 + 2.0 * every.var()) / (n + 2.0))
    np.testing.assert_allclose(shrunk, want)
    # with many draws an arm keeps (nearly) its own spread
    assert abs(shrunk[1] - plain[1]) < abs(shrunk[0] - plain[0])
    # the decision follows: the once-drawn arm's bound now beats the certain low arm's
    pol = UcbBeta(beta=1.0, pooled=2.0)
    assert pol.values(stats)[0] > UcbBeta(beta=1.0).values(stats)[0]
    with pytest.raises(ValueError, match="pooled_variance"):
        UcbBeta(1.0, pooled=-1)


def test_similar_order_draws_the_members_like_the_best_rows_first():
    """One arm holds two kinds of rows (a direction each); the rare good kind (the top 10%)
    scores 1, the other 0. Once a good row is scored, the arm's next draws are the good kind,
    so the top-p is found with a 20% budget, which the random order misses."""
    rng = np.random.default_rng(0)
    n = 400
    kind = (np.arange(n) % 10 == 0).astype(np.int64)
    directions = np.eye(8)[[0, 1]]
    X = directions[kind] + 0.05 * rng.normal(size=(n, 8))
    scores = np.where(kind == 1, 1.0, 0.0) + 0.01 * rng.normal(size=n)
    labels = np.zeros(n, dtype=np.int64)
    spec = SelectionSpec(cold_start=0.05, budget=0.2, top_p=0.1, draw_batch=8, seed=3)
    plain = _played(labels, scores, spec)
    sim = _played(labels, scores, replace(spec, draw_order="similar"), X)
    n_top = sim.n_top
    assert recall(sim.selected(), scores, n_top) == 1.0
    assert recall(plain.selected(), scores, n_top) < 0.8
    # the good rows were drawn first: the first bandit rounds hold only good rows
    first = np.isin(sim.round_drawn, [1, 2, 3])
    assert first.sum() > 0 and (kind[first] == 1).all()
    with pytest.raises(ValueError, match="features"):
        SelectionRun(labels, TableOracle(scores), SelectionSpec(draw_order="similar"))


@pytest.mark.parametrize("order", ["similar", "predicted"])
def test_a_draw_order_reopens_from_its_log(tmp_path, order):
    rng = np.random.default_rng(1)
    n = 300
    X = rng.normal(size=(n, 6))
    scores = X[:, 0] + 0.1 * rng.normal(size=n)
    labels = rng.integers(0, 3, n)
    spec = SelectionSpec(cold_start=0.05, budget=0.3, top_p=0.05, draw_batch=5,
                         draw_order=order)
    whole = SelectionRun(labels, TableOracle(scores), spec, tmp_path / "whole", features=X)
    whole.run_to_end()
    cut = SelectionRun(labels, TableOracle(scores), spec, tmp_path / "cut", features=X)
    cut.run_to_end(max_rounds=6)
    again = SelectionRun.open(tmp_path / "cut", labels, TableOracle(scores), features=X)
    again.run_to_end()
    np.testing.assert_array_equal(whole.round_drawn, again.round_drawn)
    np.testing.assert_array_equal(whole.scores, again.scores)
    assert [r.arm for r in whole.records] == [r.arm for r in again.records]


def test_reward_model_fit_from_sums_equals_the_fixed_effects_ridge():
    """The model's w is the ridge of the within-cluster deviations, computed from running
    sums; here it is checked against the deviations built explicitly."""
    from clusterucb_core.selection.surrogate import RewardModel

    rng = np.random.default_rng(2)
    n, d, k = 200, 5, 4
    F = rng.normal(size=(n, d))
    clusters = rng.integers(0, k, n)
    y = rng.normal(size=n)
    model = RewardModel(F, clusters, k, lam=0.5)
    model.add(np.arange(0, 120), y[:120])
    model.add(np.arange(120, 200), y[120:])
    model.fit()
    fbar = np.array([F[clusters == c].mean(0) for c in range(k)])
    ybar = np.array([y[clusters == c].mean() for c in range(k)])
    D, r = F - fbar[clusters], y - ybar[clusters]
    w = np.linalg.solve(D.T @ D + 0.5 * np.eye(d), D.T @ r)
    np.testing.assert_allclose(model.w, w, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.predict(np.arange(n)), ybar[clusters] + D @ w, atol=1e-10)
    # a cluster with no scored row has no prediction; NaN rewards are skipped
    fresh = RewardModel(F, clusters, k)
    fresh.add(np.flatnonzero(clusters == 0), np.where(clusters[clusters == 0] >= 0, np.nan, 0))
    assert fresh.n_added == 0 and np.isnan(fresh.predict(np.arange(3))).all()


def test_predicted_order_finds_what_the_features_predict_and_ucb_uses_it():
    """Within each of 4 arms the reward is linear in one feature direction: the predicted
    order scores an arm's best rows first, so the top-p is found at a budget where uniform
    draws miss most of it; the round's sentence says the mean was predicted."""
    rng = np.random.default_rng(4)
    n, d = 800, 6
    labels = np.repeat(np.arange(4), n // 4)
    F = rng.normal(size=(n, d))
    scores = 0.2 * labels + F[:, 0] + 0.05 * rng.normal(size=n)
    spec = SelectionSpec(cold_start=0.05, budget=0.2, top_p=0.05, draw_batch=8, seed=1)
    plain = _played(labels, scores, spec)
    pred = _played(labels, scores, replace(spec, draw_order="predicted"), F)
    assert recall(pred.selected(), scores, pred.n_top) >= 0.8
    assert recall(plain.selected(), scores, plain.n_top) < 0.4
    sentence = pred.records[-1].explanation["sentence"]
    assert "predicted mean of its next draws" in sentence
    assert "those the reward model ranks highest" in sentence
    with pytest.raises(ValueError, match="draw_order = 'predicted' needs the cluster features"):
        SelectionRun(labels, TableOracle(scores), SelectionSpec(draw_order="predicted"))


def test_ucb_beta_takes_the_predicted_mean_where_there_is_one():
    stats = ArmStats.from_rewards([[0.1, 0.3], [0.5, 0.5], [0.2]], remaining=[4, 4, 4])
    with_pred = replace(stats, expected=np.array([0.9, np.nan, 0.0]))
    plain = UcbBeta(beta=0.0).values(stats)
    got = UcbBeta(beta=0.0).values(with_pred)
    np.testing.assert_allclose(got, [0.9, 0.5, 0.0])  # arm 1 keeps its draws' mean
    assert UcbBeta(0.0).decide(with_pred).arm == 0 and UcbBeta(0.0).decide(stats).arm == 1
    assert plain[0] == pytest.approx(0.2)
