"""Map selections over every row (not only the drawn sample) and search / more-like-this,
each checked against a brute-force computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clusterucb_app.plots_rounds import cluster_map
from clusterucb_core.clustering import mapselect, search


def brute_in_polygon(pts: np.ndarray, vx, vy) -> np.ndarray:
    """Point-in-polygon by the winding number, one point at a time."""
    out = []
    n = len(vx)
    for i, (px, py) in enumerate(pts):
        if not np.isfinite(px) or not np.isfinite(py):
            continue
        wn = 0
        for j in range(n):
            ax, ay, bx, by = vx[j], vy[j], vx[(j + 1) % n], vy[(j + 1) % n]
            cross = (bx - ax) * (py - ay) - (px - ax) * (by - ay)
            if ay <= py < by and cross > 0:
                wn += 1
            elif by <= py < ay and cross < 0:
                wn -= 1
        if wn % 2:
            out.append(i)
    return np.array(out, dtype=np.int64)


def star(cx=0.0, cy=0.0, r1=3.0, r2=1.2, n=7):
    t = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False)
    r = np.where(np.arange(2 * n) % 2 == 0, r1, r2)
    return list(cx + r * np.cos(t)), list(cy + r * np.sin(t))


def test_lasso_over_a_thinned_map_returns_every_row_inside():
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(60_000, 2))
    xy[::97] = np.nan  # rows without features are never inside
    fig = cluster_map(xy, np.zeros(len(xy), dtype=int), max_points=2_000)
    assert "2,000" in fig.layout.title.text  # the browser draws a sample ...
    drawn = {int(r) for tr in fig.data for r in np.asarray(tr.customdata).reshape(-1)}
    vx, vy = star()
    got = mapselect.rows_in_selection(xy, {"lasso": [{"x": vx, "y": vy}], "points": []})
    want = brute_in_polygon(xy, vx, vy)
    np.testing.assert_array_equal(got, want)
    assert len(got) > 10 * len(drawn & set(got.tolist()))  # ... the selection is all of it


@pytest.mark.parametrize("seed", range(5))
def test_polygon_matches_brute_force_on_random_shapes(seed, monkeypatch):
    monkeypatch.setattr(mapselect, "_CHUNK", 97)  # many chunks
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-2, 2, size=(3_000, 2))
    m = int(rng.integers(3, 12))
    vx, vy = rng.uniform(-2, 2, m), rng.uniform(-2, 2, m)  # self-crossing: even-odd rule
    np.testing.assert_array_equal(mapselect.rows_in_polygon(xy, vx, vy),
                                  brute_in_polygon(xy, vx, vy))


def test_box_and_click_and_union():
    xy = np.array([[0, 0], [1, 1], [2, 2], [5, 5], [np.nan, np.nan]], dtype=float)
    assert mapselect.rows_in_box(xy, [2, 0.5], [0.5, 2]).tolist() == [1, 2]  # corners any order
    sel = {"box": [{"x": [-1, 0.5], "y": [-1, 0.5]}], "lasso": [],
           "points": [{"customdata": [3, "id"]}]}
    assert mapselect.rows_in_selection(xy, sel).tolist() == [0, 3]
    assert mapselect.rows_in_selection(xy, {"points": [{"customdata": 4}]}).tolist() == [4]
    assert mapselect.rows_in_selection(xy, None).tolist() == []
    with pytest.raises(ValueError, match="as many x as y"):
        mapselect.rows_in_polygon(xy, [0, 1, 2], [0, 1])


def test_text_and_regex_search_match_brute_force():
    rng = np.random.default_rng(1)
    words = ["alpha", "Beta", "gamma", "a.b", "x+y", "naïve"]
    texts = [" ".join(rng.choice(words, size=4)) for _ in range(500)]
    got = search.search_texts(texts, "a.b")  # literal: the dot is not a wildcard
    assert got.tolist() == [i for i, t in enumerate(texts) if "a.b" in t.lower()]
    got = search.search_texts(texts, r"^beta\b", mode="regex")
    assert got.tolist() == [i for i, t in enumerate(texts) if t.lower().startswith("beta ")
                            or t.lower() == "beta"]
    got = search.search_texts(texts, "Beta", case=True, limit=3)
    assert got.tolist() == [i for i, t in enumerate(texts) if "Beta" in t][:3]
    with pytest.raises(ValueError, match="regular expression"):
        search.search_texts(texts, "(", mode="regex")
    with pytest.raises(ValueError, match="empty"):
        search.search_texts(texts, "  ")


def test_pool_texts_cover_id_source_and_turns():
    table = pd.DataFrame({"id": ["a1", "b2"], "source": ["flan", "cot"],
                          "messages": [[{"role": "user", "content": "hello"},
                                        {"role": "assistant", "content": "world"}],
                                       [{"role": "user", "content": "x"},
                                        {"role": "assistant", "content": "y"}]]})
    texts = search.pool_texts(table)
    assert search.search_texts(texts, "world").tolist() == [0]
    assert search.search_texts(texts, "cot").tolist() == [1]


@pytest.mark.parametrize("k", [1, 7, 50])
def test_neighbours_match_brute_force(k, monkeypatch):
    monkeypatch.setattr(search, "_CHUNK", 64)  # merge across chunks
    rng = np.random.default_rng(k)
    X = rng.normal(size=(700, 16)).astype(np.float32)
    X[5] = np.nan  # no features
    X[6] = 0.0
    query = [3, 10, 11]
    rows, sims = search.neighbours(X, query, k=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        U = X / np.linalg.norm(X, axis=1, keepdims=True)
    q = U[query].mean(axis=0)
    q /= np.linalg.norm(q)
    s = (U.astype(np.float64) @ q)
    s[query] = -np.inf
    s[~np.isfinite(s)] = -np.inf
    want = np.argsort(-s, kind="stable")[:k]
    np.testing.assert_array_equal(rows, want)
    np.testing.assert_allclose(sims, s[want], atol=1e-5)
    assert 5 not in rows and 6 not in rows


def test_neighbours_read_a_feature_store(tmp_path):
    from clusterucb_core.features.store import FeatureStore

    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    st = FeatureStore.create_or_open(tmp_path / "s", 300, 8, {"kind": "test"})
    st.write(np.arange(300), X)
    rows, _ = search.neighbours(st, [0], k=5)
    want, _ = search.neighbours(np.asarray(st.read()), [0], k=5)
    np.testing.assert_array_equal(rows, want)
    with pytest.raises(ValueError, match="no features"):
        search.neighbours(np.full((4, 3), np.nan), [0])
