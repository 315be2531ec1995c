"""Influence scores against a direct NumPy computation of docs/METHOD.md's formula."""

from __future__ import annotations

import numpy as np
import pytest

from clusterucb_core.features.influence import checkpoint_weights, influence_scores, subtask_scores


def direct(trains, targets, ids, weights):
    """The formula as written: weighted sum of full cosine matrices, mean per subtask, max."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    cos = 0.0
    for wc, t, v in zip(w, trains, targets):
        t = t.astype(np.float64)
        v = v.astype(np.float64)
        cos = cos + wc * (t / np.linalg.norm(t, axis=1, keepdims=True)) @ (
            v / np.linalg.norm(v, axis=1, keepdims=True)).T
    S = ids.max() + 1
    per = np.stack([cos[:, ids == s].mean(axis=1) for s in range(S)], axis=1)
    return per, per.max(axis=1)


def make(N=200, M=23, d=32, C=1, seed=0):
    rng = np.random.default_rng(seed)
    trains = [rng.standard_normal((N, d)).astype(np.float32) * rng.uniform(0.1, 5, (N, 1))
              for _ in range(C)]
    targets = [rng.standard_normal((M, d)).astype(np.float32) for _ in range(C)]
    ids = rng.integers(0, 5, M)
    ids[:5] = np.arange(5)  # every subtask present
    return trains, targets, ids


def test_single_checkpoint_matches_direct():
    trains, targets, ids = make()
    per_want, want = direct(trains, targets, ids, [1.0])
    got = influence_scores(trains[0], targets[0], ids)
    np.testing.assert_allclose(got, want, atol=2e-6)
    assert got.dtype == np.float32 and got.shape == (200,)
    np.testing.assert_allclose(subtask_scores(trains[0], targets[0], ids), per_want, atol=2e-6)
    # chunking over N changes nothing
    np.testing.assert_allclose(influence_scores(trains[0], targets[0], ids, chunk_rows=7),
                               got, atol=1e-6)


def test_multi_checkpoint_weights_sum_before_mean_and_max():
    trains, targets, ids = make(C=3, seed=1)
    lrs = [2e-5, 1e-5, 5e-6]
    _, want = direct(trains, targets, ids, lrs)
    got = influence_scores(trains, targets, ids, weights=lrs)
    np.testing.assert_allclose(got, want, atol=2e-6)
    # not the same as averaging per-checkpoint scores (max does not commute with the sum)
    separate = sum(w * influence_scores(t, v, ids) for w, t, v in
                   zip(checkpoint_weights(lrs, 3), trains, targets))
    assert np.abs(separate - got).max() > 1e-3
    # weights are normalised: scaling them changes nothing
    np.testing.assert_allclose(influence_scores(trains, targets, ids,
                                                weights=[w * 1e5 for w in lrs]), got, atol=1e-6)
    # equal weights by default
    np.testing.assert_allclose(influence_scores(trains, targets, ids),
                               direct(trains, targets, ids, [1, 1, 1])[1], atol=2e-6)


def test_rows_without_direction_are_nan_not_zero():
    trains, targets, ids = make(seed=2)
    t = trains[0].copy()
    t[3] = 0.0
    t[8, 4] = np.nan
    t[9, 0] = np.inf
    got = influence_scores(t, targets[0], ids)
    assert np.isnan(got[[3, 8, 9]]).all()
    keep = np.setdiff1d(np.arange(len(t)), [3, 8, 9])
    np.testing.assert_allclose(got[keep], direct([t[keep]], targets, ids, [1])[1], atol=2e-6)
    assert np.isnan(subtask_scores(t, targets[0], ids)[3]).all()
    # in multi-checkpoint mode a row flagged at any checkpoint is NaN
    t2 = trains[0].copy()
    t2[50] = np.nan
    assert np.isnan(influence_scores([trains[0], t2], [targets[0]] * 2, ids)[50])


def test_bad_target_rows_and_empty_subtasks():
    trains, targets, ids = make(seed=3)
    v = targets[0].copy()
    v[0] = 0.0  # subtask 0's first row has no direction: left out of its mean
    with pytest.warns(UserWarning, match="1 target row"):
        got = influence_scores(trains[0], v, ids)
    keep = np.arange(len(v)) != 0
    np.testing.assert_allclose(got, direct(trains, [v[keep]], ids[keep], [1])[1], atol=2e-6)
    # subtask code 6 with no rows: a NaN column, not part of the max
    per = subtask_scores(trains[0], targets[0], ids, n_subtasks=7)
    assert per.shape == (200, 7) and np.isnan(per[:, 5:]).all()
    np.testing.assert_allclose(np.nanmax(per, axis=1), influence_scores(trains[0], targets[0], ids),
                               atol=1e-6)


def test_errors():
    trains, targets, ids = make(C=2, seed=4)
    with pytest.raises(ValueError, match="one each per checkpoint"):
        influence_scores(trains, targets[:1], ids)
    with pytest.raises(ValueError, match="2 weights for 1"):
        influence_scores(trains[0], targets[0], ids, weights=[1, 2])
    with pytest.raises(ValueError, match=">= 0"):
        checkpoint_weights([1, -1], 2)
    with pytest.raises(ValueError, match="subtask ids"):
        influence_scores(trains[0], targets[0], ids[:-1])
    with pytest.raises(ValueError, match="usable"):
        with pytest.warns(UserWarning):
            influence_scores(trains[0], np.zeros_like(targets[0]), ids)
