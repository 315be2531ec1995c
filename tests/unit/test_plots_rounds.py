"""Figures of the UCB Rounds page: right data in the right traces, no browser needed."""

from __future__ import annotations

import numpy as np

from clusterucb_app import plots_rounds as pr


def test_arm_chart_band_greys_and_next_arm():
    mean = [0.1, 0.3, np.nan, 0.2]
    std = [0.05, 0.1, np.nan, 0.0]
    fig = pr.arm_chart(mean, std, [3, 4, 0, 2], value=[0.2, 0.5, -np.inf, 0.2], beta=2.0,
                       exhausted=[False, False, False, True], next_arm=1)
    main = fig.data[0]
    np.testing.assert_allclose(main.error_y.array, [0.1, 0.2, 0.0, 0.0])
    colors = list(main.marker.color)
    assert colors[1] == pr.ORANGE and colors[3] == pr.GREY and colors[0] == pr.BLUE
    assert np.isnan(fig.data[1].y[2])  # -inf value is not drawn
    assert [t.split("n=")[1].split("<")[0] for t in fig.layout.xaxis.ticktext] == \
        ["3", "4", "0", "2"]  # the pulls, under each arm's number
    assert any(getattr(s, "x0", None) == 0.55 for s in fig.layout.shapes)


def test_history_figures_have_one_trace_per_arm_and_budget_axis():
    vals = np.array([[0.1, -np.inf], [0.2, 0.3]])
    fig = pr.value_history([1, 2], vals)
    assert len(fig.data) == 2 and np.isnan(fig.data[1].y[0])
    fig = pr.reward_history([0, 1], [0.5, 0.9], [10, 18], 40)
    assert list(fig.data[1].y) == [10, 18] and fig.layout.yaxis2.range == (0, 40)


def test_draws_map_carries_row_indices_and_thins_background_visibly():
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(100, 2))
    drawn = np.zeros(100, bool)
    drawn[[3, 7, 9]] = True
    scores = np.full(100, np.nan)
    scores[[3, 7, 9]] = [0.1, 0.2, 0.3]
    fig = pr.draws_map(xy, scores, drawn, last_rows=[9], max_background=50)
    bg, dr, last = fig.data
    assert len(bg.customdata) == 50 and "thinned" in fig.layout.title.text
    assert list(dr.customdata) == [3, 7, 9]
    np.testing.assert_allclose(dr.marker.color, [0.1, 0.2, 0.3])
    assert list(last.customdata) == [9]


def test_regret_chart():
    fig = pr.regret_chart([0, 1, 2], [0.1, 0.2, 0.4], [0.0, 0.3, 0.5])
    assert list(fig.data[0].y) == [0.1, 0.2, 0.4]
    assert fig.data[1].yaxis == "y2"


def test_cluster_map_categories_rows_and_thinning():
    xy = np.arange(40, dtype=float).reshape(20, 2)
    xy[5] = np.nan
    labels = np.array([0, 1] * 10)
    fig = pr.cluster_map(xy, labels, hover=[f"r{i}" for i in range(20)])
    rows = sorted(int(r) for t in fig.data for r in t.customdata)
    assert rows == [i for i in range(20) if i != 5]
    assert {t.name for t in fig.data} == {"0", "1"}
    fig = pr.cluster_map(xy, np.linspace(0, 1, 20), kind="continuous", max_points=10)
    assert (
        len(fig.data[0].customdata) == 10 and "showing a random 10 of 19" in fig.layout.title.text
    )


def test_kscan_chart_marks_choice():
    fig = pr.kscan_chart([2, 4, 8], [0.2, 0.5, 0.4], [9, 5, 4], chosen=4)
    assert list(fig.data[0].y) == [0.2, 0.5, 0.4]
    assert any(getattr(s, "x0", None) == 4 for s in fig.layout.shapes)


def test_cluster_map_orders_clusters_numerically_with_distinct_colours():
    xy = np.random.default_rng(0).normal(size=(24, 2))
    names = [f"{i % 12}: words" for i in range(24)]
    fig = pr.cluster_map(xy, names)
    assert [t.name for t in fig.data][:3] == ["0: words", "1: words", "2: words"]
    assert len({t.marker.color for t in fig.data}) == 12


def test_user_text_in_names_and_legends_is_escaped():
    """Plotly renders hover and legend text as HTML; cluster names come from user text."""
    evil = "<img src=x onerror=alert(1)>"
    fig = pr.arm_chart([0.1, 0.2], [0.01, 0.02], [3, 4], names=[evil, "ok"])
    hovers = [h for tr in fig.data for h in (tr.hovertext or []) if isinstance(h, str)]
    assert hovers and not any("<img" in h for h in hovers)
    assert any("&lt;img" in h for h in hovers)
    xy = np.random.default_rng(0).normal(size=(4, 2))
    fig = pr.cluster_map(xy, [evil, evil, "b", "b"])
    assert {tr.name for tr in fig.data} >= {"&lt;img src=x onerror=alert(1)&gt;"}


def test_arm_chart_shows_the_predicted_mean_ucb_adds_its_band_to():
    fig = pr.arm_chart([0.1, 0.2], [0.01, 0.02], [3, 4], value=[0.4, 0.22],
                       predicted=[0.39, np.nan])
    pred = [t for t in fig.data if t.name == "predicted mean of the next draws"]
    assert len(pred) == 1 and pred[0].y[0] == 0.39 and np.isnan(pred[0].y[1])
    assert not [t for t in pr.arm_chart([0.1], [0.0], [1]).data
                if t.name == "predicted mean of the next draws"]
