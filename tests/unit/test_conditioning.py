"""Feature conditioning (center / whiten) and the K rules."""

from __future__ import annotations

import numpy as np
import pytest

from clusterucb_core.clustering import conditioning
from clusterucb_core.clustering.kmeans import spherical_kmeans
from clusterucb_core.clustering.krule import choose_k, size_k


def shared_direction_data(seed: int = 1, n: int = 600, k: int = 4, dim: int = 16):
    """Clusters that differ only off a big shared direction whose length varies row to row
    (as LM hidden states do)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    scale = rng.uniform(0.5, 2.0, n)[:, None]
    X = 20.0 * scale * rng.normal(size=dim) + rng.normal(size=(k, dim))[truth] \
        + 0.3 * rng.normal(size=(n, dim))
    return X.astype(np.float32), truth


def purity(labels: np.ndarray, truth: np.ndarray) -> float:
    return sum(np.bincount(truth[labels == c]).max() for c in np.unique(labels)) / len(truth)


def test_centering_recovers_clusters_hidden_by_a_shared_direction():
    X, truth = shared_direction_data()
    raw = spherical_kmeans(conditioning.fit(X, "none").transform(X), 4, seed=0).labels
    cen = spherical_kmeans(conditioning.fit(X, "center").transform(X), 4, seed=0).labels
    assert purity(cen, truth) > 0.97 and purity(cen, truth) > purity(raw, truth) + 0.05


def test_transform_is_stored_and_reopening_gives_the_same_labels(tmp_path):
    X, _ = shared_direction_data(1)
    X[3] = np.nan  # a row without features stays without
    for kind in ("center", "whiten"):
        cond = conditioning.fit(X, kind, dim=8, seed=0)
        Y = cond.transform(X)
        assert np.isnan(Y[3]).all()
        np.testing.assert_allclose(np.linalg.norm(Y[np.arange(len(Y)) != 3], axis=1), 1.0,
                                   rtol=1e-5)
        folder = tmp_path / kind
        folder.mkdir()
        cond.save(folder)
        again = conditioning.Conditioner.load(folder)
        assert again.kind == kind
        np.testing.assert_array_equal(again.transform(X), Y)
        first = spherical_kmeans(Y, 4, seed=0).labels
        second = spherical_kmeans(again.transform(X), 4, seed=0).labels
        np.testing.assert_array_equal(first, second)
    assert conditioning.Conditioner.load(tmp_path / "nowhere").kind == "none"
    with pytest.raises(ValueError, match="conditioning must be one of"):
        conditioning.fit(X, "sphere")


def test_whitening_gives_unit_variance_directions():
    X, _ = shared_direction_data(2)
    cond = conditioning.fit(X, "whiten", dim=6)
    V = X / np.linalg.norm(X, axis=1, keepdims=True)
    Z = (V - cond.mean) @ cond.components
    np.testing.assert_allclose(Z.var(axis=0, ddof=1), 1.0, rtol=1e-3)


def test_k_rules_are_deterministic_and_explained():
    assert size_k(3372, 0.05, 4) == 42 and size_k(1800, 0.05, 8) == 11
    assert size_k(10, 0.05, 4) == 2  # never below 2 arms
    k, why = choose_k("size4", n_rows=3372, cold_start=0.05)
    assert k == 42 and "4 cold-start draws" in why
    X, _ = shared_direction_data(3)
    assert choose_k("silhouette", 600, 0.05, X=X, seed=1) == \
        choose_k("silhouette", 600, 0.05, X=X, seed=1)
    assert choose_k("fixed12", 600, 0.05)[0] == 12
    with pytest.raises(ValueError, match="unknown K rule"):
        choose_k("elbow", 600, 0.05)


@pytest.mark.parametrize("kind", ["center", "whiten"])
def test_conditioning_streams_from_a_store_larger_than_a_chunk(tmp_path, kind, monkeypatch):
    """A pool that does not fit in memory is centred (or whitened) from its store chunk by
    chunk, and k-means in mini-batch mode reads it through the transform: the same transform
    and the same rows as fitting on the array in memory."""
    from clusterucb_core.clustering.kmeans import cluster_features
    from clusterucb_core.features import rowsource
    from clusterucb_core.features.store import FeatureStore

    X, truth = shared_direction_data(n=900)
    X[5] = np.nan  # a row without features stays out of the fit and comes back NaN
    store = FeatureStore.create_or_open(tmp_path / "s", len(X), X.shape[1], {"t": 1}, "float32")
    store.write(np.arange(len(X)), X)
    monkeypatch.setattr(conditioning, "chunk_rows_for", lambda dim: 128)  # 8 chunks
    from_store = conditioning.fit(store, kind, dim=8, seed=0)
    in_memory = conditioning.fit(X, kind, dim=8, seed=0)
    np.testing.assert_allclose(from_store.mean, in_memory.mean, atol=1e-6)
    rows = conditioning.conditioned(store, from_store)
    Y = from_store.transform(X)
    np.testing.assert_allclose(rows.read(np.arange(100, 300)), Y[100:300], atol=1e-6)
    assert rows.dim == Y.shape[1] and np.isnan(rows.read(np.array([5]))).all()
    assert conditioning.conditioned(store, conditioning.Conditioner()) is store
    res = cluster_features(rows, 4, seed=0, minibatch=True, batch_size=256)
    ok = np.isfinite(X).all(axis=1)
    assert purity(res.labels[ok], truth[ok]) > 0.9
    assert rowsource.as_source(rows).n_rows == len(X)
