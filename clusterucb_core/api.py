"""The Python API, the way scikit-learn users expect it: estimators with `fit` and fitted
attributes ending in `_`, over the engine's own workers (kmeans.py, selection.py).

Parameters are stored as given by `__init__` and checked when `fit` runs, by the settings
dataclasses of config.py: the rules live in one place, and an error names the parameter, the
value and the rule (`budget = 2: must be a finite number > 0 and <= 1`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from clusterucb_core.clustering.kmeans import cluster_features
from clusterucb_core.config import ClusterSpec, ConfigError, SelectionSpec, check_device
from clusterucb_core.features.rowsource import normalize_rows
from clusterucb_core.selection.oracle import TableOracle
from clusterucb_core.selection.rds import rds_scores, screen, top_rows
from clusterucb_core.selection.run import SelectionRun, count_of


def _build(cls: type, names: dict[str, str], **params: Any) -> Any:
    """A settings dataclass from estimator parameters; an error names the parameter as the
    estimator calls it (`random_state`, not the spec's `seed`)."""
    try:
        return cls(**params)
    except ConfigError as exc:
        raise ConfigError(names.get(exc.key, exc.key), exc.value, exc.rule) from None


class SphericalKMeans(ClusterMixin, BaseEstimator):
    """Spherical k-means: rows are L2-normalised, similarity is the cosine (docs/METHOD.md s.3).

    k-means++ seeding, Lloyd iterations to `tol`, empty clusters re-seeded; rows that cannot be
    normalised (NaN/inf or all zero) get the label -1. `minibatch=True` streams the rows in
    chunks of `batch_size` (for a float16 memmap larger than memory).

    Fitted attributes: `labels_` (int64 [N]), `cluster_centers_` (float32 [K, d], unit rows),
    `inertia_` (sum of 1 - cos to the own centre), `n_iter_`.
    """

    def __init__(self, n_clusters: int = 20, *, random_state: int = 0, max_iter: int = 100,
                 tol: float = 1e-4, n_init: int = 3, minibatch: bool = False,
                 batch_size: int = 4096, device: str = "auto"):
        self.n_clusters = n_clusters
        self.random_state = random_state
        self.max_iter = max_iter
        self.tol = tol
        self.n_init = n_init
        self.minibatch = minibatch
        self.batch_size = batch_size
        self.device = device

    def _spec(self) -> ClusterSpec:
        if self.n_clusters in (0, "auto"):
            raise ConfigError("n_clusters", self.n_clusters, "must be an integer >= 1 (the "
                                                             "K scan is kscan.k_scan)")
        check_device(self.device)
        return _build(ClusterSpec, {"k": "n_clusters", "seed": "random_state"},
                      k=self.n_clusters, seed=self.random_state, max_iter=self.max_iter,
                      tol=self.tol, n_init=self.n_init, minibatch=self.minibatch,
                      batch_size=self.batch_size)

    def fit(self, X: Any, y: None = None) -> SphericalKMeans:
        """Cluster the rows of X ([N, d] array, memmap or FeatureStore)."""

        spec = self._spec()
        res = cluster_features(X, int(spec.k), seed=spec.seed, max_iter=spec.max_iter,
                               tol=spec.tol, minibatch=spec.minibatch,
                               batch_size=spec.batch_size, device=self.device,
                               n_init=spec.n_init)
        self.labels_ = res.labels
        self.cluster_centers_ = res.centroids
        self.inertia_ = float(res.inertia)
        self.n_iter_ = int(res.n_iter)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The nearest centre (largest cosine) of each row; -1 for rows without a direction."""

        if not hasattr(self, "cluster_centers_"):
            raise ValueError("this SphericalKMeans is not fitted yet; call fit(X) first")
        unit, ok = normalize_rows(np.asarray(X))
        labels = np.argmax(unit @ self.cluster_centers_.T, axis=1).astype(np.int64)
        labels[~ok] = -1
        return labels


class _CallableOracle:
    """Rewards from a function of row indices, called only for the rows the bandit draws."""

    def __init__(self, fn: Callable[[np.ndarray], Any]):
        self.fn = fn

    def score(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(np.asarray(rows, dtype=np.int64)), dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {"kind": "callable", "name": getattr(self.fn, "__name__", "rewards")}


_SEL = SelectionSpec()  # the defaults, declared once in config.py


class ClusterUCB(BaseEstimator):
    """ClusterUCB selection: a bandit over clusters spends a scoring budget, then keeps the
    top-p of the scored rows (docs/METHOD.md s.4).

    `fit(labels, rewards)`: `labels` is the cluster of each pool row (-1: never drawn);
    `rewards` is one score per row (an array), or a function `rows -> scores` called only for
    the rows the bandit draws (so nothing else is computed). Fractions are of the pool size.
    `features` (the rows that were clustered, [N, d]) are needed by `draw_order="predicted"`
    (each cluster's draws ordered by a reward model on them; the pipeline's default) and
    `"similar"`; the default `"random"` draws as the paper does. `arms_per_round=m` plays
    the m arms of largest index each round (selection/topm.py).

    Parameters are `SelectionSpec`'s fields, with its defaults, rules and help
    (`random_state` is its `seed`; `clusterucb select --help` prints the help).

    Fitted attributes: `selected_` (row indices, best first), `scores_` (float [N], NaN where
    not scored), `history_` (DataFrame, one row per round: arm, rows drawn, mean reward,
    budget used and why), `run_` (the `SelectionRun`, for everything else).
    """

    def __init__(self, policy: str = _SEL.policy, *, beta: float = _SEL.beta,
                 budget: float = _SEL.budget, top_p: float = _SEL.top_p,
                 cold_start: float = _SEL.cold_start, draw_batch: int = _SEL.draw_batch,
                 quantile: float = _SEL.quantile, draw_order: str = _SEL.draw_order,
                 random_state: int = _SEL.seed, arms_per_round: int = _SEL.arms_per_round):
        self.policy = policy
        self.beta = beta
        self.budget = budget
        self.top_p = top_p
        self.cold_start = cold_start
        self.draw_batch = draw_batch
        self.quantile = quantile
        self.draw_order = draw_order
        self.random_state = random_state
        self.arms_per_round = arms_per_round

    def _spec(self) -> SelectionSpec:
        return _build(SelectionSpec, {"seed": "random_state"}, policy=self.policy,
                      beta=self.beta, cold_start=self.cold_start, budget=self.budget,
                      top_p=self.top_p, draw_batch=self.draw_batch, seed=self.random_state,
                      quantile=self.quantile, draw_order=self.draw_order,
                      arms_per_round=self.arms_per_round)

    def fit(self, labels: Any, rewards: Any, features: Any = None) -> ClusterUCB:
        import pandas as pd


        spec = self._spec()
        labels = np.asarray(labels)
        if callable(rewards):
            oracle: Any = _CallableOracle(rewards)
        else:
            table = np.asarray(rewards, dtype=np.float64)
            if table.shape != labels.shape:
                raise ValueError(f"rewards has shape {table.shape} but labels has "
                                 f"{labels.shape}: give one score per row, or a function "
                                 "rows -> scores")
            oracle = TableOracle(table, name="array")
        run = SelectionRun(labels, oracle, spec, features=features)
        run.run_to_end()
        self.run_ = run
        self.selected_ = run.selected()
        self.scores_ = run.scores.copy()
        self.history_ = pd.DataFrame(
            [{"round": r.round, "kind": r.kind, "arm": r.arm, "n_drawn": len(r.rows),
              "mean_reward": float(np.nanmean(r.rewards)) if np.isfinite(r.rewards).any()
              else float("nan"), "budget_used": r.budget_used,
              "why": r.explanation.get("sentence", "")} for r in run.records])
        return self


class RDSPlus(BaseEstimator):
    """RDS+ (arXiv 2503.01807): rows ranked by the cosine of their hidden states to the
    target's, the max over subtasks of the mean over each subtask's examples (selection/rds.py).

    `fit(X, target, subtasks=None, rewards=None)`: X [N, d] pool hidden states, target [M, d]
    the target examples' states computed the same way, subtasks [M] integer codes (default:
    one subtask). With `budget=None` (the default) the selection is the top-p rows by RDS+,
    no reward at all; with a budget b, the top-b rows by RDS+ are scored by `rewards` (an
    array or a function rows -> scores, called once) and the top-p of them kept: RDS+ at the
    same gradient spend as a ClusterUCB run of budget b.

    Fitted attributes: `scores_` (float [N], NaN for rows without a state), `selected_` (row
    indices, best first).
    """

    def __init__(self, top_p: float = 0.05, *, budget: float | None = None):
        self.top_p = top_p
        self.budget = budget

    def fit(self, X: Any, target: Any, subtasks: Any = None, rewards: Any = None) -> RDSPlus:

        X, target = np.asarray(X), np.asarray(target)
        ids = np.zeros(len(target), dtype=np.int64) if subtasks is None else \
            np.asarray(subtasks)
        budget = 1.0 if self.budget is None else self.budget
        spec = _build(SelectionSpec, {}, top_p=self.top_p, budget=budget)
        self.scores_ = rds_scores(X, target, ids)
        n_top = count_of(spec.top_p, len(X))
        if self.budget is None:
            self.selected_ = top_rows(self.scores_, n_top)
            return self
        if rewards is None:
            raise ValueError(f"budget={self.budget}: RDS+ at a budget scores its top rows, so "
                             "fit needs rewards (an array or a function rows -> scores)")
        self.selected_ = screen(self.scores_, rewards, count_of(spec.budget, len(X)), n_top)
        return self
