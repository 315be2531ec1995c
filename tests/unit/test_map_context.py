"""Context around a map selection (map_context.py) and a map that ships no text per point."""

from __future__ import annotations

import numpy as np

from clusterucb_app import map_context
from clusterucb_app import plots_rounds as pr


def test_rows_outside_a_selection_are_styled_grey_and_the_spec_does_not_depend_on_it():
    """plotly.js greys the unselected points itself: the figure names the style, never the
    selection, so Streamlit keeps the chart (and its selection) across reruns."""
    xy = np.random.default_rng(0).normal(size=(30, 2))
    fig = map_context.grey_unselected(pr.cluster_map(xy, [i % 3 for i in range(30)]))
    for trace in fig.data:
        assert trace.unselected.marker.color == map_context.GREY
        assert trace.unselected.marker.opacity < 1 and trace.selectedpoints is None
        assert len(trace.customdata) == len(trace.x)  # every point is still drawn
    again = map_context.grey_unselected(pr.cluster_map(xy, [i % 3 for i in range(30)]))
    assert fig.to_json() == again.to_json()


def test_the_map_ships_row_indices_not_hover_text():
    xy = np.random.default_rng(1).normal(size=(50, 2))
    fig = pr.cluster_map(xy, ["a", "b"] * 25, overlays=[("pinned", [1, 2], "#2b8a3e", "star")])
    for t in fig.data:
        assert t.hovertext is None and t.text is None
        assert t.hovertemplate == pr.ROW_HOVER and len(t.customdata) == len(t.x)
    cont = pr.cluster_map(xy, np.linspace(0, 1, 50), kind="continuous")
    assert cont.data[0].hovertext is None and cont.data[0].hovertemplate == pr.ROW_HOVER
