"""Figures of the Clusters page (plots.py): row indices, escaping, honest thinning."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from clusterucb_core import plots


def pool(n=30, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rows.append({"row": i, "id": f"id-{i}", "source": ["alpaca", "<b>evil</b>"][i % 2],
                     "messages": [{"role": "user", "content": f"question {i} <script>x</script>"},
                                  {"role": "assistant", "content": "A & B " + "long " * 50}]})
    coords = rng.standard_normal((n, 2))
    labels = np.arange(n) % 3
    return pd.DataFrame(rows), coords, labels


def all_points(fig):
    """(row index, customdata row) for every point of every trace, highlight trace excluded."""
    out = []
    for tr in fig.data:
        if tr.name == "highlighted":
            continue
        for x, y, cd in zip(tr.x, tr.y, tr.customdata):
            out.append((int(cd[0]), x, y, cd))
    return out


def test_map_points_carry_rows_and_escaped_hover():
    table, coords, labels = pool()
    coords[4] = np.nan
    names = {0: "a<i>b", 1: "one", 2: "two"}
    fig, note = plots.map_figure(coords, table, labels=labels, cluster_names=names)
    assert isinstance(fig, go.Figure) and all(isinstance(t, go.Scattergl) for t in fig.data)
    pts = all_points(fig)
    rows = sorted(p[0] for p in pts)
    assert rows == [i for i in range(30) if i != 4]
    for row, x, y, cd in pts:  # each point sits at its own row's coordinates
        assert (x, y) == tuple(coords[row])
        assert cd[1] == f"id-{row}"
        assert cd[3] == plots.escape(names[labels[row]])
    cd = next(p[3] for p in pts if p[0] == 1)
    assert cd[2] == "&lt;b&gt;evil&lt;/b&gt;"
    assert cd[4].startswith("question 1 &lt;script&gt;x&lt;/script&gt; A &amp; B long")
    assert cd[4].endswith("…") and len(cd[4]) < 160
    # no raw tag from user data anywhere in the serialised figure
    blob = json.dumps(fig.to_plotly_json(), default=str)
    assert "<script>" not in blob and "<b>evil" not in blob and "a<i>b" not in blob
    assert [t.name for t in fig.data] == ["a&lt;i&gt;b", "one", "two"]
    assert note == "1 rows without features are not on the map."


def test_map_thins_with_a_visible_note_and_keeps_highlights():
    n = 500
    rng = np.random.default_rng(1)
    coords = rng.standard_normal((n, 2))
    labels = rng.integers(0, 4, n)
    hl = [3, 250, 499]
    fig, note = plots.map_figure(coords, labels=labels, max_points=100, highlight=hl)
    pts = all_points(fig)
    shown = [p[0] for p in pts]
    assert len(shown) == 100 == len(set(shown))
    assert set(hl) <= set(shown)
    assert "Showing 100 of 500 points" in note
    assert fig.layout.annotations[0].text.startswith("Showing 100 of 500")
    hl_trace = [t for t in fig.data if t.name == "highlighted"][0]
    assert sorted(int(c[0]) for c in hl_trace.customdata) == hl
    # same seed, same thinning; under the limit, no note
    fig2, _ = plots.map_figure(coords, labels=labels, max_points=100, highlight=hl)
    assert sorted(p[0] for p in all_points(fig2)) == sorted(shown)
    fig3, note3 = plots.map_figure(coords, labels=labels, max_points=1000)
    assert note3 is None and len(all_points(fig3)) == n and not fig3.layout.annotations


def test_map_colour_by_source_and_by_score():
    table, coords, labels = pool()
    fig, _ = plots.map_figure(coords, table, labels=labels, color_by="source")
    assert sorted(t.name for t in fig.data) == sorted(["alpaca", "&lt;b&gt;evil&lt;/b&gt;"])
    scores = np.linspace(0, 1, 30)
    scores[::5] = np.nan
    fig, _ = plots.map_figure(coords, table, labels=labels, color_by="influence",
                              scores=scores)
    grey, scored = fig.data
    assert grey.name == "not scored" and sorted(int(c[0]) for c in grey.customdata) == \
        list(range(0, 30, 5))
    np.testing.assert_allclose(scored.marker.color, scores[[int(c[0]) for c in scored.customdata]])
    assert scored.customdata[0][5].startswith("influence: ")
    table["s"] = scores
    fig2, _ = plots.map_figure(coords, table, color_by="s")
    assert len(fig2.data) == 2
    with pytest.raises(ValueError, match="color_by"):
        plots.map_figure(coords, table, color_by="nope")


def test_cluster_bar_counts_and_escapes():
    labels = np.array([0, 0, 1, 1, 1, 2, -1])
    sources = np.array(["a", "b", "a", "a", "<x>", "b", "a"])
    fig = plots.cluster_bar_figure(labels, sources, cluster_names=["zero", "one", "t&wo"])
    assert fig.layout.barmode == "stack"
    by_source = {t.name: dict(zip(t.x, t.y)) for t in fig.data}
    assert by_source["a"] == {"zero": 1, "one": 2, "t&amp;wo": 0}
    assert by_source["&lt;x&gt;"]["one"] == 1
    assert sum(sum(d.values()) for d in by_source.values()) == 6  # the -1 row left out
    share = plots.cluster_bar_figure(labels, sources, share=True)
    tot = np.sum([np.asarray(t.y, float) for t in share.data], axis=0)
    np.testing.assert_allclose(tot, 1.0)


def test_kscan_figure_marks_the_chosen_k():
    scan = pd.DataFrame({"k": [2, 4, 8], "inertia": [30.0, 12.0, 9.0],
                         "silhouette": [0.3, 0.6, 0.5], "chosen": [False, True, False]})
    fig = plots.kscan_figure(scan)
    assert fig.layout.meta["chosen"] == 4
    assert list(fig.data[0].x) == [2, 4, 8] and list(fig.data[1].y) == [30.0, 12.0, 9.0]
    assert fig.data[1].yaxis == "y2"
    assert any(s.x0 == 4 for s in fig.layout.shapes)
