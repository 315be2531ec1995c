"""Which rows a box or lasso on the 2-D map covers, computed over every row's coordinates.

A browser scatter above the thinning limit draws a sample, and its selection event names only
the points drawn. The shape itself (a box's corners, a lasso's vertices) comes back with the
event too, so the server tests the full coordinates against it: a selection means every row
inside the shape, drawn or not.

Rows with NaN coordinates (no features) are never inside. A point exactly on the boundary of a
polygon may fall either way (as in the browser), a point on a box edge is inside.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

_CHUNK = 262_144  # points per block of the polygon test: O(chunk) temporaries


def rows_in_box(coords: np.ndarray, x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """Rows whose (x, y) lies in the closed box spanned by the two x and two y values."""
    xy = np.asarray(coords, dtype=np.float64)
    x0, x1 = sorted(float(v) for v in x[:2])
    y0, y1 = sorted(float(v) for v in y[:2])
    inside = (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
    return np.flatnonzero(inside)


def rows_in_polygon(coords: np.ndarray, x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """Rows inside the polygon with vertices (x[i], y[i]) (closed implicitly), by the even-odd
    ray-crossing rule, vectorised over points and looped over edges; the polygon's bounding box
    prefilters the points."""
    vx = np.asarray(x, dtype=np.float64)
    vy = np.asarray(y, dtype=np.float64)
    if len(vx) != len(vy):
        raise ValueError(f"a lasso needs as many x as y values, got {len(vx)} and {len(vy)}")
    if len(vx) < 3:
        return np.zeros(0, dtype=np.int64)
    xy = np.asarray(coords, dtype=np.float64)
    cand = np.flatnonzero((xy[:, 0] >= vx.min()) & (xy[:, 0] <= vx.max())
                          & (xy[:, 1] >= vy.min()) & (xy[:, 1] <= vy.max()))
    out = []
    x2, y2 = np.roll(vx, 1), np.roll(vy, 1)  # edge i runs from vertex i-1 to vertex i
    for start in range(0, len(cand), _CHUNK):
        rows = cand[start:start + _CHUNK]
        px, py = xy[rows, 0], xy[rows, 1]
        inside = np.zeros(len(rows), dtype=bool)
        for ax, ay, bx, by in zip(vx, vy, x2, y2):
            if ay == by:
                continue  # a horizontal edge never crosses a horizontal ray
            straddles = (ay > py) != (by > py)
            x_cross = ax + (py - ay) * (bx - ax) / (by - ay)
            inside ^= straddles & (px < x_cross)
        out.append(rows[inside])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def rows_in_selection(coords: np.ndarray, selection: Any) -> np.ndarray:
    """Every row inside the boxes and lassos of a Plotly selection event (the union), plus
    the rows of the points clicked; sorted.

    `selection` is Streamlit's `event.selection` (attribute or mapping access): `box` is a list
    of {"x": [x0, x1], "y": [y0, y1]}, `lasso` a list of {"x": [...], "y": [...]}, and `points`
    a list of clicked points whose `customdata` holds the row index (first, when a list)."""
    parts: list[np.ndarray] = []
    for box in _field(selection, "box"):
        parts.append(rows_in_box(coords, box["x"], box["y"]))
    for lasso in _field(selection, "lasso"):
        parts.append(rows_in_polygon(coords, lasso["x"], lasso["y"]))
    shaped = bool(parts)
    clicked = point_rows(_field(selection, "points"))
    if not shaped:  # a click (no shape): the clicked points are the selection
        return clicked
    parts.append(clicked)
    return np.unique(np.concatenate(parts)).astype(np.int64)


def point_rows(points: Iterable[Mapping[str, Any]]) -> np.ndarray:
    """Row indices named by the `customdata` of selected points."""
    rows = set()
    for p in points:
        cd = p.get("customdata")
        if cd is None:
            continue
        rows.add(int(cd[0] if isinstance(cd, (list, tuple)) else cd))
    return np.array(sorted(rows), dtype=np.int64)


def _field(selection: Any, name: str) -> list:
    if selection is None:
        return []
    val = selection.get(name) if isinstance(selection, Mapping) else getattr(selection, name,
                                                                             None)
    return list(val or [])
