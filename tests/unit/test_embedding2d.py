"""The 2-D map (embedding2d.py): UMAP after PCA, sample fit + transform, workspace cache."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from clusterucb_core.clustering import embedding2d as e2
from clusterucb_core.workspace import Workspace


def blobs(n_per=40, k=3, d=64, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d))
    truth = np.repeat(np.arange(k), n_per)
    X = centers[truth] + 0.3 * rng.standard_normal((len(truth), d))
    return X.astype(np.float32), truth


class FakeStore:
    def __init__(self, X, fingerprint):
        self._X = X
        self.n_rows, self.dim = X.shape
        self.fingerprint = fingerprint

    def read(self, rows=None):
        rows = np.arange(self.n_rows) if rows is None else np.asarray(rows)
        return self._X[rows].astype(np.float32)


def test_map_on_a_sample_keeps_clusters_apart_and_is_cached(tmp_path, monkeypatch):
    ws = Workspace.open(tmp_path / "ws")
    X, truth = blobs()
    X[7] = np.nan  # a flagged row: no position
    X[8] = 0.0
    store = FakeStore(X, "feat-fp-1")
    calls = []
    res = e2.compute_map(store, ws=ws, max_fit=80, n_neighbors=10, pca_dims=20, seed=0,
                         chunk_size=16, progress=lambda d, t, m: calls.append((d, t)))
    assert res.method == "umap" and res.fit_on_sample and res.n_fit == 80
    assert res.n_rows == 120 and res.n_valid == 118 and not res.from_cache
    assert res.coords.shape == (120, 2) and res.coords.dtype == np.float32
    assert np.isnan(res.coords[[7, 8]]).all()
    ok = np.isfinite(res.coords).all(axis=1)
    assert ok.sum() == 118
    assert "sample of 80 of 118" in res.note and "2 rows without features" in res.note
    # transformed rows land with their own cluster: the planted groups stay apart in 2-D
    assert silhouette_score(res.coords[ok], truth[ok]) > 0.5
    assert calls[-1] == (118, 118) and len(calls) >= 4  # fit + transform chunks reported
    assert res.path == ws.maps() / f"{res.key}.npz" and res.path.exists()

    # reopening: the cached coordinates, no recomputation
    def boom(*a, **k):
        raise AssertionError("recomputed a cached map")

    monkeypatch.setattr(e2, "_compute", boom)
    again = e2.compute_map(FakeStore(X, "feat-fp-1"), ws=ws, max_fit=80, n_neighbors=10,
                           pca_dims=20, seed=0)
    assert again.from_cache and again.fit_on_sample and again.n_fit == 80
    np.testing.assert_array_equal(again.coords, res.coords)
    assert [m.key for m in e2.cached_maps(ws, "feat-fp-1")] == [res.key]
    assert e2.cached_maps(ws, "other") == []
    # other features or other params are a different map
    with pytest.raises(AssertionError, match="recomputed"):
        e2.compute_map(FakeStore(X, "feat-fp-2"), ws=ws, max_fit=80, n_neighbors=10,
                       pca_dims=20, seed=0)
    with pytest.raises(AssertionError, match="recomputed"):
        e2.compute_map(store, ws=ws, max_fit=80, n_neighbors=11, pca_dims=20, seed=0)


def test_full_fit_is_seeded_and_says_so(monkeypatch):
    X, truth = blobs(n_per=20, d=12, seed=1)
    fits = []
    real = e2._fit_umap
    monkeypatch.setattr(e2, "_fit_umap", lambda r, F: fits.append(F.shape) or real(r, F))
    a = e2.compute_map(X, n_neighbors=8, seed=3)
    b = e2.compute_map(X, n_neighbors=8, seed=3)
    assert not a.fit_on_sample and a.n_fit == 60 and "all 60 rows" in a.note
    assert fits == [(60, 12), (60, 12)]  # no PCA: 12 dims are already fewer than 50
    np.testing.assert_allclose(a.coords, b.coords)
    assert a.key == b.key and a.features_fingerprint == e2.content_fingerprint(X)


def test_tiny_input_falls_back_to_pca():
    X = np.eye(5, 8, dtype=np.float32)
    res = e2.compute_map(X)
    assert res.method == "pca" and res.coords.shape == (5, 2)
    assert np.isfinite(res.coords).all() and "PCA" in res.note


def test_map_cli_computes_then_reads_the_cache(tmp_path, capsys):
    from clusterucb_core.cli import main
    from clusterucb_core.features.store import FeatureStore

    ws = Workspace.open(tmp_path / "ws")
    X, _ = blobs(n_per=15, d=8, seed=2)
    store = FeatureStore.create_or_open(ws.features("hid"), len(X), 8, {"kind": "test"})
    store.write(np.arange(len(X)), X)
    store.close()
    assert main(["map", "-w", str(ws.root), "--n-neighbors", "5"]) == 0
    first = capsys.readouterr().out
    assert "UMAP fitted on all 45 rows" in first and "computed in" in first
    assert main(["map", "-w", str(ws.root), "--n-neighbors", "5"]) == 0
    assert "read from the cache" in capsys.readouterr().out
    maps = e2.cached_maps(ws)
    assert len(maps) == 1 and maps[0].coords.shape == (45, 2)
