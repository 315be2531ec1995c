"""Options beyond the paper, each on synthetic arms where the right answer is known:
pooled variance for arms with few draws, and within-arm draws by similarity to the best rows."""

from __future__ import annotations

import numpy as np
import pytest

from clusterucb_core.config import SelectionSpec
from clusterucb_core.oracle import TableOracle, recall
from clusterucb_core.policies import ArmStats, UcbBeta, pooled_std
from clusterucb_core.selection import SelectionRun


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


def test_similarity_order_draws_the_members_like_the_best_rows_first():
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
    plain = SelectionRun(labels, TableOracle(scores), spec)
    plain.run_to_end()
    sim = SelectionRun(labels, TableOracle(scores), SelectionSpec(**{**spec.__dict__,
                                                                     "similarity_order": True}),
                       features=X)
    sim.run_to_end()
    n_top = sim.n_top
    assert recall(sim.selected(), scores, n_top) == 1.0
    assert recall(plain.selected(), scores, n_top) < 0.8
    # the good rows were drawn first: the first bandit rounds hold only good rows
    first = np.isin(sim.round_drawn, [1, 2, 3])
    assert first.sum() > 0 and (kind[first] == 1).all()
    with pytest.raises(ValueError, match="features"):
        SelectionRun(labels, TableOracle(scores), SelectionSpec(similarity_order=True))


def test_similarity_order_reopens_from_its_log(tmp_path):
    rng = np.random.default_rng(1)
    n = 300
    X = rng.normal(size=(n, 6))
    scores = X[:, 0] + 0.1 * rng.normal(size=n)
    labels = rng.integers(0, 3, n)
    spec = SelectionSpec(cold_start=0.05, budget=0.3, top_p=0.05, draw_batch=5,
                         similarity_order=True)
    whole = SelectionRun(labels, TableOracle(scores), spec, tmp_path / "whole", features=X)
    whole.run_to_end()
    cut = SelectionRun(labels, TableOracle(scores), spec, tmp_path / "cut", features=X)
    cut.run_to_end(max_rounds=6)
    again = SelectionRun.open(tmp_path / "cut", labels, TableOracle(scores), features=X)
    again.run_to_end()
    np.testing.assert_array_equal(whole.round_drawn, again.round_drawn)
