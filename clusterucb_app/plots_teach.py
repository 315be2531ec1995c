"""Plotly figures for the playground, the policy race and the run comparison.

Pure functions of numbers and DataFrames (the outputs of `playground.py` and `race.py`);
tested without a browser. Colours follow the contestant order so a policy keeps its colour on
every chart of a page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PALETTE = ("#3b5bdb", "#f08c00", "#2b8a3e", "#c92a2a", "#7048e8", "#795548", "#e64980",
           "#0c8599", "#868e96", "#5c940d")
GOLD = "#f59f00"
GREY = "#adb5bd"


def color_of(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


# --------------------------------------------------------------------------------------
# race


def race_curve_chart(band: pd.DataFrame, metric: str = "recall",
                     contestants: Sequence[str] | None = None, *, title: str | None = None,
                     y_title: str | None = None, budget: float | None = None,
                     baseline: bool | None = None, band_kind: str = "minmax") -> go.Figure:
    """One line per contestant (mean over seeds) with a shaded band, against the share of the
    pool scored. band_kind: "minmax" (lo..hi over seeds) or "std" (mean +- std).
    For recall, a dotted line shows what scoring random rows finds on average (recall = share
    scored) unless `baseline` is False."""
    b = band[band["metric"] == metric]
    names = list(dict.fromkeys(b["contestant"])) if contestants is None else list(contestants)
    fig = go.Figure()
    for i, name in enumerate(names):
        g = b[b["contestant"] == name].sort_values("budget_used")
        if g.empty:
            continue
        x = (g["budget_share"] * 100).to_numpy()
        mean = g["mean"].to_numpy(dtype=float)
        if band_kind == "std":
            lo, hi = mean - g["std"].to_numpy(float), mean + g["std"].to_numpy(float)
            if metric == "recall":
                lo, hi = np.clip(lo, 0, 1), np.clip(hi, 0, 1)
        else:
            lo, hi = g["lo"].to_numpy(float), g["hi"].to_numpy(float)
        col = color_of(i)
        n_seeds = int(g["n_seeds"].iloc[0])
        if n_seeds > 1:
            fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]),
                                     y=np.concatenate([hi, lo[::-1]]), fill="toself",
                                     fillcolor=_rgba(col, 0.15), line=dict(width=0),
                                     hoverinfo="skip", showlegend=False, legendgroup=name,
                                     name=f"{name} band", line_shape="hv"))
        fig.add_trace(go.Scatter(x=x, y=mean, mode="lines", name=name, legendgroup=name,
                                 line=dict(color=col, width=2.5, shape="hv"),
                                 hovertemplate=f"{name}<br>%{{x:.1f}}% scored<br>"
                                               f"{metric} %{{y:.3f}}<extra></extra>"))
    if metric == "recall" and baseline is not False and len(b):
        xmax = float(b["budget_share"].max()) * 100 if budget is None else budget * 100
        fig.add_trace(go.Scatter(x=[0, xmax], y=[0, xmax / 100], mode="lines",
                                 name="scoring random rows (expected)",
                                 line=dict(color=GREY, dash="dot"), hoverinfo="skip"))
    default_titles = {"recall": ("Recall of the true top-p vs budget", "recall of the true top-p"),
                      "cum_regret": ("Cumulative regret vs the best arm", "regret"),
                      "regret_vs_oracle": ("Regret vs an oracle that knows the means",
                                           "expected reward lost")}
    t, yt = default_titles.get(metric, (metric, metric))
    fig.update_layout(title=title or t, xaxis_title="rows scored (% of the pool)",
                      yaxis_title=y_title or yt, height=400, hovermode="x unified",
                      margin=dict(l=50, r=10, t=50, b=40),
                      legend=dict(orientation="h", y=-0.18))
    if metric == "recall":
        fig.update_yaxes(range=[0, 1.02])
    return fig


def race_heatmaps(draws: pd.DataFrame, contestants: Sequence[str], k: int, n_seeds: int, *,
                  names: Sequence[str] | None = None, best: int | None = None,
                  cols: int = 2, max_cols: int = 120) -> go.Figure:
    """One draws heat map per contestant in a grid, on one colour scale."""
    from clusterucb_core.teach.race import draw_matrix

    mats = [draw_matrix(draws, c, k, n_seeds, max_cols=max_cols) for c in contestants]
    zmax = max([float(m.max()) for m, _ in mats if m.size] + [1e-9])
    cols = max(1, min(cols, len(contestants)))
    rows = int(np.ceil(len(contestants) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(contestants),
                        horizontal_spacing=0.06, vertical_spacing=0.16 if rows > 1 else 0.1)
    ylabels = [("★ " if i == best else "") + (names[i] if names is not None else str(i))
               for i in range(k)]
    for j, (mat, labels) in enumerate(mats):
        r, c = divmod(j, cols)
        fig.add_trace(go.Heatmap(z=mat, x=list(range(mat.shape[1])), y=ylabels,
                                 customdata=np.array([labels] * k, dtype=object),
                                 colorscale="Viridis", zmin=0, zmax=zmax,
                                 showscale=j == 0, colorbar=dict(title="rows", len=0.5),
                                 hovertemplate="round %{customdata}<br>%{y}<br>%{z:.2g} rows"
                                               "<extra></extra>"), row=r + 1, col=c + 1)
        if r == rows - 1 or j + cols >= len(contestants):  # the lowest plot of its column
            fig.update_xaxes(title_text="round (0 = cold start)", row=r + 1, col=c + 1)
        fig.update_yaxes(type="category", showticklabels=c == 0, row=r + 1, col=c + 1)
    fig.update_layout(title=f"Rows drawn per cluster per round (mean over {n_seeds} seed(s))",
                      height=max(300, rows * (22 * k + 110) + 60),
                      margin=dict(l=10, r=10, t=70, b=40))
    return fig


def race_summary_chart(summary: pd.DataFrame, title: str = "Final recall of the true top-p"
                       ) -> go.Figure:
    """Bars: final recall per contestant (mean over seeds, error bar = std)."""
    fig = go.Figure(go.Bar(
        x=summary["contestant"], y=summary["recall_mean"],
        error_y=dict(type="data", array=summary["recall_std"], visible=True),
        marker_color=[color_of(i) for i in range(len(summary))],
        text=[f"{v:.0%}" for v in summary["recall_mean"]], textposition="outside",
        hovertemplate="%{x}<br>recall %{y:.3f}<extra></extra>"))
    fig.update_layout(title=title, yaxis=dict(title="recall", range=[0, 1.1]), height=340,
                      margin=dict(l=50, r=10, t=50, b=40))
    return fig


# --------------------------------------------------------------------------------------
# playground


def regret_race_chart(tables: dict[str, pd.DataFrame], n_rows: int,
                      metric: str = "regret_vs_oracle",
                      title: str = "Regret so far vs an oracle that knows the means") -> go.Figure:
    """Several runs' regret (or recall) so far against rows scored; tables are
    `Playground.regret` outputs, keyed by the run's label."""
    fig = go.Figure()
    for i, (name, t) in enumerate(tables.items()):
        if t is None or t.empty:
            continue
        x = np.concatenate([[0.0], t["budget_used"].to_numpy(float) / n_rows * 100])
        y = np.concatenate([[0.0], t[metric].to_numpy(float)])
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name,
                                 line=dict(color=color_of(i), width=2.5, shape="hv"),
                                 marker=dict(size=5)))
    fig.update_layout(title=title, xaxis_title="rows scored (% of the pool)",
                      yaxis_title={"recall_so_far": "recall of the true top-p"}.get(
                          metric, "expected reward lost"),
                      height=340, margin=dict(l=50, r=10, t=50, b=40),
                      legend=dict(orientation="h", y=-0.25))
    if metric == "recall_so_far":
        fig.update_yaxes(range=[0, 1.02])
    return fig


def overlap_chart(overlap: dict[str, Any], label_a: str = "A", label_b: str = "B") -> go.Figure:
    """One stacked bar: only A, both, only B."""
    parts = [(f"only {label_a}", overlap["only_a"], color_of(0)),
             ("both", overlap["both"], "#495057"),
             (f"only {label_b}", overlap["only_b"], color_of(1))]
    fig = go.Figure()
    for name, v, col in parts:
        fig.add_trace(go.Bar(y=["selected rows"], x=[v], name=f"{name}: {v}", orientation="h",
                             marker_color=col, text=[str(v)], textposition="inside"))
    j = overlap.get("jaccard", float("nan"))
    fig.update_layout(barmode="stack", height=170, margin=dict(l=10, r=10, t=40, b=10),
                      title=f"Overlap of the selections (Jaccard {j:.2f})",
                      legend=dict(orientation="h", y=-0.3, traceorder="normal"),
                      xaxis_title="rows")
    return fig


def counts_chart(df: pd.DataFrame, key: str, *, names: dict[int, str] | None = None,
                 label_a: str = "A", label_b: str = "B", title: str | None = None) -> go.Figure:
    """Grouped bars: selected rows per cluster/source in A and in B."""
    x = [names.get(int(v), str(v)) if names else str(v) for v in df[key]]
    fig = go.Figure([go.Bar(x=x, y=df["a"], name=label_a, marker_color=color_of(0)),
                     go.Bar(x=x, y=df["b"], name=label_b, marker_color=color_of(1))])
    fig.update_layout(barmode="group", title=title or f"Selected rows per {key}",
                      xaxis=dict(title=key, type="category"), yaxis_title="rows", height=340,
                      margin=dict(l=50, r=10, t=50, b=40), legend=dict(orientation="h", y=-0.3))
    return fig


def score_dist_chart(scores: pd.DataFrame, which: str = "selected", label_a: str = "A",
                     label_b: str = "B", nbins: int = 40) -> go.Figure:
    """Overlaid histograms of the scores of each run's selected (or scored) rows."""
    s = scores[scores["set"] == which]
    fig = go.Figure()
    for i, (run, label) in enumerate((("A", label_a), ("B", label_b))):
        v = s.loc[s["run"] == run, "score"].to_numpy(float)
        fig.add_trace(go.Histogram(x=v, name=f"{label} ({len(v)})", opacity=0.6,
                                   nbinsx=nbins, marker_color=color_of(i)))
    fig.update_layout(barmode="overlay", title=f"Scores of the {which} rows",
                      xaxis_title="score", yaxis_title="rows", height=320,
                      margin=dict(l=50, r=10, t=50, b=40), legend=dict(orientation="h", y=-0.3))
    return fig
