"""What the budget bought: recall and mass share of the exhaustive top-p against the budget
spent, for a run (its rounds in order), for random draws of the same size, and for exhaustive
LESS (every row scored: recall and mass share 1 at a budget of 1).

Pure numpy over a run's `round_drawn` and `scores` and the exhaustive scores, so the UCB page
and the benchmarks draw the same curves.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clusterucb_core.selection.oracle import exhaustive_top, mass_share, recall


def _top_of(rows: np.ndarray, exhaustive: np.ndarray, n_top: int) -> np.ndarray:
    sub = np.full(len(exhaustive), np.nan)
    sub[rows] = exhaustive[rows]
    return exhaustive_top(sub, n_top)


def run_curve(round_drawn: np.ndarray, exhaustive: np.ndarray, n_top: int):
    """After each round: budget spent (fraction of N) and the recall and mass share of the
    top `n_top` among the rows scored so far (a pandas DataFrame)."""
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
