"""Placing rows onto a sample's map (placement.py): the neighbour-keep metric, UMAP-style
weights, kNN interpolation, and a placement that resumes after a kill."""

from __future__ import annotations

import numpy as np
import pytest

from clusterucb_core.clustering import embedding2d as e2
from clusterucb_core.clustering import placement as pl
from clusterucb_core.workspace import Workspace


def keep_by_hand(feats, coords, k_feat, k_map):
    """The definition, row by row: cosine neighbours in features, Euclidean on the map."""
    x = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    total = 0
    for i in range(len(x)):
        sims = x @ x[i]
        sims[i] = -np.inf
        near = set(np.argsort(-sims, kind="stable")[:k_feat])
        d = np.linalg.norm(coords - coords[i], axis=1)
        d[i] = np.inf
        total += len(near & set(np.argsort(d, kind="stable")[:k_map]))
    return total / (len(x) * k_feat)


def test_neighbour_keep_matches_its_definition():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((90, 6))
    coords = feats[:, :2] + 0.3 * rng.standard_normal((90, 2))
    got = pl.neighbour_keep(feats, coords, k_feat=5, k_map=12)
    assert got == pytest.approx(keep_by_hand(feats, coords, 5, 12))
    assert 0.2 < got < 1.0


def test_neighbour_keep_is_one_for_a_faithful_map_and_low_for_a_shuffled_one():
    theta = np.sort(np.random.default_rng(1).uniform(0, 2 * np.pi, 300))
    circle = np.c_[np.cos(theta), np.sin(theta)]  # cosine order = position on the circle
    assert pl.neighbour_keep(circle, 5 * circle) == 1.0
    shuffled = circle[np.random.default_rng(2).permutation(300)]
    assert pl.neighbour_keep(circle, shuffled) < 0.2  # chance: about 30 / 299
    with pytest.raises(ValueError, match="more than k_map=30"):
        pl.neighbour_keep(circle[:30], circle[:30])
    with pytest.raises(ValueError, match="300 rows but coords has 299"):
        pl.neighbour_keep(circle, circle[1:])


def test_membership_weights_are_umaps():
    d = np.sort(np.random.default_rng(3).uniform(0.1, 0.9, (50, 15)), axis=1)
    w = pl.membership_weights(d)
    assert np.allclose(w[:, 0], 1.0)  # the nearest neighbour has full membership
    assert np.allclose(w.sum(axis=1), np.log2(15), rtol=1e-6)
    assert (np.diff(w, axis=1) <= 1e-12).all()  # farther, lighter


def test_a_placed_row_lands_with_its_neighbours():
    rng = np.random.default_rng(4)
    centres = np.eye(8)[:2] * 5
    fit = np.repeat(centres, 50, axis=0) + 0.1 * rng.standard_normal((100, 8))
    coords = np.repeat([[0.0, 0.0], [10.0, 10.0]], 50, axis=0) + rng.standard_normal((100, 2))
    placer = pl.Placer(fit.astype(np.float32), coords)
    new = np.repeat(centres, 5, axis=0) + 0.1 * rng.standard_normal((10, 8))
    xy = placer.place(new.astype(np.float32))
    assert xy.dtype == np.float32 and xy.shape == (10, 2)
    assert (np.linalg.norm(xy[:5] - [0, 0], axis=1) < 2).all()
    assert (np.linalg.norm(xy[5:] - [10, 10], axis=1) < 2).all()


class Killed(Exception):
    pass


def blobs(n=300, d=24, seed=5):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, n)
    return (rng.standard_normal((3, d))[truth] + 0.3 * rng.standard_normal((n, d))
            ).astype(np.float32)


def test_a_killed_placement_resumes_at_its_next_chunk(tmp_path, monkeypatch):
    X = blobs()
    kw = dict(max_fit=100, n_neighbors=10, pca_dims=8, seed=0, chunk_size=40)
    whole = e2.compute_map(X, ws=Workspace.open(tmp_path / "a"), **kw)
    assert whole.fit_on_sample and "15 nearest sample rows" in whole.note

    ws = Workspace.open(tmp_path / "b")
    chunks = []

    def kill_after_two(done, total, msg):
        if msg.startswith("placed"):
            chunks.append(done)
            if len(chunks) == 2:
                raise Killed

    with pytest.raises(Killed):
        e2.compute_map(X, ws=ws, progress=kill_after_two, **kw)
    partial = ws.maps() / f".{whole.key}.partial"
    assert pl.Checkpoint(partial, whole.key).placed() == 80  # two chunks of 40 kept
    assert e2.cached_maps(ws) == []  # no map published half made

    def no_fit(*a, **k):
        raise AssertionError("fitted again instead of resuming")

    placed = []
    real = pl.Placer.place
    monkeypatch.setattr(e2, "_fit_umap", no_fit)
    monkeypatch.setattr(pl.Placer, "place", lambda self, f: placed.append(len(f)) or
                        real(self, f))
    res = e2.compute_map(X, ws=ws, **kw)
    assert placed == [40, 40, 40]  # the 120 rows not placed before the kill, no more
    assert res.info["resumed_at"] == 80
    np.testing.assert_array_equal(res.coords, whole.coords)
    assert not partial.exists()  # the checkpoint goes once the map is published
    assert [m.key for m in e2.cached_maps(ws)] == [whole.key]


def test_a_checkpoint_of_other_parameters_is_not_resumed(tmp_path, monkeypatch):
    X = blobs(n=200)
    kw = dict(max_fit=100, n_neighbors=10, pca_dims=8, seed=0, chunk_size=50)
    ws = Workspace.open(tmp_path / "ws")
    key = e2.map_key(e2.content_fingerprint(X), e2.map_params(10, 0.1, 8, 100, 0))
    stale = pl.Checkpoint(ws.maps() / f".{key}.partial", "another-key")
    stale.start(pl.Fitted(np.arange(100), np.zeros((100, 2)), np.zeros((100, 8)), None, None),
                200)
    fits = []
    real = e2._fit_umap
    monkeypatch.setattr(e2, "_fit_umap", lambda r, F: fits.append(len(F)) or real(r, F))
    res = e2.compute_map(X, ws=ws, **kw)
    assert fits == [100] and res.key == key and "resumed_at" not in res.info
    assert np.isfinite(res.coords).all() and np.ptp(res.coords[:, 0]) > 0


def test_the_cell_search_finds_nearly_every_exact_neighbour():
    rng = np.random.default_rng(6)
    centres = rng.standard_normal((20, 16))
    X = (centres[rng.integers(0, 20, 6000)] + 0.5 * rng.standard_normal((6000, 16))
         ).astype(np.float32)
    placer = pl.Placer(X[:5000], rng.standard_normal((5000, 2)))
    assert placer.cells is not None  # 5000 >= EXACT_BELOW: searched in cells
    near, dist = placer.neighbours(X[5000:])
    placer.cells = None
    exact, exact_dist = placer.neighbours(X[5000:])
    recall = np.mean([len(np.intersect1d(a, b)) / 15 for a, b in zip(near, exact)])
    assert recall > 0.95
    assert (dist >= exact_dist - 1e-6).all()  # never nearer than the true neighbours
