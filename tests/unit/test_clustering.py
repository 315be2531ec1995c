"""Spherical k-means (kmeans.py), the K scan (kscan.py), summaries (summaries.py) and the saved
clusters (clusterset.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from clusterucb_core.clustering import clusterset, kmeans, kscan, summaries
from clusterucb_core.config import ClusterSpec
from clusterucb_core.workspace import Workspace


def planted(n_per=60, k=5, d=32, noise=0.1, seed=0):
    """k well-separated directions on the sphere, n_per noisy points around each."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    truth = np.repeat(np.arange(k), n_per)
    X = centers[truth] + noise * rng.standard_normal((len(truth), d)) / np.sqrt(d) * 3
    # scale rows arbitrarily: spherical k-means must not care
    X *= rng.uniform(0.1, 10.0, size=(len(truth), 1))
    perm = rng.permutation(len(truth))
    return X[perm].astype(np.float32), truth[perm]


class FakeStore:
    """Minimal FeatureStore stand-in that records how many rows each read asks for."""

    def __init__(self, X, fingerprint="fp-test"):
        self._X = X
        self.n_rows, self.dim = X.shape
        self.fingerprint = fingerprint
        self.done = np.ones(self.n_rows, dtype=bool)
        self.max_read = 0

    def read(self, rows=None):
        rows = np.arange(self.n_rows) if rows is None else np.asarray(rows)
        self.max_read = max(self.max_read, len(rows))
        return self._X[rows].astype(np.float32)


def test_recovers_planted_clusters():
    X, truth = planted()
    res = kmeans.spherical_kmeans(X, 5, seed=0, device="cpu")
    assert adjusted_rand_score(truth, res.labels) > 0.95
    assert res.converged
    assert res.labels.dtype == np.int64 and res.labels.min() == 0 and res.labels.max() == 4
    np.testing.assert_allclose(np.linalg.norm(res.centroids, axis=1), 1.0, atol=1e-5)
    # inertia is the sum of 1 - cos to the assigned centroid
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    cos = (Xn * res.centroids[res.labels]).sum(1)
    assert res.inertia == pytest.approx(float((1 - cos).sum()), rel=1e-4)
    # every row sits at its closest centroid
    assert (np.argmax(Xn @ res.centroids.T, axis=1) == res.labels).all()


def test_same_seed_same_labels_and_seed_matters_for_random_init():
    X, _ = planted(n_per=40, k=6, noise=0.6, seed=3)
    a = kmeans.spherical_kmeans(X, 6, seed=7, device="cpu")
    b = kmeans.spherical_kmeans(X, 6, seed=7, device="cpu")
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    # the reference's random seeding with different seeds gives different starting points
    c1 = kmeans.spherical_kmeans(X, 6, seed=1, init="random", max_iter=1, device="cpu")
    c2 = kmeans.spherical_kmeans(X, 6, seed=2, init="random", max_iter=1, device="cpu")
    assert not np.array_equal(c1.centroids, c2.centroids)


def test_duplicate_rows_never_leave_a_cluster_empty():
    # 3 distinct directions, 10 copies each, K=5: identical centroids tie, which empties
    # clusters; they must be re-seeded
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 8)).astype(np.float32)
    X = np.repeat(base, 10, axis=0)
    for mode in ("full", "minibatch"):
        if mode == "full":
            res = kmeans.spherical_kmeans(X, 5, seed=0, device="cpu")
        else:
            res = kmeans.minibatch_spherical_kmeans(X, 5, seed=0, batch_size=7, device="cpu")
        sizes = res.sizes()
        assert len(sizes) == 5 and (sizes >= 1).all(), (mode, sizes)
        assert (res.labels >= 0).all()


def test_far_initial_centroid_is_reseeded():
    X, truth = planted(n_per=50, k=3, d=16)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    init = np.stack([Xn[truth == 0][0], Xn[truth == 1][0], Xn[truth == 2][0],
                     -Xn.mean(0)])  # the 4th attracts nobody on the first assignment
    assert ((Xn @ init.T).argmax(1) != 3).all()
    res = kmeans.spherical_kmeans(X, 4, init=init, device="cpu")
    assert res.n_reseeded >= 1
    assert (res.sizes() >= 1).all()


def test_invalid_rows_get_minus_one_and_do_not_move_the_fit():
    X, truth = planted(n_per=40, k=4, d=16)
    clean = kmeans.spherical_kmeans(X, 4, seed=0, device="cpu")
    Y = np.concatenate([X, np.zeros((3, 16), np.float32), np.full((2, 16), np.nan, np.float32)])
    Y[-1, 0] = 1.0  # partly NaN is still NaN
    res = kmeans.spherical_kmeans(Y, 4, seed=0, device="cpu")
    assert (res.labels[-5:] == -1).all() and res.n_invalid == 5
    np.testing.assert_array_equal(res.labels[:-5], clean.labels)
    mb = kmeans.minibatch_spherical_kmeans(Y, 4, seed=0, batch_size=32, device="cpu")
    assert (mb.labels[-5:] == -1).all() and mb.n_invalid == 5
    assert (mb.labels[:-5] >= 0).all()


def test_k_larger_than_valid_rows_is_a_clear_error():
    X = np.zeros((5, 4), np.float32)
    X[:2] = 1.0
    with pytest.raises(ValueError, match="larger than the 2 rows"):
        kmeans.spherical_kmeans(X, 3, device="cpu")


def test_minibatch_streams_and_agrees_with_full(tmp_path):
    X, truth = planted(n_per=300, k=6, d=24, noise=0.15, seed=5)
    # a float16 memmap on disk, as the feature store keeps them
    mm = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float16, shape=X.shape)
    mm[:] = X
    mm.flush()
    mm = np.load(tmp_path / "f.npy", mmap_mode="r")
    full = kmeans.spherical_kmeans(mm, 6, seed=0, device="cpu")
    store = FakeStore(np.asarray(mm))
    mb = kmeans.minibatch_spherical_kmeans(store, 6, seed=0, batch_size=256, init_size=400,
                                       device="cpu")
    assert store.max_read <= 400  # never the whole store at once (1800 rows)
    assert mb.mode == "minibatch"
    assert adjusted_rand_score(full.labels, mb.labels) > 0.95
    assert adjusted_rand_score(truth, mb.labels) > 0.9
    assert mb.inertia == pytest.approx(full.inertia, rel=0.02)
    # and the memmap path works directly too
    mb2 = kmeans.minibatch_spherical_kmeans(mm, 6, seed=0, batch_size=256, init_size=400,
                                        device="cpu")
    np.testing.assert_array_equal(mb2.labels, mb.labels)


def test_incomplete_store_is_refused():
    X, _ = planted(n_per=10, k=2)
    store = FakeStore(X)
    store.done[3] = False
    with pytest.raises(ValueError, match="incomplete"):
        kmeans.spherical_kmeans(store, 2, device="cpu")


def test_k_scan_finds_planted_k_and_pick_rule():
    X, _ = planted(n_per=50, k=4, d=16, noise=0.1, seed=2)
    scan = kscan.k_scan(X, ks=[2, 3, 4, 6, 8], sample=150, seed=0, device="cpu")
    assert list(scan.columns) == ["k", "inertia", "silhouette", "chosen"]
    assert len(scan) == 5 and scan["chosen"].sum() == 1
    assert int(scan.loc[scan["chosen"], "k"].iloc[0]) == 4
    assert scan.attrs["n_sample"] == 150
    assert (np.diff(scan["inertia"].to_numpy()) <= 1e-6).all()  # more K, less inertia
    # ties (within 0.01) go to the smaller K; no silhouette -> elbow of the inertia curve
    tie = pd.DataFrame({"k": [3, 5, 8], "inertia": [3, 2, 1], "silhouette": [0.405, 0.41, 0.2]})
    assert kscan.pick_k(tie) == 3
    elbow = pd.DataFrame({"k": [1, 2, 3, 4], "inertia": [100.0, 20.0, 15.0, 12.0],
                          "silhouette": [np.nan] * 4})
    assert kscan.pick_k(elbow) == 2


TOPICS = {
    "code": "python function variable loop compiler debug",
    "food": "recipe flour oven bake butter sugar",
    "sport": "football goal match team referee stadium",
}


def topic_table(seed=0):
    rng = np.random.default_rng(seed)
    filler = "the answer please explain this question about something general".split()
    rows = []
    names = list(TOPICS)
    for i in range(90):
        t = names[i % 3]
        words = list(rng.choice(TOPICS[t].split(), size=6)) + list(rng.choice(filler, size=6))
        rng.shuffle(words)
        rows.append({"row": i, "id": f"ex{i}", "source": f"src_{t}" if i % 5 else "mixed",
                     "messages": [{"role": "system", "content": "zebra zebra zebra"},
                                  {"role": "user", "content": " ".join(words[:6])},
                                  {"role": "assistant", "content": " ".join(words[6:])}]})
    return pd.DataFrame(rows), np.array([i % 3 for i in range(90)])


def test_summaries_name_the_planted_topics():
    table, topic = topic_table()
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((3, 12))
    X = (centers[topic] + 0.1 * rng.standard_normal((90, 12))).astype(np.float32)
    res = kmeans.spherical_kmeans(X, 3, seed=0, device="cpu")
    assert adjusted_rand_score(topic, res.labels) == 1.0
    summ = summaries.summarize_clusters(table, res.labels, X, res.centroids, n_examples=4)
    assert list(summ["cluster"]) == [0, 1, 2]
    assert summ["size"].sum() == 90 and summ["share"].sum() == pytest.approx(1.0)
    names = list(TOPICS)
    for _, r in summ.iterrows():
        t = names[int(np.bincount(topic[res.labels == r["cluster"]]).argmax())]
        topic_words = set(TOPICS[t].split())
        assert set(r["keywords"][:3]) <= topic_words, (t, r["keywords"])
        assert all(w in topic_words for w in r["label"].split(", "))
        assert "zebra" not in r["keywords"]  # system turns are not the cluster's text
        assert r["top_source"] == f"src_{t}"
        assert sum(r["sources"].values()) == r["size"]
        # examples: members, closest to the centroid first
        ex = r["examples"]
        assert len(ex) == 4 and all(res.labels[e] == r["cluster"] for e in ex)
        assert r["example_cos"] == sorted(r["example_cos"], reverse=True)
        members = np.flatnonzero(res.labels == r["cluster"])
        Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
        best = members[np.argmax(Xn[members] @ res.centroids[r["cluster"]])]
        assert ex[0] == best
        assert r["chars_mean"] > 0 and r["tokens_median"] == 12
    assert summ.attrs["token_unit"] == "words"


def test_save_and_load_roundtrip(tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    table, topic = topic_table()
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((3, 12))[topic] + 0.1 * rng.standard_normal((90, 12))).astype(
        np.float32
    )
    X[5] = 0.0
    res = kmeans.spherical_kmeans(X, 3, seed=0, device="cpu")
    summ = summaries.summarize_clusters(table, res.labels, X, res.centroids)
    scan = kscan.k_scan(X, ks=[2, 3], sample=90, device="cpu")
    path = clusterset.save_clusters(
        ws,
        "main",
        res,
        features_fingerprint="abc",
        spec=ClusterSpec(k=3),
        features_name="hidden",
        summary=summ,
        kscan=scan,
    )
    assert path == ws.clusters("main") and ws.list("clusters") == ["main"]
    got = clusterset.load_clusters(ws, "main", features_fingerprint="abc")
    np.testing.assert_array_equal(got.labels, res.labels)
    assert got.labels[5] == -1 and got.meta["n_invalid"] == 1
    np.testing.assert_array_equal(got.centroids, res.centroids)
    assert got.meta["spec"]["k"] == 3 and got.meta["features"] == "hidden"
    assert got.summary["keywords"].tolist() == summ["keywords"].tolist()
    assert got.summary["sources"].tolist() == summ["sources"].tolist()
    assert got.summary.attrs["n_unclustered"] == 1
    assert got.kscan["k"].tolist() == [2, 3]
    assert got.cluster_names()[0].startswith("0: ")
    with pytest.raises(ValueError, match="fingerprint"):
        clusterset.load_clusters(ws, "main", features_fingerprint="other")
    with pytest.raises(FileNotFoundError):
        clusterset.load_clusters(ws, "nope")


def test_cluster_cli_writes_labels_summaries_and_scan(tmp_path, capsys):
    import json as _json

    from clusterucb_core.cli import main
    from clusterucb_core.features.store import FeatureStore

    table, topic = topic_table()
    pool_path = tmp_path / "pool.jsonl"
    pool_path.write_text("".join(_json.dumps({"id": r["id"], "source": r["source"],
                                              "messages": r["messages"]}) + "\n"
                                 for r in table.to_dict("records")))
    ws = Workspace.open(tmp_path / "ws")
    ws.update_meta(pool={"path": str(pool_path)})
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((3, 12))[topic] + 0.1 * rng.standard_normal((90, 12)))
    store = FeatureStore.create_or_open(ws.features("hid"), 90, 12, {"kind": "test"})
    store.write(np.arange(90), X, flagged=np.arange(90) == 4)
    store.close()

    assert main(["cluster", "-w", str(ws.root), "--k", "auto", "--k-rule", "silhouette",
                 "--ks", "2,3,5"]) == 0
    out = capsys.readouterr()
    assert "clusters: K=3 ->" in out.out and "ARI=" in out.err
    got = clusterset.load_clusters(ws, "hid-center-kauto", features_fingerprint=FeatureStore.open(
        ws.features("hid")).fingerprint)
    assert got.k == 3 and got.labels[4] == -1 and (got.labels[np.arange(90) != 4] >= 0).all()
    assert adjusted_rand_score(topic[got.labels >= 0], got.labels[got.labels >= 0]) == 1.0
    assert got.kscan["k"].tolist() == [2, 3, 5] and got.summary is not None
    assert ws.meta()["clusters"] == "hid-center-kauto"

    assert main(["cluster", "-w", str(ws.root), "--k", "3", "--minibatch", "--batch-size",
                 "16", "--name", "mb"]) == 0
    mb = clusterset.load_clusters(ws, "mb")
    assert mb.meta["mode"] == "minibatch" and mb.meta["spec"]["minibatch"] is True
    assert adjusted_rand_score(got.labels, mb.labels) == 1.0
    capsys.readouterr()
    assert main(["cluster", "-w", str(ws.root), "--k", "x"]) == 2
    assert "k = 'x': must be an integer >= 1, or \"auto\"" in capsys.readouterr().err
    assert main(["cluster", "-w", str(ws.root), "--features", "nope"]) == 2


def test_summaries_of_a_pool_stream_its_chats_and_match_the_table(tmp_path):
    import json

    from clusterucb_core.data.load import load_pool

    table, topic = topic_table()
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps({"id": r["id"], "dataset": r["source"],
                                        "messages": r["messages"]}) + "\n"
                            for _, r in table.iterrows()))
    pool = load_pool(path)
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((3, 12))[topic] + 0.1 * rng.standard_normal((90, 12))).astype(
        np.float32)
    res = kmeans.spherical_kmeans(X, 3, seed=0, device="cpu")
    from_table = summaries.summarize_clusters(pool.frame(), res.labels, X, res.centroids,
                                              max_docs_per_cluster=10)
    blocks = []
    real = pool.messages
    pool.messages = lambda rows=None: blocks.append(len(rows)) or real(rows)
    from_pool = summaries.summarize_clusters(pool, res.labels, X, res.centroids,
                                             max_docs_per_cluster=10)
    pd.testing.assert_frame_equal(from_pool, from_table)
    assert from_pool.attrs["keyword_rows"] == 30  # 10 per cluster, and the page says so
    assert blocks == [90, 30]  # every chat counted once, then only the keyword sample's texts
