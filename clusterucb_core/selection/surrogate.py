"""A cheap model of the reward from the cluster features, for `draw_order = "predicted"`.

The bandit's arms say which *cluster* pays; they say nothing about which rows inside it do,
so the paper draws an arm's members at random. The cluster features carry more than the
cluster: on the pools of bench/bench_fidelity.py a ridge fit on them ranks unscored rows
well above chance. This model is the bandit's mean plus that: a fixed-effects ridge,

    reward(row) ~ mu[cluster] + (f(row) - fbar[cluster]) . w

with mu and fbar the mean reward and mean feature of each cluster's scored rows, and w one
ridge fit (penalty `lam`) on every scored row's deviation from its cluster's means. The
cluster effects are unpenalised, so on rewards that are pure cluster structure it falls back
to the arms' means; w adds what the features know beyond their cluster.

Fitting reads only running sums (the Gram matrix, each cluster's feature sum), so adding a
round costs B*d^2 and a refit K*d^2 + d^3, whatever the number of rows scored. Everything is
float64 and a pure function of the rows added and their order, so a replayed log refits to
the same predictions.
"""

from __future__ import annotations

import numpy as np


class RewardModel:
    """Fixed-effects ridge of the reward on the features (see the module docstring)."""

    def __init__(self, features: np.ndarray, clusters: np.ndarray, n_clusters: int,
                 lam: float = 1.0):
        self.F = features  # [N, d], rows unit-norm (SelectionRun normalises them)
        self.clusters = np.asarray(clusters, dtype=np.int64)
        self.lam = float(lam)
        d = self.F.shape[1]
        self._gram = np.zeros((d, d))
        self._fs = np.zeros(d)  # sum of f * reward
        self._fsum = np.zeros((n_clusters, d))
        self._ssum = np.zeros(n_clusters)
        self._n = np.zeros(n_clusters)
        self.w = np.zeros(d)
        self.n_added = 0

    def add(self, rows: np.ndarray, rewards: np.ndarray) -> None:
        """Take scored rows into the sums (rows with a NaN reward or no cluster are skipped)."""
        rows = np.asarray(rows, dtype=np.int64)
        rewards = np.asarray(rewards, dtype=np.float64)
        ok = np.isfinite(rewards) & (self.clusters[rows] >= 0)
        rows, rewards = rows[ok], rewards[ok]
        if not len(rows):
            return
        f = self.F[rows].astype(np.float64)
        c = self.clusters[rows]
        self._gram += f.T @ f
        self._fs += f.T @ rewards
        np.add.at(self._fsum, c, f)
        np.add.at(self._ssum, c, rewards)
        np.add.at(self._n, c, 1.0)
        self.n_added += len(rows)

    def fit(self) -> None:
        """Refit w from the sums: the Gram and cross terms of the within-cluster deviations."""
        seen = self._n > 0
        n = self._n[seen][:, None]
        fbar_sum = self._fsum[seen]
        gram = self._gram - fbar_sum.T @ (fbar_sum / n)
        cross = self._fs - fbar_sum.T @ (self._ssum[seen] / n[:, 0])
        gram[np.diag_indices_from(gram)] += self.lam
        self.w = np.linalg.solve(gram, cross)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Predicted reward of rows; NaN where the row's cluster has no scored row yet."""
        rows = np.asarray(rows, dtype=np.int64)
        c = self.clusters[rows]
        out = np.full(len(rows), np.nan)
        known = (c >= 0) & (self._n[np.maximum(c, 0)] > 0)
        if known.any():
            ck = c[known]
            n = self._n[ck][:, None]
            dev = self.F[rows[known]].astype(np.float64) - self._fsum[ck] / n
            out[known] = self._ssum[ck] / n[:, 0] + dev @ self.w
        return out
