"""Context around a map selection, and a row's text only when it is looked at.

* ``grey_outside``: after a box, lasso or click, the rows outside the selection stay drawn, in
  grey, so the selection is seen against the whole map (Plotly's ``selectedpoints`` per trace,
  set from the selection over every row, not only the points Plotly saw inside the shape).
* Hover text is not shipped per point: every point carries only its row index
  (``customdata``), and the hover label says ``row N`` and the trace (the cluster, source or
  status). Streamlit passes a chart's selections to Python but not its hover events, so the
  text of a row is fetched when it is clicked (a one-point selection): ``row_panel`` reads
  that row from the pool and shows its chat.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from clusterucb_app import marks, ui

GREY = "#c9c9c9"


def grey_unselected(fig: go.Figure) -> go.Figure:
    """``fig`` with every trace styled to grey out the points outside a selection.

    The browser (plotly.js) applies the style when the user draws a box or lasso, so the
    figure's spec stays the same whatever is selected: a spec that changed with the selection
    would make Streamlit see a new chart and drop the selection on the next rerun."""
    for trace in fig.data:
        if getattr(trace, "customdata", None) is not None:
            trace.unselected = {"marker": {"color": GREY, "opacity": 0.35}}
            trace.selected = {"marker": {"opacity": 1.0}}
    return fig


def row_panel(pool: Any, row: int, labels: np.ndarray, names: dict[int, str], led: Any) -> None:
    """The clicked row: its cluster, curation status, tags, id, source and chat (as text)."""
    row = int(row)
    lab = int(labels[row])
    status = marks.row_status([row], labels, led)[0]
    tags = ", ".join(led.tags.get(row, ()))
    head = f"row {row} · {names.get(lab, f'cluster {lab}') if lab >= 0 else 'no features'}"
    if pool is not None:
        head += (f" · id `{pool.column('id', [row])[0]}` · source "
                 f"`{pool.column('source', [row])[0]}`")
    st.caption(head + (f" · {status}" if status else "") + (f" · tags: {tags}" if tags else ""))
    if pool is not None:
        ui.show_text(ui.chat_text(pool.messages([row])[0]), height=200)
