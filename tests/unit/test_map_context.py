"""Context around a map selection (map_context.py) and a map that ships no text per point."""

from __future__ import annotations

import numpy as np

from clusterucb_app import map_context
from clusterucb_app import plots_rounds as pr


def test_rows_outside_the_selection_stay_drawn_in_grey():
    xy = np.random.default_rng(0).normal(size=(30, 2))
    base = pr.cluster_map(xy, [i % 3 for i in range(30)])
    picked = np.array([0, 3, 4, 29])
    fig = map_context.grey_outside(base, picked)
    for before, after in zip(base.data, fig.data):
        rows = np.asarray(after.customdata)
        assert len(rows) == len(before.customdata)  # every point is still drawn
        assert list(rows[list(after.selectedpoints)]) == [r for r in rows if r in picked]
        assert after.unselected.marker.color == map_context.GREY
        assert before.selectedpoints is None  # the cached base figure is left as it was
    shown = {int(r) for t in fig.data for i in t.selectedpoints for r in [t.customdata[i]]}
    assert shown == set(picked.tolist())


def test_the_map_ships_row_indices_not_hover_text():
    xy = np.random.default_rng(1).normal(size=(50, 2))
    fig = pr.cluster_map(xy, ["a", "b"] * 25, overlays=[("pinned", [1, 2], "#2b8a3e", "star")])
    for t in fig.data:
        assert t.hovertext is None and t.text is None
        assert t.hovertemplate == pr.ROW_HOVER and len(t.customdata) == len(t.x)
    cont = pr.cluster_map(xy, np.linspace(0, 1, 50), kind="continuous")
    assert cont.data[0].hovertext is None and cont.data[0].hovertemplate == pr.ROW_HOVER
