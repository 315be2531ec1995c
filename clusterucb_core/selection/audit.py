"""The audit meter: how much of exhaustive LESS's top-p a run found, without scoring every row.

Every selected row has its exact score, so what a run does not know is only the scores of
the rows it never drew, and through them the exhaustive top-p. The estimate fills them in:

1. a reward model (surrogate.RewardModel, the fixed-effects ridge on the cluster features;
   without features, each cluster's mean) is fitted on every scored row and predicts each
   unscored row;
2. its errors are measured on the cold start, which draws every cluster's rows uniformly at
   random (a probability sample of the pool, whatever the draw order of later rounds), each
   cold-start row predicted by a model fitted without its fold (cross-fitting), so the error
   is that of a row the model has not seen;
3. an unscored row's score is drawn as its prediction plus the error of one of the quarter
   of the cold-start rows whose predictions are nearest its own (the errors depend on the
   prediction: high predictions are over-estimates more often, so errors pooled over all
   rows put too many unscored rows in the top-p);
4. each of `n_boot` bootstrap replicates resamples the cold start within each cluster
   (stratified, so a cluster's rows stand for its share of the pool: Horvitz-Thompson when
   clusters draw unequal fractions) and fills in the unscored rows; the replicate's top-p of
   the known and filled-in scores gives a recall and a mass share. The median is the
   estimate, the 5% and 95% quantiles the 90% interval.

The meter is a model's guess, checked only on the cold start: it says so where it shows, and
`bench/bench_fidelity.py --audit` measures how often its interval holds the true recall.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from clusterucb_core.selection.run import LedgerView, cluster_order
from clusterucb_core.selection.surrogate import RewardModel

FOLDS = 5
N_BOOT = 200
LEVEL = 0.9


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval (`level`, e.g. 0.9)."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": round(self.value, 4), "low": round(self.low, 4),
                "high": round(self.high, 4)}

    def text(self) -> str:
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}]"


@dataclass(frozen=True)
class Audit:
    """Estimated recall and mass share of the exhaustive top-p, and what checking would cost."""

    recall: Estimate
    mass_share: Estimate
    n_sample: int  # cold-start rows the errors were measured on
    n_unscored: int  # scorable rows never drawn: the gradients an exhaustive check costs
    level: float = LEVEL

    def sentence(self) -> str:
        pct = f"{self.level:.0%}"
        return (f"estimated recall {self.recall.text()}; checking it exhaustively would cost "
                f"{self.n_unscored:,} gradients ({pct} interval; mass share "
                f"{self.mass_share.text()})")

    def to_dict(self) -> dict[str, Any]:
        return {"recall_estimate": self.recall.to_dict(),
                "mass_share_estimate": self.mass_share.to_dict(),
                "audit": {"level": self.level, "sample_rows": self.n_sample,
                          "unscored_rows": self.n_unscored,
                          "method": "ridge on the cluster features, errors from the "
                                    "cross-fitted cold start, stratified bootstrap"}}


def _fit_predict(F: np.ndarray, labels: np.ndarray, k: int, rows: np.ndarray,
                 scores: np.ndarray, want: np.ndarray) -> np.ndarray:
    model = RewardModel(F, labels, k)
    model.add(rows, scores[rows])
    model.fit()
    return model.predict(want)


def audit_scores(scores: np.ndarray, labels: np.ndarray, sample: np.ndarray,
                 selected: np.ndarray, n_top: int, features: np.ndarray | None = None, *,
                 n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> Audit | None:
    """The audit of a selection (module docstring). scores: per pool row, NaN where not
    scored; labels: cluster per row (< 0: never drawn, not scorable); sample: the rows drawn
    uniformly within their cluster (the cold start); features: [N, d] unit rows or None.
    None when the sample is too small to measure errors on (fewer than 2 * FOLDS rows)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    sample = np.asarray(sample, dtype=np.int64)
    sample = sample[np.isfinite(scores[sample]) & (labels[sample] >= 0)]
    if len(sample) < 2 * FOLDS or n_top <= 0:
        return None
    n, k = len(scores), int(labels.max()) + 1
    F = np.zeros((n, 1), dtype=np.float32) if features is None else features
    known = np.flatnonzero(np.isfinite(scores) & (labels >= 0))
    unknown = np.flatnonzero((labels >= 0) & ~np.isfinite(scores))
    rng = np.random.default_rng([int(seed), 0xA0D1])

    fold = rng.permutation(len(sample)) % FOLDS
    oof = np.full(len(sample), np.nan)
    for f in range(FOLDS):
        out = sample[fold == f]
        oof[fold == f] = _fit_predict(F, labels, k, known[~np.isin(known, out)], scores, out)
    pred = _fit_predict(F, labels, k, known, scores, unknown)
    size = np.bincount(labels[labels >= 0], minlength=k)
    drawn = np.bincount(labels[sample], minlength=k)
    weight = size[labels[sample]] / drawn[labels[sample]]  # 1 / inclusion probability
    pool_mean = float(np.sum(weight * scores[sample]) / weight.sum())
    oof = np.where(np.isfinite(oof), oof, pool_mean)  # a cluster with one scored row
    pred = np.where(np.isfinite(pred), pred, pool_mean)  # a banned cluster: nothing scored
    err = scores[sample] - oof

    strata = [np.flatnonzero(labels[sample] == c) for c in np.unique(labels[sample])]
    m = max(10, len(sample) // 4)  # bench_audit.py: narrower windows under-cover
    base = np.where(np.isfinite(scores), scores, -np.inf)
    sel = np.asarray(selected, dtype=np.int64)
    rec, mass = np.empty(n_boot), np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([s[rng.integers(len(s), size=len(s))] for s in strata])
        order = np.argsort(oof[idx], kind="stable")
        near_pred, near_err = oof[idx][order], err[idx][order]
        win = min(m, len(idx))
        lo = np.clip(np.searchsorted(near_pred, pred) - win // 2, 0, len(idx) - win)
        filled = base.copy()
        filled[unknown] = pred + near_err[lo + rng.integers(win, size=len(unknown))]
        top = np.argpartition(-filled, n_top - 1)[:n_top]
        rec[b] = np.isin(sel, top).sum() / n_top
        vals = filled[sel]
        denom = filled[top][np.isfinite(filled[top])].sum()
        mass[b] = vals[np.isfinite(vals)].sum() / denom if denom > 0 else np.nan
    q = ((1 - level) / 2, 0.5, (1 + level) / 2)

    def est(x: np.ndarray) -> Estimate:
        lo_, mid, hi = np.nanquantile(x, q)
        return Estimate(float(mid), float(lo_), float(hi))

    return Audit(est(rec), est(mass), int(len(sample)), int(len(unknown)), level)


def cold_start_rows(round_drawn: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray | None:
    """A run's cold-start rows when they are each cluster's seeded uniform draw (the first
    rows of `cluster_order`), else None: the audit's sample must not depend on the draw order
    of later rounds, nor on a cold start that another rule chose."""
    labels = np.asarray(labels)
    rows = np.flatnonzero(np.asarray(round_drawn) == 0)
    for c in np.unique(labels[rows]):
        members = np.flatnonzero(labels == c)
        got = np.sort(rows[labels[rows] == c])
        if not np.array_equal(got, np.sort(cluster_order(members, seed, int(c))[:len(got)])):
            return None
    return rows


def audit_result(result: Any, features: np.ndarray | None = None, **kw: Any) -> Audit | None:
    """The audit of a SelectionResult (what an export writes): None without a uniform cold
    start. features: the run's cluster features (None: each cluster's mean is the model)."""
    sample = cold_start_rows(result.round_drawn, result.labels, result.spec.seed)
    if sample is None:
        return None
    return audit_scores(result.scores, result.labels, sample, result.rows, result.n_top,
                        features, seed=result.spec.seed, **kw)


def audit_run(run: Any, features: np.ndarray | None = None, ledger: Any = None,
              **kw: Any) -> Audit | None:
    """The audit of a SelectionRun's own top-p (no hand edits, unless `ledger` is given: pins
    beyond the slots would make a curated set's mass share exceed 1); the features default to
    the run's own (present when its draw order reads them)."""
    view = LedgerView() if ledger is None else ledger
    return audit_result(run.result(view), run.features if features is None else features,
                        **kw)
