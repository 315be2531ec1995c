"""Reward oracles for a selection run, and how good a run was when every score is known.

An oracle scores rows: `.score(rows) -> float array`, NaN for a row that cannot be scored
(flagged: no trained token after truncation). Two kinds:

* `TableOracle(scores)`: precomputed scores (exhaustive scoring, replay, teaching, tests).
* `LazyOracle(ensure_rows, read_scores, missing=None)`: computes features only for rows
  that lack them, then scores. It is built from callables so it does not depend on how the
  feature store or the gradient pipeline are written; `LazyOracle.from_store` wires the
  usual case (FeatureStore + compute function + target features). Nothing is computed
  twice: rows already scored are cached, and with `missing` (e.g. `store.missing`) rows
  whose features are already on disk (a previous, crashed run) are only read.

Metrics, when the exhaustive scores are known (`exhaustive`: a float per pool row):

* `recall`: |selected ∩ T| / |T|, with T the exhaustive top floor(N p) (ties to the lower row).
* `mass_share`: sum of the exhaustive scores of the selected rows / sum over T (how much of
  the best attainable score mass was captured; NaN when the sum over T is not positive).
* regret per round (`regret_table`): with mu_k the mean exhaustive score of cluster k
  (finite scores only) and mu* = max_k mu_k,
  `regret` = mu* - mu_{a_t} (expected reward lost per draw by playing arm a_t rather than the
  best arm; the cold start uses the mean of mu over its rows' clusters),
  `cum_regret` = running sum of regret * rows drawn (expected score mass lost so far),
  `realised_regret` = mu* - mean exhaustive score of the rows actually drawn (can be < 0),
  `recall_so_far` = share of T already scored (equal to the recall of the top-p among the
  scored rows when the rewards are the exhaustive scores).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np


class Oracle(Protocol):
    """Anything that scores rows: `.score(rows) -> float array` (NaN = unscorable row)."""

    def score(self, rows: np.ndarray) -> np.ndarray: ...


def scores_fingerprint(scores: np.ndarray) -> str:
    data = np.ascontiguousarray(np.asarray(scores, dtype=np.float64))
    return hashlib.sha256(data.tobytes()).hexdigest()[:16]


class TableOracle:
    """Scores looked up in a precomputed table (NaN = flagged row)."""

    def __init__(self, scores: np.ndarray, name: str = "table"):
        table = np.asarray(scores, dtype=np.float64)
        if table.ndim != 1:
            raise ValueError(f"a score table must be 1-D, got shape {table.shape}")
        self.table = table
        self.name = name
        self.n_scored = 0  # rows asked for, over all calls

    @property
    def n_rows(self) -> int:
        return len(self.table)

    def score(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self.table)):
            raise IndexError(f"rows outside the score table of {len(self.table)} rows")
        self.n_scored += len(rows)
        return self.table[rows].copy()

    def exhaustive(self) -> np.ndarray:
        return self.table

    def describe(self) -> dict[str, Any]:
        return {"kind": "table", "name": self.name, "n_rows": self.n_rows,
                "fingerprint": scores_fingerprint(self.table)}


class LazyOracle:
    """Compute-on-demand scores.

    ensure_rows(rows): make the features of `rows` exist (compute and store them).
    read_scores(rows): scores of rows whose features exist (NaN for flagged rows).
    missing(rows): optional; the subset of `rows` whose features do not exist yet. Without
      it every row not scored by this oracle before is passed to ensure_rows.
    n_rows: pool size, for `exhaustive()` (all rows known) and index checks.
    """

    def __init__(self, ensure_rows: Callable[[np.ndarray], None],
                 read_scores: Callable[[np.ndarray], np.ndarray],
                 missing: Callable[[np.ndarray], np.ndarray] | None = None,
                 n_rows: int | None = None, name: str = "lazy",
                 info: dict[str, Any] | None = None):
        self.ensure_rows = ensure_rows
        self.read_scores = read_scores
        self.missing = missing
        self.n_rows = n_rows
        self.name = name
        self.info = dict(info or {})
        self._cache: dict[int, float] = {}
        self.n_computed = 0  # rows handed to ensure_rows
        self.n_read = 0  # rows whose scores were read (each at most once)

    def score(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if self.n_rows is not None and len(rows) and (rows.min() < 0
                                                      or rows.max() >= self.n_rows):
            raise IndexError(f"rows outside the pool of {self.n_rows} rows")
        new = np.unique(np.array([r for r in rows.tolist() if r not in self._cache],
                                 dtype=np.int64))
        if len(new):
            todo = new if self.missing is None else np.asarray(self.missing(new),
                                                               dtype=np.int64)
            if len(todo):
                self.ensure_rows(todo)
                self.n_computed += len(todo)
            vals = np.asarray(self.read_scores(new), dtype=np.float64).reshape(-1)
            if len(vals) != len(new):
                raise ValueError(f"read_scores returned {len(vals)} scores for {len(new)} rows")
            self.n_read += len(new)
            self._cache.update(zip(new.tolist(), vals.tolist()))
        return np.array([self._cache[r] for r in rows.tolist()], dtype=np.float64)

    def exhaustive(self) -> np.ndarray | None:
        """Every row's score when all are known to this oracle, else None."""
        if self.n_rows is None or len(self._cache) < self.n_rows:
            return None
        return np.array([self._cache[r] for r in range(self.n_rows)], dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {"kind": "lazy", "name": self.name, "n_rows": self.n_rows, **self.info}

    @classmethod
    def from_store(cls, store: Any, compute_rows: Callable[[np.ndarray], None],
                   target: np.ndarray | Sequence[np.ndarray], subtask_ids: np.ndarray,
                   weights: Sequence[float] | None = None,
                   flagged: np.ndarray | None = None, stores: Sequence[Any] | None = None,
                   score_fn: Callable[..., np.ndarray] | None = None) -> LazyOracle:
        """The usual wiring: features in a FeatureStore (`.missing(rows)`, `.read(rows)`),
        `compute_rows(rows)` writes them, scores = influence_scores against the target.

        Several checkpoints: pass `stores` (one per checkpoint, `store` is then ignored) and a
        list of target arrays with `weights`; `compute_rows` must fill every store.
        flagged: optional bool per pool row; those rows score NaN.
        score_fn: `(train, target, subtask_ids, weights) -> scores`; default
          `influence.influence_scores` (max over subtasks of the mean cosine).
        """
        if score_fn is None:
            from clusterucb_core.features.influence import influence_scores as score_fn

        all_stores = list(stores) if stores is not None else [store]

        def missing(rows: np.ndarray) -> np.ndarray:
            out = [np.asarray(s.missing(rows), dtype=np.int64) for s in all_stores]
            return np.unique(np.concatenate(out)) if out else rows[:0]

        def read_scores(rows: np.ndarray) -> np.ndarray:
            feats = [s.read(rows) for s in all_stores]
            train = feats if stores is not None else feats[0]
            out = np.asarray(score_fn(train, target, subtask_ids, weights),
                             dtype=np.float64)
            if flagged is not None:
                out = np.where(np.asarray(flagged)[rows], np.nan, out)
            return out

        info = {"stores": [str(getattr(s, "path", "")) for s in all_stores],
                "store_fingerprints": [getattr(s, "fingerprint", None) for s in all_stores],
                "weights": None if weights is None else [float(w) for w in weights]}
        return cls(compute_rows, read_scores, missing, n_rows=int(all_stores[0].n_rows),
                   info=info)


# --------------------------------------------------------------------------------------
# metrics against exhaustive scores


def exhaustive_top(exhaustive: np.ndarray, n_top: int) -> np.ndarray:
    """The rows of the exhaustive top `n_top` (finite scores; ties to the lower row)."""
    s = np.asarray(exhaustive, dtype=np.float64)
    cand = np.flatnonzero(np.isfinite(s))
    order = np.lexsort((cand, -s[cand]))
    return cand[order[:n_top]]


def recall(selected: np.ndarray, exhaustive: np.ndarray, n_top: int) -> float:
    top = exhaustive_top(exhaustive, n_top)
    if len(top) == 0:
        return float("nan")
    return float(np.isin(top, np.asarray(selected, dtype=np.int64)).sum() / len(top))


def mass_share(selected: np.ndarray, exhaustive: np.ndarray, n_top: int) -> float:
    s = np.asarray(exhaustive, dtype=np.float64)
    top = exhaustive_top(s, n_top)
    denom = float(s[top].sum())
    if not denom > 0:
        return float("nan")
    sel = np.asarray(selected, dtype=np.int64)
    vals = s[sel]
    return float(vals[np.isfinite(vals)].sum() / denom)


def cluster_means(exhaustive: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean exhaustive score per cluster (finite scores only; NaN for a cluster without)."""
    s = np.asarray(exhaustive, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    k = int(labels.max()) + 1 if len(labels) else 0
    ok = np.isfinite(s) & (labels >= 0)
    sums = np.bincount(labels[ok], weights=s[ok], minlength=k)
    counts = np.bincount(labels[ok], minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def regret_table(records: Sequence[Any], exhaustive: np.ndarray, labels: np.ndarray,
                 n_top: int):
    """Per-round regret and recall-so-far (see the module docstring); a pandas DataFrame."""
    import pandas as pd

    s = np.asarray(exhaustive, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    mu = cluster_means(s, labels)
    best = int(np.nanargmax(mu)) if np.isfinite(mu).any() else -1
    mu_star = float(mu[best]) if best >= 0 else float("nan")
    top = set(exhaustive_top(s, n_top).tolist())
    n_t = max(len(top), 1)
    got, cum = 0, 0.0
    out = []
    for rec in records:
        rows = np.asarray(rec.rows, dtype=np.int64)
        if len(rows) == 0:
            continue
        arm_mu = float(np.nanmean(mu[labels[rows]]))
        regret = mu_star - arm_mu
        cum += regret * len(rows)
        drawn = s[rows]
        drawn = drawn[np.isfinite(drawn)]
        got += sum(1 for r in rows.tolist() if r in top)
        out.append({"round": rec.round, "kind": rec.kind, "arm": rec.arm, "rows": len(rows),
                    "best_arm": best, "best_mean": mu_star, "arm_mean": arm_mu,
                    "regret": regret, "cum_regret": cum,
                    "realised_regret": (mu_star - float(drawn.mean())) if len(drawn)
                    else float("nan"),
                    "recall_so_far": got / n_t})
    df = pd.DataFrame(out, columns=["round", "kind", "arm", "rows", "best_arm", "best_mean",
                                    "arm_mean", "regret", "cum_regret", "realised_regret",
                                    "recall_so_far"])
    df["arm"] = df["arm"].astype("Int64")  # None (cold start) stays missing, not a float
    return df


def run_metrics(run: Any, exhaustive: np.ndarray | None = None) -> dict[str, Any] | None:
    """Recall, mass share and the per-round table for a SelectionRun; None when the
    exhaustive scores are unknown (pass them, or use an oracle whose `exhaustive()` knows)."""
    if exhaustive is None:
        ex = getattr(run.oracle, "exhaustive", None)
        exhaustive = ex() if callable(ex) else None
    if exhaustive is None:
        return None
    sel = run.selected()
    return {"recall": recall(sel, exhaustive, run.n_top),
            "mass_share": mass_share(sel, exhaustive, run.n_top),
            "n_top": run.n_top, "budget_used": run.budget_used,
            "rounds": regret_table(run.records, exhaustive, run.labels, run.n_top)}
