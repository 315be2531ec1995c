"""Reward oracles (nothing computed twice) and the metrics against exhaustive scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clusterucb_core.config import SelectionSpec
from clusterucb_core.selection.oracle import (
    LazyOracle,
    TableOracle,
    cluster_means,
    exhaustive_top,
    mass_share,
    recall,
    run_metrics,
)
from clusterucb_core.selection.run import SelectionRun


def test_table_oracle_lookup_and_bounds():
    o = TableOracle(np.array([0.1, np.nan, 0.3]))
    np.testing.assert_array_equal(o.score(np.array([2, 0])), [0.3, 0.1])
    assert math.isnan(o.score(np.array([1]))[0])
    with pytest.raises(IndexError):
        o.score(np.array([3]))
    assert o.describe()["kind"] == "table" and len(o.describe()["fingerprint"]) == 16


class FakeStore:
    """Features on 'disk': a dict; records every row it was asked to compute."""

    def __init__(self, truth):
        self.truth = truth
        self.feats = {}
        self.computed = []

    def missing(self, rows):
        return np.array([r for r in rows if r not in self.feats], dtype=np.int64)

    def compute(self, rows):
        self.computed.extend(int(r) for r in rows)
        for r in rows:
            self.feats[int(r)] = self.truth[int(r)]

    def read(self, rows):
        return np.array([self.feats[int(r)] for r in rows])


def test_lazy_oracle_computes_each_row_once():
    truth = np.linspace(-1, 1, 50)
    store = FakeStore(truth)
    o = LazyOracle(store.compute, store.read, missing=store.missing, n_rows=50)
    np.testing.assert_allclose(o.score(np.array([3, 4, 3])), truth[[3, 4, 3]])
    np.testing.assert_allclose(o.score(np.array([4, 5])), truth[[4, 5]])
    assert sorted(store.computed) == [3, 4, 5]
    assert o.n_computed == 3 and o.n_read == 3
    assert o.exhaustive() is None
    # a new oracle over the same store (a crashed run reopened): rows on disk are only read
    o2 = LazyOracle(store.compute, store.read, missing=store.missing, n_rows=50)
    o2.score(np.array([3, 4, 5, 6]))
    assert sorted(store.computed) == [3, 4, 5, 6] and o2.n_computed == 1
    o2.score(np.arange(50))
    np.testing.assert_allclose(o2.exhaustive(), truth)
    with pytest.raises(IndexError):
        o2.score(np.array([50]))


def test_lazy_oracle_drives_a_selection_without_recomputing():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 200)
    truth = labels * 0.1 + 0.01 * rng.standard_normal(200)
    store = FakeStore(truth)
    lazy = SelectionRun(labels, LazyOracle(store.compute, store.read, store.missing, 200),
                        SelectionSpec(cold_start=0.05, budget=0.3, top_p=0.05, seed=1))
    lazy.run_to_end()
    table = SelectionRun(labels, TableOracle(truth),
                         SelectionSpec(cold_start=0.05, budget=0.3, top_p=0.05, seed=1))
    table.run_to_end()
    assert len(store.computed) == len(set(store.computed)) == lazy.budget_used == 60
    np.testing.assert_array_equal(lazy.selected(), table.selected())


def test_from_store_wires_store_and_scores():
    calls = []

    def fake_scores(train, target, subtask_ids, weights=None):
        calls.append(np.asarray(train).shape)
        return np.asarray(train)[:, 0]

    class Store(FakeStore):
        n_rows = 10
        path = "features/x"
        fingerprint = "abc"

        def read(self, rows):
            return np.stack([np.array([self.feats[int(r)], 0.0]) for r in rows])

    store = Store(np.arange(10.0))
    flagged = np.zeros(10, dtype=bool)
    flagged[2] = True
    o = LazyOracle.from_store(store, store.compute, np.zeros((3, 2)), np.zeros(3, int),
                              flagged=flagged, score_fn=fake_scores)
    out = o.score(np.array([1, 2, 3]))
    assert out[0] == 1.0 and math.isnan(out[1]) and out[2] == 3.0
    assert calls == [(3, 2)] and sorted(store.computed) == [1, 2, 3]
    assert o.describe()["store_fingerprints"] == ["abc"]


def test_metrics_by_hand():
    ex = np.array([0.9, 0.1, 0.8, np.nan, 0.7, 0.2, 0.0, 0.3, 0.5, 0.4])
    np.testing.assert_array_equal(exhaustive_top(ex, 3), [0, 2, 4])
    assert recall(np.array([0, 4, 9]), ex, 3) == pytest.approx(2 / 3)
    assert mass_share(np.array([0, 4, 9]), ex, 3) == pytest.approx((0.9 + 0.7 + 0.4) / 2.4)
    assert recall(np.array([0, 2, 4]), ex, 3) == 1.0
    assert math.isnan(mass_share(np.array([0]), -np.abs(ex), 3))  # no positive mass
    labels = np.array([0, 1, 0, 1, 0, 1, 1, 1, 2, 2])
    np.testing.assert_allclose(cluster_means(ex, labels), [0.8, 0.15, 0.45])


def test_regret_table_and_run_metrics():
    labels = np.repeat([0, 1, 2], 20)
    truth = np.repeat([0.0, 1.0, 0.5], 20) + np.tile(np.linspace(0, 0.01, 20), 3)
    run = SelectionRun(labels, TableOracle(truth),
                       SelectionSpec(cold_start=0.1, budget=0.5, top_p=0.1, draw_batch=4))
    run.run_to_end()
    m = run_metrics(run)
    assert m["recall"] == 1.0 and m["mass_share"] == pytest.approx(1.0)
    df = m["rounds"]
    assert list(df["round"]) == [r.round for r in run.records]
    mu = cluster_means(truth, labels)
    for rec, (_, row) in zip(run.records, df.iterrows()):
        if rec.arm is not None:
            assert row["regret"] == pytest.approx(mu.max() - mu[rec.arm])
    assert np.all(df["regret"] >= -1e-12)
    assert np.all(np.diff(df["cum_regret"]) >= -1e-12)
    assert df["recall_so_far"].iloc[-1] == 1.0
    assert df["arm"].isna().iloc[0]  # the cold start has no arm
    assert run_metrics(SelectionRun(labels, None, run.spec)) is None


def test_from_store_with_the_real_feature_store_and_influence(tmp_path):
    from clusterucb_core.features.influence import influence_scores
    from clusterucb_core.features.store import FeatureStore

    rng = np.random.default_rng(0)
    n, d = 30, 16
    truth = rng.standard_normal((n, d)).astype(np.float32)
    truth[4] = np.nan  # a row without a gradient
    target = rng.standard_normal((6, d)).astype(np.float32)
    subtasks = np.array([0, 0, 1, 1, 2, 2])
    store = FeatureStore.create_or_open(tmp_path / "fs", n, d, {"pool": "p"}, dtype="float32")
    computed = []

    def compute(rows):
        computed.extend(rows.tolist())
        store.write(rows, truth[rows])

    o = LazyOracle.from_store(store, compute, target, subtasks)
    rows = np.array([4, 9, 2, 9])
    got = o.score(rows)
    compute(np.setdiff1d(np.arange(n), computed))
    full = influence_scores(store.read(), target, subtasks)
    np.testing.assert_allclose(got, full[rows].astype(np.float64), rtol=1e-6, equal_nan=True)
    assert math.isnan(got[0]) and sorted(computed[:3]) == [2, 4, 9]
