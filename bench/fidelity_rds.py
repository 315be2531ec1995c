"""RDS+ rows for bench_fidelity.py: the product's RDS+ (selection/rds.py, on the shipped
cluster features) replayed on the same exhaustive scores as ClusterUCB.

* "RDS+ (same budget)": the top b of the pool by RDS+ scored, the top 5% of them kept: the
  gradient spend of a ClusterUCB run of budget b;
* "RDS+ (no gradient)": the top 5% by RDS+ itself (the same at every budget).

RDS+ has no randomness, so one replay stands for every seed.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from clusterucb_core.config import RunConfig
from clusterucb_core.selection.oracle import mass_share, recall
from clusterucb_core.selection.rds import screen, top_rows, workspace_rds
from clusterucb_core.selection.run import count_of

SAME_BUDGET, NO_GRADIENT = "RDS+ (same budget)", "RDS+ (no gradient)"


def rds_of(pipe) -> np.ndarray:
    """RDS+ scores of the pool, with the shipped cluster features (cached in the workspace)."""
    from clusterucb_core.pipeline import Pipeline

    cfg = replace(pipe.cfg, cluster_features=RunConfig().cluster_features)
    return workspace_rds(Pipeline(cfg, log=None)).scores.astype(np.float64)


def rds_rows(pipe, name: str, scores: np.ndarray, budgets, top_p: float) -> list[dict]:
    rds = np.where(np.isfinite(scores), rds_of(pipe), np.nan)
    n = len(scores)
    n_top = count_of(top_p, n)
    pure = top_rows(rds, n_top)
    out = []
    for label in (SAME_BUDGET, NO_GRADIENT):
        row = {"pool": name, "features": label, "cond": "-", "k_rule": "-", "K": 0,
               "options": "-", "cost": float("nan")}
        for b in budgets:
            sel = screen(rds, scores, count_of(b, n), n_top) if label == SAME_BUDGET else pure
            row[f"recall@{b:g}"] = recall(sel, scores, n_top)
            row[f"mass@{b:g}"] = mass_share(sel, scores, n_top)
        out.append(row)
    return out


def pick(df, pool: str, col: str = "recall@0.2", label: str = SAME_BUDGET) -> float:
    m = df[(df["pool"] == pool) & (df["features"] == label)]
    return float(m[col].iloc[0]) if len(m) and col in m else float("nan")
