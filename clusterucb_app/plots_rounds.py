"""Plotly figures for the UCB Rounds page (pure functions of numbers; tested without a browser).

* `arm_chart`: every arm's mean reward with its confidence band (mean +- beta*std, the
  `ucb_beta` bound), its policy value, its pulls; exhausted/banned arms greyed, the arm about to
  be played highlighted.
* `value_history`: each arm's policy value after every round.
* `reward_history`: cumulative reward and budget used per round.
* `draws_map`: the 2-D map with drawn rows coloured by their score (the last round's rows
  outlined); every point carries its pool row index in `customdata`.
* `regret_chart`: recall of the exhaustive top-p so far and cumulative regret per round.
* `budget_figure`: recall and mass share against budget (selection.fidelity's curves).
* `coverage_figure`: selected rows per target subtask (selection.subtasks.coverage).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from clusterucb_app.plots import escape  # plotly renders hover and legend text as HTML

GREY = "#c8c8c8"
BLUE = "#3b5bdb"
ORANGE = "#f08c00"
GREEN = "#2b8a3e"


def _finite(x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return np.where(np.isfinite(a), a, np.nan)


def arm_chart(mean: Sequence[float], std: Sequence[float], n: Sequence[int],
              value: Sequence[float] | None = None, *, beta: float = 1.0,
              exhausted: Sequence[bool] | None = None, banned: Sequence[bool] | None = None,
              next_arm: int | None = None, names: Sequence[str] | None = None,
              value_label: str = "policy value", title: str = "Arms",
              predicted: Sequence[float] | None = None) -> go.Figure:
    """Mean reward per arm with a +-beta*std band, the policy value and the pulls; with
    `predicted` (draw order "predicted"), the reward model's mean for each arm's next draws,
    which is what ucb_beta's value adds the band to.

    Greyed: arms that can no longer be played (exhausted or banned). Highlighted: `next_arm`.
    """
    mean = _finite(mean)
    std = _finite(std)
    k = len(mean)
    n = np.asarray(n, dtype=np.int64)
    exhausted = np.zeros(k, bool) if exhausted is None else np.asarray(exhausted, bool)
    banned = np.zeros(k, bool) if banned is None else np.asarray(banned, bool)
    names = [str(i) for i in range(k)] if names is None else [str(s) for s in names]
    x = list(range(k))
    out = exhausted | banned
    colors = [GREY if out[i] else (ORANGE if i == next_arm else BLUE) for i in range(k)]
    band = np.nan_to_num(beta * std, nan=0.0)
    state = ["banned" if banned[i] else "exhausted" if exhausted[i] else
             ("next" if i == next_arm else "open") for i in range(k)]
    hover = [f"arm {i}: {escape(names[i])}<br>pulls {n[i]}<br>mean {mean[i]:.4g}<br>"
             f"std {std[i]:.4g}<br>{state[i]}" for i in range(k)]
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=x, y=mean, mode="markers", name=f"mean ± {beta:g}·std",
        marker=dict(size=11, color=colors, line=dict(width=1, color="#333")),
        error_y=dict(type="data", array=band, visible=True, thickness=2, width=6,
                     color="#555"),
        hovertext=hover, hoverinfo="text", customdata=x))
    if value is not None:
        val = _finite(value)
        fig.add_trace(go.Scatter(
            x=x, y=val, mode="markers", name=value_label,
            marker=dict(symbol="diamond-open", size=13, color=colors, line=dict(width=2)),
            hovertext=[f"arm {i}: {value_label} {val[i]:.4g}" for i in range(k)],
            hoverinfo="text"))
    if predicted is not None:
        pred = _finite(predicted)
        fig.add_trace(go.Scatter(
            x=x, y=pred, mode="markers", name="predicted mean of the next draws",
            marker=dict(symbol="line-ew-open", size=16, color=colors, line=dict(width=3)),
            hovertext=[f"arm {i}: predicted mean of its next draws {pred[i]:.4g}"
                       for i in range(k)], hoverinfo="text"))
    # arms with no mean yet (never drawn: banned before the cold start, or empty) still show,
    # as a hollow marker on the axis: grey × when they cannot be played
    empty = np.flatnonzero(~np.isfinite(mean))
    if len(empty):
        low = float(np.nanmin(mean - band)) if np.isfinite(mean).any() else 0.0
        fig.add_trace(go.Scatter(
            x=[x[i] for i in empty], y=[low] * len(empty), mode="markers", name="not drawn",
            marker=dict(symbol=["x" if out[i] else "circle-open" for i in empty], size=12,
                        color=[colors[i] for i in empty], line=dict(width=2)),
            hovertext=[hover[i] for i in empty], hoverinfo="text"))
    if next_arm is not None and 0 <= next_arm < k:
        fig.add_vrect(x0=next_arm - 0.45, x1=next_arm + 0.45, fillcolor=ORANGE, opacity=0.15,
                      line_width=0)
    # the pulls sit under each arm's number, where no marker can cover them
    ticks = [f"{i}<br><span style='font-size:10px;color:#555'>n={c}</span>"
             for i, c in zip(x, n)]
    fig.update_layout(title=dict(text=title, x=0, xanchor="left", y=0.98, yanchor="top"),
                      xaxis=dict(title="arm (cluster) · pulls", tickmode="array", tickvals=x,
                                 ticktext=ticks),
                      yaxis=dict(title="reward (influence score)"), height=400,
                      margin=dict(l=40, r=10, t=70, b=40),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def value_history(rounds: Sequence[int], values: np.ndarray,
                  names: Sequence[str] | None = None, title: str = "Policy value per arm"
                  ) -> go.Figure:
    """values: [R, K] policy value of every arm after each round (-inf/NaN: not playable)."""
    values = _finite(values)
    fig = go.Figure()
    if values.ndim == 2:
        k = values.shape[1]
        names = [str(i) for i in range(k)] if names is None else list(names)
        for a in range(k):
            fig.add_trace(
                go.Scatter(
                    x=list(rounds),
                    y=values[:, a],
                    mode="lines+markers",
                    name=f"arm {a}",
                    hovertext=escape(names[a]),
                    marker=dict(size=4),
                )
            )
    fig.update_layout(title=title, xaxis_title="round", yaxis_title="value", height=320,
                      margin=dict(l=40, r=10, t=50, b=40))
    return fig


def reward_history(rounds: Sequence[int], cum_reward: Sequence[float],
                   budget_used: Sequence[int], budget_total: int,
                   title: str = "Cumulative reward and budget") -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=list(rounds), y=list(cum_reward), name="cumulative reward",
                             mode="lines+markers", line=dict(color=GREEN)))
    fig.add_trace(go.Scatter(x=list(rounds), y=list(budget_used), name="rows scored",
                             mode="lines", yaxis="y2", line=dict(color=BLUE, dash="dot")))
    fig.update_layout(title=title, xaxis_title="round", height=320,
                      yaxis=dict(title="sum of rewards"),
                      yaxis2=dict(title="rows scored", overlaying="y", side="right",
                                  range=[0, max(budget_total, 1)]),
                      margin=dict(l=40, r=40, t=50, b=40), legend=dict(orientation="h", y=-0.25))
    return fig


def draws_map(xy: np.ndarray, scores: np.ndarray, drawn: np.ndarray,
              last_rows: Sequence[int] = (), hover: Sequence[str] | None = None,
              max_background: int = 50_000, seed: int = 0, title: str = "Drawn rows on the map"
              ) -> go.Figure:
    """Grey background of all rows, drawn rows coloured by score, last round outlined.

    Large pools: the grey background is thinned to `max_background` points (said in the
    title); drawn rows are always all shown.
    """
    xy = np.asarray(xy, dtype=np.float64)
    n = len(xy)
    drawn = np.asarray(drawn, dtype=bool)
    scores = _finite(scores)
    rows = np.arange(n)
    bg = rows[~drawn]
    note = ""
    if len(bg) > max_background:
        rng = np.random.default_rng(seed)
        bg = np.sort(rng.choice(bg, size=max_background, replace=False))
        note = f" (background thinned to {max_background:,} of {int((~drawn).sum()):,} points)"
    fig = go.Figure()
    fig.add_trace(go.Scattergl(x=xy[bg, 0], y=xy[bg, 1], mode="markers", name="not drawn",
                               marker=dict(size=4, color=GREY, opacity=0.5), customdata=bg,
                               hoverinfo="skip"))
    d = rows[drawn]
    text = None if hover is None else [hover[i] for i in d]
    fig.add_trace(go.Scattergl(
        x=xy[d, 0], y=xy[d, 1], mode="markers", name="drawn", customdata=d,
        marker=dict(size=7, color=scores[d], colorscale="Viridis", showscale=True,
                    colorbar=dict(title="score")),
        hovertext=text, hoverinfo="text" if text is not None else "x+y"))
    last = np.asarray(list(last_rows), dtype=np.int64)
    if len(last):
        fig.add_trace(go.Scattergl(x=xy[last, 0], y=xy[last, 1], mode="markers",
                                   name="last round", customdata=last,
                                   marker=dict(size=13, color="rgba(0,0,0,0)",
                                               line=dict(width=2, color=ORANGE))))
    fig.update_layout(title=title + note, height=460, xaxis=dict(visible=False),
                      yaxis=dict(visible=False), margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", y=-0.05))
    return fig


def regret_chart(rounds: Sequence[int], recall_so_far: Sequence[float],
                 cum_regret: Sequence[float], title: str = "Against exhaustive scoring"
                 ) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=list(rounds), y=list(recall_so_far), mode="lines+markers",
                             name="recall of exhaustive top-p (scored so far)",
                             line=dict(color=GREEN)))
    fig.add_trace(go.Scatter(x=list(rounds), y=list(cum_regret), mode="lines",
                             name="cumulative regret", yaxis="y2",
                             line=dict(color=ORANGE, dash="dot")))
    fig.update_layout(title=title, xaxis_title="round", height=320,
                      yaxis=dict(title="recall", range=[0, 1.02], tickformat=".0%"),
                      yaxis2=dict(title="cumulative regret", overlaying="y", side="right",
                                  **regret_axis(cum_regret)),
                      margin=dict(l=40, r=40, t=50, b=40), legend=dict(orientation="h", y=-0.25))
    return fig


def nice_ticks(top: float, n: int = 5) -> list[float]:
    """Ticks 0, step, 2·step, ... covering `top`, the step 1, 2 or 5 × 10^k (never the odd
    values an axis synced to another axis's grid gets)."""
    top = float(top) if np.isfinite(top) and top > 0 else 1.0
    raw = top / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    count = math.ceil(top / step - 1e-9)
    return [round(i * step, 12) for i in range(count + 1)]


def regret_axis(values: Sequence[float]) -> dict[str, Any]:
    """A right-hand axis with its own round ticks from 0 (no grid: the left axis draws it)."""
    vals = np.asarray(list(values), dtype=np.float64)
    top = float(np.nanmax(vals)) if np.isfinite(vals).any() else 1.0
    ticks = nice_ticks(top)
    return {"tickmode": "array", "tickvals": ticks, "range": [0, ticks[-1] * 1.02],
            "tickformat": ".3~g", "showgrid": False, "zeroline": False}


# 24 colours ordered so that neighbours (clusters 0 and 1, 0 and 3, ...) never look alike;
# no grey, which marks banned rows and arms
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#000075", "#f032e6", "#469990", "#9a6324", "#800000",
           "#4363d8", "#3cb44b", "#ffe119", "#911eb4", "#42d4f4", "#fabed4", "#aaffc3",
           "#808000", "#e6194b", "#0082c8"]


def _natural(value: Any) -> tuple:
    """Sort '2: x' before '10: y' (leading integers compared as numbers)."""
    import re

    text = str(value)
    m = re.match(r"\s*(-?\d+)", text)
    return (0, int(m.group(1)), text) if m else (1, 0, text)


ROW_HOVER = "row %{customdata}<extra>%{fullData.name}</extra>"  # the row index only


def cluster_map(xy: np.ndarray, color: Sequence[Any], *, kind: str = "category",
                hover: Sequence[str] | None = None, rows: np.ndarray | None = None,
                max_points: int = 100_000, seed: int = 0, title: str = "Map",
                color_title: str = "", colours: dict[str, str] | None = None,
                overlays: Sequence[tuple[str, Sequence[int], str, str]] = ()) -> go.Figure:
    """The 2-D map for selection (WebGL), one trace per category or one continuous colour.

    Every point carries its pool row index in `customdata`; without `hover` the hover label is
    that index and the trace's name (no text per point is sent). More than `max_points` rows are
    thinned to a seeded sample and the title says so. Rows with NaN coordinates are left out.
    `colours` fixes a category's colour (e.g. curation statuses); `overlays` are
    (name, rows, colour, symbol) marks drawn over the points (pinned, rejected rows), always
    all shown.
    """
    xy = np.asarray(xy, dtype=np.float64)
    n = len(xy)
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    ok = np.isfinite(xy[rows]).all(axis=1)
    rows = rows[ok]
    note = ""
    if len(rows) > max_points:
        rng = np.random.default_rng(seed)
        total = len(rows)
        rows = np.sort(rng.choice(rows, size=max_points, replace=False))
        note = f" — showing a random {max_points:,} of {total:,} points"
    color = np.asarray(color, dtype=object) if kind == "category" else _finite(color)
    fig = go.Figure()
    text = None if hover is None else [hover[i] for i in rows]
    if kind == "category":
        cats = color[rows]
        for i, cat in enumerate(sorted(set(cats.tolist()), key=_natural)):
            sel = np.flatnonzero(cats == cat)
            r = rows[sel]
            colour = (colours or {}).get(str(cat), PALETTE[i % len(PALETTE)])
            fig.add_trace(go.Scattergl(
                x=xy[r, 0], y=xy[r, 1], mode="markers", name=escape(str(cat) or "unmarked"),
                customdata=r, marker=dict(size=5, opacity=0.8, color=colour),
                hovertext=None if text is None else [text[i] for i in sel],
                hoverinfo="text" if text is not None else None,
                hovertemplate=None if text is not None else ROW_HOVER))
    else:
        fig.add_trace(go.Scattergl(
            x=xy[rows, 0], y=xy[rows, 1], mode="markers", name=color_title or "value",
            customdata=rows, hovertext=text, hoverinfo="text" if text is not None else None,
            hovertemplate=None if text is not None else ROW_HOVER,
            marker=dict(size=5, color=color[rows], colorscale="Viridis", showscale=True,
                        colorbar=dict(title=color_title))))
    for name, marked, colour, symbol in overlays:
        r = np.asarray([i for i in marked if 0 <= int(i) < n and np.isfinite(xy[int(i)]).all()],
                       dtype=np.int64)
        if len(r):
            fig.add_trace(go.Scattergl(
                x=xy[r, 0], y=xy[r, 1], mode="markers", name=f"{escape(name)} ({len(r)})",
                customdata=r, hovertext=None if hover is None else [hover[i] for i in r],
                hoverinfo="text" if hover is not None else None,
                hovertemplate=None if hover is not None else ROW_HOVER,
                marker=dict(size=11, symbol=symbol, color=colour, line=dict(width=1,
                                                                            color="#fff"))))
    fig.update_layout(title=title + note, height=560, xaxis=dict(visible=False),
                      yaxis=dict(visible=False), margin=dict(l=10, r=10, t=50, b=10),
                      dragmode="lasso", legend=dict(itemsizing="constant"))
    return fig


def kscan_chart(k: Sequence[int], silhouette: Sequence[float], inertia: Sequence[float],
                chosen: int | None = None, title: str = "Choosing K") -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=list(k), y=list(silhouette), mode="lines+markers",
                             name="silhouette (cosine)", line=dict(color=BLUE)))
    fig.add_trace(go.Scatter(x=list(k), y=list(inertia), mode="lines+markers",
                             name="inertia (sum of 1 - cos)", yaxis="y2",
                             line=dict(color=ORANGE, dash="dot")))
    if chosen is not None:
        fig.add_vline(x=chosen, line_dash="dash", line_color=GREEN,
                      annotation_text=f"chosen K={chosen}")
    fig.update_layout(title=title, xaxis_title="K", height=340,
                      yaxis=dict(title="silhouette"),
                      yaxis2=dict(title="inertia", overlaying="y", side="right"),
                      margin=dict(l=40, r=40, t=50, b=40), legend=dict(orientation="h", y=-0.25))
    return fig


def budget_figure(run, rand, title: str = "What the budget bought"):
    """Recall and mass share against budget: this run, random draws, exhaustive LESS."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("recall of the exhaustive top-p",
                                                        "mass share of the exhaustive top-p"))
    for col, metric in ((1, "recall"), (2, "mass_share")):
        fig.add_trace(go.Scatter(x=run["budget"], y=run[metric], mode="lines+markers",
                                 name="this run", legendgroup="run", showlegend=col == 1,
                                 line={"color": "#1f77b4"}), row=1, col=col)
        fig.add_trace(go.Scatter(x=rand["budget"], y=rand[metric], mode="lines",
                                 name="random draws", legendgroup="random",
                                 showlegend=col == 1, line={"color": "#999", "dash": "dash"}),
                      row=1, col=col)
        fig.add_trace(go.Scatter(x=[1.0], y=[1.0], mode="markers", name="exhaustive LESS",
                                 legendgroup="exhaustive", showlegend=col == 1,
                                 marker={"color": "#d62728", "size": 10, "symbol": "star"}),
                      row=1, col=col)
        fig.update_xaxes(title_text="budget (fraction of the pool scored)", range=[0, 1.02],
                         tickformat=".0%", row=1, col=col)
    fig.update_yaxes(range=[0, 1.05], row=1, col=1)
    fig.update_layout(title=title, height=360, margin={"t": 60, "b": 40})
    return fig


def coverage_figure(table, title: str = "Selected rows per target subtask"):
    """One bar per subtask: how many selected rows serve it best (subtasks.coverage)."""
    fig = go.Figure(go.Bar(x=list(table["subtask"]), y=list(table["rows"]),
                           marker={"color": "#1f77b4"}))
    fig.update_layout(title=title, xaxis_title="subtask", yaxis_title="selected rows",
                      height=320, margin={"t": 50, "b": 40})
    return fig
