"""Plotly figures for the Clusters page (pure functions; no streamlit; tested without a browser).

Organised by figure:

* text helpers: :func:`escape` and :func:`snippet` -- plotly renders a subset of HTML in hover
  labels, legends and tick labels, so every string that comes from user data goes through
  ``escape`` (``&``, ``<``, ``>``) before it reaches a figure;
* the map: :func:`map_figure` (WebGL scatter of the 2-D map, coloured by cluster, by source or
  by a numeric score; each point's pool row index is ``customdata[:, 0]``; large pools are
  thinned to ``max_points`` with a note that is returned *and* drawn on the figure);
* :func:`cluster_bar_figure`: cluster sizes stacked by source;
* :func:`kscan_figure`: the K-scan curve (silhouette and inertia against K, the chosen K marked).

Figures of the UCB rounds live in ``plots_rounds.py``.
"""

from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

PALETTE = qualitative.Dark24 + qualitative.Light24
GREY = "#c8c8c8"
HOVER = ("row %{customdata[0]} · %{customdata[1]}<br>source: %{customdata[2]}<br>"
         "cluster: %{customdata[3]}<br>%{customdata[4]}<extra></extra>")
SCORE_HOVER = HOVER.replace("<extra>", "<br>%{customdata[5]}<extra>")


# ---------------------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------------------

def escape(text: Any) -> str:
    """User text made inert for plotly: ``&``, ``<`` and ``>`` become entities."""
    return html.escape(str(text), quote=False)


def snippet(text: str, n: int = 120) -> str:
    """The first ``n`` characters of ``text`` on one line ("…" when cut), escaped."""
    flat = " ".join(str(text).split())
    if len(flat) > n:
        flat = flat[:n].rstrip() + "…"
    return escape(flat)


def _row_texts(table: Any, rows: np.ndarray) -> list[str]:
    from .clustering import row_text

    if table is None:
        return [""] * len(rows)
    if "text" in table.columns:
        col = table["text"].to_numpy()
        return [str(col[i]) for i in rows]
    if "messages" in table.columns:
        col = table["messages"].to_numpy()
        return [row_text(col[i]) for i in rows]
    return [""] * len(rows)


# ---------------------------------------------------------------------------------------------
# the map
# ---------------------------------------------------------------------------------------------

def thin_rows(candidates: np.ndarray, max_points: int, keep: np.ndarray | None = None,
              seed: int = 0) -> np.ndarray:
    """At most ``max_points`` of ``candidates`` (seeded uniform sample), always including the
    rows in ``keep``; sorted."""
    candidates = np.asarray(candidates, dtype=np.int64)
    if len(candidates) <= max_points:
        return candidates
    keep = np.intersect1d(candidates, np.asarray([] if keep is None else keep, dtype=np.int64))
    rest = np.setdiff1d(candidates, keep, assume_unique=True)
    room = max(0, max_points - len(keep))
    rng = np.random.default_rng(seed)
    picked = rng.choice(rest, size=min(room, len(rest)), replace=False)
    return np.sort(np.concatenate([keep, picked]))


def map_figure(coords: np.ndarray, table: Any = None, *, labels: np.ndarray | None = None,
               cluster_names: Mapping[int, str] | Sequence[str] | None = None,
               color_by: str = "cluster", scores: np.ndarray | None = None,
               highlight: np.ndarray | Sequence[int] | None = None,
               highlight_name: str = "highlighted", max_points: int = 50_000, seed: int = 0,
               title: str | None = None, snippet_chars: int = 120,
               ) -> tuple[go.Figure, str | None]:
    """The 2-D map as a WebGL scatter; returns ``(figure, note)``.

    coords: [N, 2] (rows with NaN coordinates -- no features -- are left out and counted).
    table: the pool table (``row``, ``id``, ``source``, ``messages`` or ``text``) for hover
    and for ``color_by="source"``. labels: cluster per row (-1 = none). color_by:
    ``"cluster"``, ``"source"``, or a numeric score -- ``scores`` (length N, NaN = not scored)
    or, when ``scores`` is None, the table column named ``color_by``.
    highlight: row indices drawn on top with an outline (e.g. the rows a round drew); they are
    always kept when thinning. Hover shows id, source, cluster label and the first
    ``snippet_chars`` characters of the text, all escaped. Each point's ``customdata`` row is
    ``[row index, id, source, cluster label, snippet(, score)]``.

    Over ``max_points`` rows with positions, a seeded random sample is drawn and the note says
    so; the note is also written on the figure, so thinning is never silent.
    """
    coords = np.asarray(coords, dtype=np.float64)
    n = len(coords)
    if table is not None and len(table) != n:
        raise ValueError(f"table has {len(table)} rows but coords has {n}")
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} rows but coords has {n}")
    placed = np.flatnonzero(np.isfinite(coords).all(axis=1))
    hl = (np.unique(np.asarray(highlight, dtype=np.int64)) if highlight is not None
          else np.zeros(0, dtype=np.int64))
    shown = thin_rows(placed, max_points, keep=hl, seed=seed)

    notes = []
    if len(shown) < len(placed):
        notes.append(f"Showing {len(shown):,} of {len(placed):,} points (a seeded random "
                     "sample, to keep the browser responsive"
                     + ("; highlighted rows are always shown" if len(hl) else "") + ").")
    if len(placed) < n:
        notes.append(f"{n - len(placed):,} rows without features are not on the map.")
    note = " ".join(notes) or None

    row_ids = (table["row"].to_numpy() if table is not None and "row" in table.columns
               else np.arange(n))
    ids = (table["id"].astype(str).to_numpy() if table is not None and "id" in table.columns
           else row_ids.astype(str))
    sources = (table["source"].astype(str).to_numpy()
               if table is not None and "source" in table.columns else np.full(n, "", object))
    lab = np.full(n, -1, dtype=np.int64) if labels is None else np.asarray(labels, np.int64)
    names = _cluster_names(cluster_names, lab)
    texts = dict(zip(shown.tolist(), _row_texts(table, shown)))

    score_vals = None
    if color_by not in ("cluster", "source"):
        if scores is None:
            if table is None or color_by not in table.columns:
                raise ValueError(f"color_by={color_by!r}: pass scores=, or a table with a "
                                 f"numeric {color_by!r} column")
            scores = table[color_by].to_numpy()
        score_vals = np.asarray(scores, dtype=np.float64)
        if len(score_vals) != n:
            raise ValueError(f"scores has {len(score_vals)} rows but coords has {n}")

    def custom(rows: np.ndarray) -> np.ndarray:
        cols = [row_ids[rows].astype(object),
                np.array([escape(ids[i]) for i in rows], dtype=object),
                np.array([escape(sources[i]) for i in rows], dtype=object),
                np.array([escape(names.get(int(lab[i]), "none")) for i in rows], dtype=object),
                np.array([snippet(texts[int(i)], snippet_chars) for i in rows], dtype=object)]
        if score_vals is not None:
            cols.append(np.array([_fmt_score(color_by, score_vals[i]) for i in rows],
                                 dtype=object))
        return np.stack(cols, axis=1) if len(rows) else np.zeros((0, len(cols)), dtype=object)

    fig = go.Figure()
    marker_size = 4 if len(shown) > 5_000 else 6
    hover = SCORE_HOVER if score_vals is not None else HOVER
    if color_by == "cluster":
        groups = [(c, shown[lab[shown] == c]) for c in np.unique(lab[shown])]
        for c, rows in groups:
            color = GREY if c < 0 else PALETTE[int(c) % len(PALETTE)]
            fig.add_trace(go.Scattergl(
                x=coords[rows, 0], y=coords[rows, 1], mode="markers",
                name=escape(names.get(int(c), "none")), customdata=custom(rows),
                hovertemplate=hover, marker=dict(size=marker_size, color=color, opacity=0.75)))
    elif color_by == "source":
        for i, s in enumerate(np.unique(sources[shown])):
            rows = shown[sources[shown] == s]
            fig.add_trace(go.Scattergl(
                x=coords[rows, 0], y=coords[rows, 1], mode="markers", name=escape(s),
                customdata=custom(rows), hovertemplate=hover,
                marker=dict(size=marker_size, color=PALETTE[i % len(PALETTE)], opacity=0.75)))
    else:
        assert score_vals is not None
        unscored = shown[~np.isfinite(score_vals[shown])]
        scored = shown[np.isfinite(score_vals[shown])]
        if len(unscored):
            fig.add_trace(go.Scattergl(
                x=coords[unscored, 0], y=coords[unscored, 1], mode="markers",
                name="not scored", customdata=custom(unscored), hovertemplate=hover,
                marker=dict(size=marker_size, color=GREY, opacity=0.5)))
        fig.add_trace(go.Scattergl(
            x=coords[scored, 0], y=coords[scored, 1], mode="markers", name=escape(color_by),
            customdata=custom(scored), hovertemplate=hover,
            marker=dict(size=marker_size + 1, color=score_vals[scored], colorscale="Viridis",
                        showscale=True, colorbar=dict(title=escape(color_by)), opacity=0.9)))
    if len(hl):
        rows = hl[np.isin(hl, shown)]
        fig.add_trace(go.Scattergl(
            x=coords[rows, 0], y=coords[rows, 1], mode="markers", name=escape(highlight_name),
            customdata=custom(rows), hovertemplate=hover,
            marker=dict(size=marker_size + 6, color="rgba(0,0,0,0)", symbol="circle-open",
                        line=dict(width=2, color="#111"))))
    fig.update_layout(
        title=escape(title) if title else None, template="plotly_white",
        xaxis=dict(showticklabels=False, showgrid=False, title=None, zeroline=False),
        yaxis=dict(showticklabels=False, showgrid=False, title=None, zeroline=False,
                   scaleanchor="x"),
        legend=dict(itemsizing="constant"), margin=dict(l=10, r=10, t=40 if title else 10,
                                                        b=40 if note else 10),
        meta={"n_rows": n, "n_placed": int(len(placed)), "n_shown": int(len(shown)),
              "note": note})
    if note:
        fig.add_annotation(text=escape(note), xref="paper", yref="paper", x=0, y=-0.02,
                           xanchor="left", yanchor="top", showarrow=False,
                           font=dict(size=11, color="#555"))
    return fig, note


def _fmt_score(name: str, v: float) -> str:
    return f"{escape(name)}: {v:.4g}" if np.isfinite(v) else f"{escape(name)}: not scored"


def _cluster_names(cluster_names: Any, labels: np.ndarray) -> dict[int, str]:
    if cluster_names is None:
        out = {int(c): f"cluster {int(c)}" for c in np.unique(labels) if c >= 0}
    elif isinstance(cluster_names, Mapping):
        out = {int(k): str(v) for k, v in cluster_names.items()}
    else:
        out = {i: str(v) for i, v in enumerate(cluster_names)}
    out.setdefault(-1, "none (no features)")
    return out


# ---------------------------------------------------------------------------------------------
# cluster sizes by source
# ---------------------------------------------------------------------------------------------

def cluster_bar_figure(labels: np.ndarray, sources: Sequence[str] | np.ndarray,
                       cluster_names: Mapping[int, str] | Sequence[str] | None = None,
                       share: bool = False, title: str | None = "Cluster sizes by source",
                       ) -> go.Figure:
    """Stacked bars: one bar per cluster (rows labelled -1 left out), one colour per source.
    ``share=True`` draws each bar as fractions of its cluster (the source mix)."""
    import pandas as pd

    labels = np.asarray(labels, dtype=np.int64)
    sources = np.asarray(sources).astype(str)
    if len(labels) != len(sources):
        raise ValueError(f"labels ({len(labels)}) and sources ({len(sources)}) differ in length")
    keep = labels >= 0
    tab = pd.crosstab(labels[keep], sources[keep])
    names = _cluster_names(cluster_names, labels)
    x = [escape(names.get(int(c), f"cluster {int(c)}")) for c in tab.index]
    totals = tab.sum(axis=1).to_numpy()
    fig = go.Figure()
    for i, s in enumerate(tab.columns):
        counts = tab[s].to_numpy()
        y = counts / np.maximum(totals, 1) if share else counts
        fig.add_trace(go.Bar(
            x=x, y=y, name=escape(s), marker_color=PALETTE[i % len(PALETTE)],
            customdata=np.stack([tab.index.to_numpy(), counts, totals], axis=1),
            hovertemplate=(f"source: {escape(s)}<br>cluster %{{customdata[0]}}<br>"
                           "%{customdata[1]} of %{customdata[2]} rows<extra></extra>")))
    fig.update_layout(barmode="stack", template="plotly_white",
                      title=escape(title) if title else None,
                      yaxis_title="share of cluster" if share else "rows",
                      xaxis=dict(tickangle=-30), legend_title_text="source")
    return fig


# ---------------------------------------------------------------------------------------------
# the K scan
# ---------------------------------------------------------------------------------------------

def kscan_figure(scan: Any, chosen: int | None = None, title: str | None = "Choosing K"
                 ) -> go.Figure:
    """Silhouette (left axis) and inertia (right axis) against K from ``clustering.k_scan``;
    the chosen K (``chosen``, or the scan's ``chosen`` column) is marked."""
    ks = scan["k"].to_numpy()
    if chosen is None and "chosen" in scan.columns and scan["chosen"].any():
        chosen = int(scan.loc[scan["chosen"], "k"].iloc[0])
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=ks, y=scan["silhouette"], mode="lines+markers",
                             name="silhouette (cosine)", yaxis="y",
                             hovertemplate="K=%{x}<br>silhouette %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=ks, y=scan["inertia"], mode="lines+markers",
                             name="inertia (Σ 1 − cos)", yaxis="y2", line=dict(dash="dot"),
                             hovertemplate="K=%{x}<br>inertia %{y:.4g}<extra></extra>"))
    if chosen is not None:
        fig.add_vline(x=chosen, line=dict(color="#f08c00", width=2, dash="dash"),
                      annotation_text=f"K = {chosen}", annotation_position="top")
    fig.update_layout(template="plotly_white", title=escape(title) if title else None,
                      xaxis=dict(title="K (clusters)"),
                      yaxis=dict(title="silhouette"),
                      yaxis2=dict(title="inertia", overlaying="y", side="right",
                                  showgrid=False),
                      legend=dict(orientation="h", y=-0.2), meta={"chosen": chosen})
    return fig
