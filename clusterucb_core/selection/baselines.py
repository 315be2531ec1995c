"""What a user would pick instead of a ClusterUCB run, at the same size and budget, and how
the picks compare: their overlap and how they cover the target's subtasks.

Baselines for a run that kept `n_top` rows after scoring `n_budget` (selection/rds.py):

* random: `n_budget` rows drawn uniformly, scored, the top `n_top` kept;
* RDS+: the top `n_budget` rows by hidden-state cosine, scored, the top `n_top` kept;
* exhaustive LESS: the top `n_top` of every row scored (the ideal the others are judged by).

Scoring the baselines' rows needs their rewards. With the exhaustive scores at hand they are
those (what the gradients would give). Without them, nothing beyond the run's own rows is
scored: random is `n_top` rows drawn uniformly and RDS+ its own top `n_top`, both free of
gradients, and `same_budget` says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clusterucb_core.selection.oracle import mass_share, recall
from clusterucb_core.selection.rds import screen, top_rows

RANDOM, RDS, UCB, EXHAUSTIVE = "random", "RDS+", "ClusterUCB", "exhaustive LESS"


@dataclass(frozen=True)
class Baselines:
    """Selections by method name (best first) and what each cost in gradients."""

    rows: dict[str, np.ndarray]
    gradients: dict[str, int]
    same_budget: bool  # random and RDS+ spent the run's budget (exhaustive scores known)


def baselines(run_rows: np.ndarray, labels: np.ndarray, n_top: int, n_budget: int,
              seed: int, rds: np.ndarray | None = None,
              exhaustive: np.ndarray | None = None, run_name: str = UCB) -> Baselines:
    """The run's selection (named `run_name`) beside random, RDS+ (when `rds` is given) and
    exhaustive LESS (when `exhaustive` is). Rows with a negative label (never drawn by the
    run) are left out of every baseline, as they are out of the run."""
    labels = np.asarray(labels)
    usable = labels >= 0
    if exhaustive is not None:
        usable &= np.isfinite(exhaustive)
    pool = np.flatnonzero(usable)
    rng = np.random.default_rng([int(seed), 0x5EED])
    same = exhaustive is not None
    n_draw = min(n_budget if same else n_top, len(pool))
    drawn = rng.choice(pool, size=n_draw, replace=False)
    out = {run_name: np.asarray(run_rows, dtype=np.int64)}
    grads = {run_name: int(n_budget)}
    if same:
        out[RANDOM] = drawn[top_rows(exhaustive[drawn], n_top)]
        grads[RANDOM] = n_draw
    else:
        out[RANDOM] = np.sort(drawn)
        grads[RANDOM] = 0
    if rds is not None:
        r = np.where(usable, np.asarray(rds, dtype=np.float64), np.nan)
        if same:
            out[RDS] = screen(r, exhaustive, min(n_budget, len(pool)), n_top)
            grads[RDS] = min(n_budget, len(pool))
        else:
            out[RDS] = top_rows(r, n_top)
            grads[RDS] = 0
    if same:
        out[EXHAUSTIVE] = top_rows(np.where(usable, exhaustive, np.nan), n_top)
        grads[EXHAUSTIVE] = len(pool)
    order = [m for m in (RANDOM, RDS, run_name, EXHAUSTIVE) if m in out]
    return Baselines({m: out[m] for m in order}, {m: grads[m] for m in order}, same)


def summary(b: Baselines, n_top: int, exhaustive: np.ndarray | None = None):
    """One row per method: rows kept, gradients computed, and (with exhaustive scores) the
    recall of the exhaustive top-p and the score mass share."""
    import pandas as pd

    recs = []
    for m, rows in b.rows.items():
        rec = {"method": m, "rows": len(rows), "gradients": b.gradients[m]}
        if exhaustive is not None:
            rec["recall"] = recall(rows, exhaustive, n_top)
            rec["mass share"] = mass_share(rows, exhaustive, n_top)
        recs.append(rec)
    return pd.DataFrame(recs)


def overlap(b: Baselines):
    """Square table: rows that the selections of two methods share (diagonal: each size)."""
    import pandas as pd

    names = list(b.rows)
    sets = {m: set(map(int, b.rows[m])) for m in names}
    return pd.DataFrame([[len(sets[a] & sets[c]) for c in names] for a in names],
                        index=names, columns=names)


def per_subtask(b: Baselines, best_subtask: np.ndarray, names: list[str]):
    """Rows of each method per target subtask, a row counted under `best_subtask[row]`
    (one rule for every method; -1: none)."""
    import pandas as pd

    best = np.asarray(best_subtask)
    cols = {}
    for m, rows in b.rows.items():
        codes = best[np.asarray(rows, dtype=np.int64)]
        cols[m] = np.bincount(codes[codes >= 0], minlength=len(names))[:len(names)]
    return pd.DataFrame({"subtask": names, **cols})
