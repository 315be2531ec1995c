"""The bandit playground: synthetic arms whose truth is exact, the oracle policy, regret."""

from __future__ import annotations

import numpy as np
import pytest

from clusterucb_core.config import SelectionSpec
from clusterucb_core.teach import playground as pgm
from clusterucb_core.teach.playground import Arm, PlaygroundSpec


def test_build_is_deterministic_and_the_truth_is_exact():
    spec = PlaygroundSpec(n_arms=6, seed=3)
    a, b = pgm.build(spec), pgm.build(spec)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.rewards, b.rewards)
    c = pgm.build(PlaygroundSpec(n_arms=6, seed=4))
    assert not np.array_equal(a.rewards[: min(a.N, c.N)], c.rewards[: min(a.N, c.N)])
    assert a.K == 6 and a.N == a.sizes.sum() == len(a.rewards)
    for k, arm in enumerate(a.arms):
        r = a.rewards[a.labels == k]
        assert len(r) == arm.size
        assert r.mean() == pytest.approx(arm.mean, abs=1e-12)
        assert r.std() == pytest.approx(arm.spread, abs=1e-12)


def test_hidden_gem_is_small_and_best():
    for seed in range(5):
        pg = pgm.build(PlaygroundSpec(n_arms=8, seed=seed))
        assert pg.gem is not None and pg.best_arm == pg.gem
        others = np.delete(pg.sizes, pg.gem)
        assert pg.sizes[pg.gem] < others.min()
        assert pg.true_means[pg.gem] == pytest.approx(np.delete(pg.true_means, pg.gem).max()
                                                      + 0.10, abs=1e-3)
        t = pg.truth(0.05)
        assert int(t["top_p_rows"].sum()) == len(pg.top_rows(0.05))
        assert int(t.loc[t["rank"] == 1, "arm"].iloc[0]) == pg.best_arm
        assert bool(t.loc[pg.gem, "gem"]) and bool(t.loc[pg.gem, "best"])
    no_gem = pgm.build(PlaygroundSpec(n_arms=5, seed=0, gem=False))
    assert no_gem.gem is None and no_gem.K == 5


def test_explicit_arms_from_plain_data_and_bad_settings_named():
    spec = PlaygroundSpec.from_dict({"arms": [{"size": 50, "mean": 0.1, "spread": 0.02},
                                              {"size": 10, "mean": 0.3, "spread": 0.0},
                                              {"size": 80, "mean": 0.0, "spread": 0.05}]})
    pg = pgm.build(spec)
    assert pg.best_arm == 1 and pg.gem == 1  # the best arm is also a small one
    np.testing.assert_array_equal(pg.rewards[pg.labels == 1], 0.3)
    assert PlaygroundSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="mean must lie"):
        pgm.build(PlaygroundSpec(arms=(Arm(5, 2.0, 0.1), Arm(5, 0.0, 0.1))))
    with pytest.raises(ValueError, match="unknown setting"):
        PlaygroundSpec.from_dict({"n_arm": 3})
    with pytest.raises(ValueError, match="n_arms"):
        pgm.build(PlaygroundSpec(n_arms=1))


def test_oracle_cum_regret_by_hand():
    # arms by mean: 0 (0.3, 2 rows), 2 (0.2, 3 rows), 1 (0.1, 5 rows); mu* = 0.3
    got = pgm.oracle_cum_regret([0.3, 0.1, 0.2], [2, 5, 3], [0, 2, 4, 5, 7, 10])
    np.testing.assert_allclose(got, [0, 0, 0.2, 0.3, 0.7, 1.3])  # 3*0.1 + 5*0.2


def _three_arms() -> pgm.Playground:
    return pgm.build(PlaygroundSpec(arms=(Arm(100, 0.1, 0.03), Arm(60, 0.3, 0.03),
                                          Arm(200, 0.2, 0.05))))


def test_oracle_policy_has_zero_regret():
    pg = _three_arms()
    # budget 0.15 of 360 = 54 draws < 60 rows of the best arm: the engine's regret is 0 too
    run = pg.new_run(SelectionSpec(cold_start=0, budget=0.15, top_p=0.05, draw_batch=8),
                     pgm.OraclePolicy(pg.true_means))
    run.run_to_end()
    tab = pg.regret(run)
    assert len(tab) == 7 and (tab["arm"] == pg.best_arm).all()
    np.testing.assert_allclose(tab["cum_regret"], 0.0, atol=1e-12)
    np.testing.assert_array_equal(tab["regret_vs_oracle"], 0.0)
    # past the best arm the oracle pays the engine's regret, but never regret vs the oracle
    run = pg.new_run(SelectionSpec(cold_start=0, budget=0.5, top_p=0.05),
                     pgm.OraclePolicy(pg.true_means))
    run.run_to_end()
    tab = pg.regret(run)
    assert tab["cum_regret"].iloc[-1] > 0
    np.testing.assert_array_equal(tab["regret_vs_oracle"], 0.0)
    assert "oracle" in run.records[-1].explanation["sentence"]


def test_random_regret_grows_and_ucb_finds_the_gem():
    finals = {"random": [], "ucb_beta": []}
    gem_share = {"random": [], "ucb_beta": []}
    for seed in range(4):
        pg = pgm.build(PlaygroundSpec(n_arms=8, seed=seed))
        for policy in finals:
            run = pg.new_run(SelectionSpec(policy=policy, seed=seed))
            run.run_to_end()
            tab = pg.regret(run)
            if policy == "random":
                assert (np.diff(tab["cum_regret"]) >= 0).all()  # regret never shrinks
                assert tab["cum_regret"].iloc[-1] > tab["cum_regret"].iloc[0] > 0
                assert tab["regret_vs_oracle"].iloc[-1] > 0
            finals[policy].append(tab["regret_vs_oracle"].iloc[-1])
            gem_share[policy].append(np.mean(pg.labels[run.round_drawn >= 0] == pg.gem))
    assert np.mean(finals["random"]) > 2 * np.mean(finals["ucb_beta"])
    assert np.mean(gem_share["ucb_beta"]) > 1.5 * np.mean(gem_share["random"])


def test_metrics_and_table():
    pg = _three_arms()
    run = pg.new_run(SelectionSpec(budget=0.2, top_p=0.05))
    run.run_to_end()
    m = pg.metrics(run)
    assert 0 <= m["recall"] <= 1 and m["n_top"] == 18
    assert m["rounds"]["recall_so_far"].iloc[-1] == pytest.approx(m["recall"])
    t = pg.table()
    assert list(t.columns) == ["row", "arm", "reward"] and len(t) == pg.N


def test_use_policy_refuses_a_logged_run(tmp_path):
    pg = _three_arms()
    run = pgm.SelectionRun(pg.labels, pg.oracle(), SelectionSpec(), tmp_path / "r")
    with pytest.raises(ValueError, match="in-memory"):
        pgm.use_policy(run, pgm.OraclePolicy(pg.true_means))
