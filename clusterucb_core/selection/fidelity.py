"""What the budget bought: recall and mass share of the exhaustive top-p against the budget
spent, for a run (its rounds in order), for random draws of the same size, and for exhaustive
LESS (every row scored: recall and mass share 1 at a budget of 1).

Pure numpy over a run's `round_drawn` and `scores` and the exhaustive scores, so the UCB page
and the benchmarks draw the same curves.
"""

from __future__ import annotations

import numpy as np

from clusterucb_core.selection.oracle import exhaustive_top, mass_share, recall


def _top_of(rows: np.ndarray, exhaustive: np.ndarray, n_top: int) -> np.ndarray:
    sub = np.full(len(exhaustive), np.nan)
    sub[rows] = exhaustive[rows]
    return exhaustive_top(sub, n_top)


def run_curve(round_drawn: np.ndarray, exhaustive: np.ndarray, n_top: int):
    """After each round: budget spent (fraction of N) and the recall and mass share of the
    top `n_top` among the rows scored so far (a pandas DataFrame)."""
    import pandas as pd

    s = np.asarray(exhaustive, dtype=np.float64)
    drawn = np.asarray(round_drawn, dtype=np.int64)
    n = len(s)
    out = []
    for r in np.unique(drawn[drawn >= 0]):
        rows = np.flatnonzero((drawn >= 0) & (drawn <= r))
        sel = _top_of(rows, s, n_top)
        out.append({"budget": len(rows) / n, "recall": recall(sel, s, n_top),
                    "mass_share": mass_share(sel, s, n_top), "round": int(r)})
    return pd.DataFrame(out, columns=["budget", "recall", "mass_share", "round"])


def random_curve(exhaustive: np.ndarray, n_top: int, budgets: np.ndarray | None = None,
                 seeds: int = 5, exclude: np.ndarray | None = None):
    """Mean recall and mass share of scoring a random `budget` of the scorable rows and
    keeping their top `n_top`, over `seeds` seeded draws."""
    import pandas as pd

    s = np.asarray(exhaustive, dtype=np.float64)
    n = len(s)
    ok = np.flatnonzero(np.isfinite(s) & (True if exclude is None else ~np.asarray(exclude)))
    budgets = np.linspace(0.05, 1.0, 20) if budgets is None else np.asarray(budgets)
    out = []
    for b in budgets:
        m = min(int(round(b * n)), len(ok))
        rec, mass = [], []
        for seed in range(seeds):
            rows = np.random.default_rng([seed, 11]).choice(ok, size=m, replace=False)
            sel = _top_of(rows, s, n_top)
            rec.append(recall(sel, s, n_top))
            mass.append(mass_share(sel, s, n_top))
        out.append({"budget": float(b), "recall": float(np.mean(rec)),
                    "mass_share": float(np.mean(mass))})
    return pd.DataFrame(out, columns=["budget", "recall", "mass_share"])


def budget_figure(run, rand, title: str = "What the budget bought"):
    """Recall and mass share against budget: this run, random draws, exhaustive LESS."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

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
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=list(table["subtask"]), y=list(table["rows"]),
                           marker={"color": "#1f77b4"}))
    fig.update_layout(title=title, xaxis_title="subtask", yaxis_title="selected rows",
                      height=320, margin={"t": 50, "b": 40})
    return fig
