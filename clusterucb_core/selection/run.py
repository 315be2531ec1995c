"""The ClusterUCB selection run (docs/METHOD.md section 4); the arm policies live in policies.py.

`SelectionRun`: cold start, budget, rounds (`step()` returns a `RoundRecord`), final top-p
with the curation ledger applied. Its state is an append-only log (runlog.py); a run reopens
from its log (`runs.open_run`, `SelectionRun.open`) and continues exactly as if never
interrupted.

Randomness, all derived from `spec.seed` so that a resumed run equals an uninterrupted one:
every cluster's members are put in a random order once, from `(seed, cluster)`; drawing
`m` members uniformly without replacement is taking the next `m` of that order. A policy
that needs randomness in round `r` (`random`, `thompson`) gets a generator from
`(seed, round)`. Nothing depends on a generator that advances across rounds. Under
`draw_order = "predicted"` the undrawn part of each order is re-sorted by a reward model
refitted from the rounds so far, so it too is a function of the log.

Fractions are of the pool size N and exact for the decimal typed: `floor(N * b)` with
b = 0.29 and N = 100 is 29 (plain float arithmetic gives 28).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, get_args

import numpy as np

from clusterucb_core.config import DRAW_ORDER, SelectionSpec, field_info, from_dict, to_dict
from clusterucb_core.selection import runlog
from clusterucb_core.selection.oracle import Oracle
from clusterucb_core.selection.policies import (
    STREAM_ORDER,
    STREAM_SPLIT,
    ArmStats,
    from_json_values,
    jsonable_values,
    policy_for,
    policy_rng,
)
from clusterucb_core.selection.surrogate import RewardModel

DRAW_ORDERS: tuple[str, ...] = get_args(DRAW_ORDER)
DRAW_ORDER_LABELS: dict[str, str] = field_info(SelectionSpec, "draw_order")["labels"]


# draw_order "predicted" refits its reward model when the scored rows have grown by this
# factor: every round on a small pool, about 70 fits from a 5% cold start to a 20% budget
# on any pool, so the refits' cost does not grow with the number of rounds
REFIT_GROWTH = 1.02


def unit_rows(features: Any) -> np.ndarray:
    """The rows as float32 of norm 1 (or 0 where a row is all zeros or not finite). Rows that
    already are (what `clusterset.cluster_rows` gives) are used as they are, not copied: on a
    big pool the features are the largest thing a run holds."""
    f = np.asarray(features, dtype=np.float32)
    sq = np.einsum("ij,ij->i", f, f)  # no [N, d] temporary
    if np.isfinite(sq).all() and (np.abs(sq - 1) < 1e-4)[sq > 0].all():
        return f
    f = np.nan_to_num(f)  # a copy: the caller's array is never changed
    f /= np.maximum(np.sqrt(np.einsum("ij,ij->i", f, f)), 1e-30)[:, None]
    return f


def count_of(fraction: float, n: int) -> int:
    """`floor(n * fraction)`, exact for the decimal written (0.29 of 100 is 29, not 28)."""
    fraction = float(fraction)
    if not math.isfinite(fraction) or fraction < 0:
        raise ValueError(f"fraction must be a finite number >= 0, got {fraction}")
    return math.floor(Fraction(repr(fraction)) * int(n))


def labels_fingerprint(labels: np.ndarray) -> str:
    """Hash of the cluster assignment (as int64), so a log is never replayed on other labels."""
    data = np.ascontiguousarray(np.asarray(labels, dtype=np.int64))
    return hashlib.sha256(data.tobytes()).hexdigest()[:16]


def cluster_order(members: np.ndarray, seed: int, cluster: int) -> np.ndarray:
    """A cluster's members in the random order they will be drawn (a function of seed, k)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), STREAM_ORDER,
                                                        int(cluster)]))
    return members[rng.permutation(len(members))]



# --------------------------------------------------------------------------------------
# the selection run


class RunFinished(RuntimeError):
    """step() on a run whose budget is spent or whose arms are all exhausted or banned."""


@dataclass(frozen=True)
class LedgerView:
    """The part of the curation ledger a selection uses (see curation.LedgerState)."""

    banned: frozenset[int] = frozenset()
    pinned: frozenset[int] = frozenset()
    rejected: frozenset[int] = frozenset()


def _ledger_view(ledger: Any) -> LedgerView:
    if ledger is None:
        return LedgerView()
    state = ledger.state() if hasattr(ledger, "state") else ledger
    return LedgerView(frozenset(int(x) for x in state.banned),
                      frozenset(int(x) for x in state.pinned),
                      frozenset(int(x) for x in state.rejected))


@dataclass
class RoundRecord:
    """One round: what was drawn, what it scored, and every arm's state after it.

    `round` 0 is the cold start (`arm` None, rows from every cluster); bandit rounds count
    from 1. `value` is the policy's value per arm after the round (for stochastic policies
    its deterministic summary; the values actually compared are in `explanation`).
    """

    round: int
    kind: str  # cold_start | bandit
    arm: int | None
    rows: np.ndarray
    rewards: np.ndarray
    n: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    value: np.ndarray
    exhausted: np.ndarray
    banned: np.ndarray
    budget_used: int
    budget_total: int
    explanation: dict[str, Any]

    def arms(self):
        """Per-arm table after the round (pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame({"arm": np.arange(len(self.n)), "n": self.n, "mean": self.mean,
                             "std": self.std, "value": self.value,
                             "exhausted": self.exhausted, "banned": self.banned})

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "kind": self.kind, "arm": self.arm,
                "rows": [int(r) for r in self.rows],
                "rewards": jsonable_values(self.rewards),
                "n": [int(x) for x in self.n], "mean": jsonable_values(self.mean),
                "std": jsonable_values(self.std), "value": jsonable_values(self.value),
                "exhausted": [bool(x) for x in self.exhausted],
                "banned": [bool(x) for x in self.banned],
                "budget_used": self.budget_used, "budget_total": self.budget_total,
                "explanation": self.explanation}


@dataclass(frozen=True)
class SelectionResult:
    """Everything an export needs about a run's final selection."""

    rows: np.ndarray  # selected rows, best first (pinned rows without a score last)
    scores: np.ndarray  # float per pool row, NaN where not scored
    round_drawn: np.ndarray  # int per pool row, -1 where not drawn
    labels: np.ndarray
    pinned: frozenset[int]
    rejected: frozenset[int]
    banned: frozenset[int]
    spec: SelectionSpec
    n_top: int
    budget_used: int
    budget_total: int
    n_rounds: int
    labels_fingerprint: str
    # (round, banned clusters) each time the banned set seen by the bandit changed
    ban_changes: tuple[tuple[int, tuple[int, ...]], ...] = ()
    k: int = 0  # number of arms (clusters)
    # pool row -> the target subtask it serves best (scored rows; subtasks.py), when known
    best_subtask: dict[int, str] | None = None


class SelectionRun:
    """One ClusterUCB selection over a fixed clustering (docs/METHOD.md section 4).

    labels: cluster index per pool row (0..K-1); a negative label keeps the row out of the
      bandit (never drawn) but it still counts in N. Empty clusters are exhausted arms.
    oracle: `.score(rows)` (see oracle.py); None only for a run reopened read-only.
    log_dir: where the JSONL log lives (None: in memory only).
    n_clusters: K when the last clusters may be empty (default: max label + 1).
    ledger: a curation.Ledger (re-read every round, so bans made between rounds apply), a
      ledger state, or None.
    features: [N, d] rows (the conditioned cluster features) for `spec.draw_order` and
      `spec.split_hot`. draw_order "similar": a bandit round draws the chosen arm's undrawn
      members most similar to the best rows scored so far, instead of the next ones of its
      random order. "predicted": every arm's undrawn members are kept in the order of a reward
      model's prediction (surrogate.RewardModel, refitted on every scored row whenever their
      number has grown by REFIT_GROWTH), and the policy sees the predicted mean of the rows
      the arm would draw next (`ArmStats.expected`; ucb_beta uses it for its mean).

    Hot arms split (`spec.split_hot = m`, m >= 2; beyond the paper, off by default): after a
    bandit round in which the policy played arm a for its value (not for having no history,
    at random or by fallback), a is split in two when (i) it holds >= m scored draws, (ii)
    their mean is the largest of all unbanned arms with scored draws, (iii) they are spread
    (std > 0), (iv) >= 2 * draw_batch of its members are undrawn and (v) budget is left. Its
    members, drawn and undrawn, are cut in two by spherical 2-means on `features` centred on
    their mean (seeded from (seed, a, round)); arms K and K+1 are appended, each taking its
    part: the drawn members with their rewards as its history, the undrawn ones in a's
    order. a keeps no member (exhausted, n = 0); a cut that leaves a part with no undrawn
    member is not made. A child can split again. Arms are not clusters: the labels, the
    clusters a ban names and the final selection are unchanged; an arm belongs to its first
    ancestor's cluster (`arm_cluster`) and is banned when that cluster is.
    """

    def __init__(self, labels: np.ndarray, oracle: Oracle | None,
                 spec: SelectionSpec = SelectionSpec(), log_dir: str | Path | None = None,
                 ledger: Any = None, *, n_clusters: int | None = None,
                 meta: runlog.RunMeta | dict[str, Any] | None = None,
                 features: np.ndarray | None = None, _replaying: bool = False):
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) == 0:
            raise ValueError("labels must be a non-empty 1-D array of cluster indices")
        if not np.issubdtype(labels.dtype, np.integer):
            if not np.all(np.equal(np.mod(labels, 1), 0)):
                raise ValueError("labels must be integers")
        self.labels = labels.astype(np.int64)
        self.spec = spec
        self.policy = policy_for(spec)
        self.oracle = oracle
        self.ledger = ledger
        self.meta = meta if isinstance(meta, runlog.RunMeta) else runlog.RunMeta.from_dict(meta)
        self.lock_timeout = runlog.LOCK_WAIT_S
        self.N = len(self.labels)
        self.K = int(self.labels.max()) + 1 if (self.labels >= 0).any() else 0
        if n_clusters is not None:
            if n_clusters < self.K:
                raise ValueError(f"n_clusters={n_clusters} but the labels go up to {self.K - 1}")
            self.K = int(n_clusters)
        self.budget_total = count_of(spec.budget, self.N)
        self.n_top = count_of(spec.top_p, self.N)
        self.labels_fingerprint = labels_fingerprint(self.labels)
        self.features = None
        if spec.needs_features:
            if features is None or len(features) != self.N:
                which = (f"draw_order = {spec.draw_order!r}" if spec.draw_order != "random"
                         else "split_hot")
                raise ValueError(f"{which} needs the cluster features, one row per pool row "
                                 "(pass features=)")
            self.features = unit_rows(features)

        self.K0 = self.K  # clusters; K grows when an arm splits
        self.arm_cluster = np.arange(self.K, dtype=np.int64)
        self.arm_parent = np.full(self.K, -1, dtype=np.int64)
        self._arm_of = self.labels.copy()
        members = [np.flatnonzero(self.labels == k) for k in range(self.K)]
        self.sizes = np.array([len(m) for m in members], dtype=np.int64)
        self._order = [cluster_order(m, spec.seed, k) for k, m in enumerate(members)]
        self._ptr = np.zeros(self.K, dtype=np.int64)  # drawn so far per arm
        self._hist: list[np.ndarray] = [np.zeros(0) for _ in range(self.K)]
        self._n = np.zeros(self.K, dtype=np.int64)
        self._mean = np.full(self.K, np.nan)
        self._std = np.full(self.K, np.nan)
        self.scores = np.full(self.N, np.nan)
        self.round_drawn = np.full(self.N, -1, dtype=np.int64)
        self.budget_used = 0
        self.records: list[RoundRecord] = []
        self._next_round = 0 if spec.cold_start > 0 else 1
        self._model = (RewardModel(self.features, self.labels, self.K)
                       if spec.draw_order == "predicted" else None)
        self._fit_at = 0  # rows in the reward model at its last fit

        if not _replaying:
            self.check_cold_start(self._banned_mask())

        self.log = None if log_dir is None else runlog.RunLog(log_dir)
        self.log_path = None if self.log is None else self.log.path
        self._log_offset = 0  # bytes of the log this object has replayed or written
        self.header: dict[str, Any] = {}
        if self.log is not None and not _replaying:
            self.header = self._header()
            with self.log.writer(self.lock_timeout):
                self.log.create(self.header)
                self._log_offset = self.log.size()

    # ---------------------------------------------------------------- state views
    def _header(self) -> dict[str, Any]:
        describe = getattr(self.oracle, "describe", None)
        return {"kind": "header", "version": runlog.LOG_VERSION, "spec": to_dict(self.spec),
                "n_rows": self.N, "k": self.K, "labels_fingerprint": self.labels_fingerprint,
                "budget_total": self.budget_total, "n_top": self.n_top,
                "oracle": describe() if callable(describe) else None,
                "meta": self.meta.to_dict(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def ledger_view(self) -> LedgerView:
        return _ledger_view(self.ledger)

    def banned_mask(self) -> np.ndarray:
        """Bool per arm: banned in the ledger right now."""
        return self._banned_mask()

    def _banned_mask(self, view: LedgerView | None = None) -> np.ndarray:
        view = self.ledger_view() if view is None else view
        return np.isin(self.arm_cluster, np.array(sorted(view.banned), dtype=np.int64))

    @property
    def remaining(self) -> np.ndarray:
        return self.sizes - self._ptr

    def cold_start_counts(self, banned: np.ndarray) -> np.ndarray:
        """Cold-start draws per cluster: max(floor(|C_k| c), 1), at most |C_k|; 0 if banned."""
        c = self.spec.cold_start
        if c <= 0:
            return np.zeros(self.K, dtype=np.int64)
        want = np.array([max(count_of(c, s), 1) for s in self.sizes], dtype=np.int64)
        want = np.minimum(want, self.sizes)
        want[banned] = 0
        return want

    def check_cold_start(self, banned: np.ndarray) -> None:
        if self._next_round != 0:
            return
        need = int(self.cold_start_counts(banned).sum())
        if need > self.budget_total - self.budget_used:
            raise ValueError(
                f"the cold start needs {need} draws (max(floor(|C_k|*{self.spec.cold_start}), 1) "
                f"for each of {int((self.sizes > 0).sum())} clusters) but the budget is "
                f"{self.budget_total} (floor({self.N}*{self.spec.budget})); lower the cold "
                f"start, raise the budget or use fewer clusters")

    def stats(self, banned: np.ndarray | None = None) -> ArmStats:
        banned = self._banned_mask() if banned is None else banned
        stats = ArmStats(tuple(self._hist), self._ptr.copy(), self.remaining, banned.copy(),
                         self._n.copy(), self._mean.copy(), self._std.copy())
        if self._model is None:
            return stats
        return replace(stats, expected=self._expected(stats))

    @property
    def done(self) -> bool:
        if self.budget_used >= self.budget_total:
            return True
        eligible = (self.remaining > 0) & ~self._banned_mask()
        return not eligible.any()

    @property
    def next_round(self) -> int:
        return self._next_round

    # ---------------------------------------------------------------- stepping
    def _plan(self, round_no: int, banned: np.ndarray) -> tuple[int | None, np.ndarray,
                                                                dict[str, Any]]:
        """Which rows the next round draws, without changing any state."""
        if round_no == 0:
            counts = self.cold_start_counts(banned)
            parts = [self._order[k][self._ptr[k]:self._ptr[k] + counts[k]]
                     for k in range(self.K) if counts[k] > 0]
            rows = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
            if len(rows) > self.budget_total - self.budget_used:
                self.check_cold_start(banned)
            expl = {"policy": self.policy.name, "chosen": None, "reason": "cold_start",
                    "counts": [int(c) for c in counts],
                    "sentence": (f"cold start: drew max(floor(|C_k|*{self.spec.cold_start:g}), 1) "
                                 f"members (at most |C_k|) from each of {len(parts)} clusters, "
                                 f"{len(rows)} rows in all"
                                 + (f"; {int(banned.sum())} banned cluster(s) skipped"
                                    if banned.any() else "") + ".")}
            return None, rows, expl
        stats = self.stats(banned)
        rng = policy_rng(self.spec.seed, round_no)
        which = {"random": "", "similar": ": those most like the best rows so far",
                 "predicted": ": those the reward model ranks highest"}[self.spec.draw_order]
        arms, parts, expl = [], [], {}
        left = self.budget_total - self.budget_used
        taken = banned.copy()
        # top-m arms (topm.py): each pick leaves the eligible set before the next one
        for j in range(self.spec.arms_per_round):
            view = stats if j == 0 else replace(stats, banned=taken.copy())
            if left <= 0 or not view.eligible.any():
                break
            decision = self.policy.decide(view, rng)
            arm = decision.arm
            m = int(min(self.spec.draw_batch, left, self.remaining[arm]))
            rows = (self._most_similar(arm, m) if self.spec.draw_order == "similar"
                    else self._order[arm][self._ptr[arm]:self._ptr[arm] + m])
            said = (decision.explain()["sentence"] + f" Drew {m} of its "
                    f"{int(self.remaining[arm])} undrawn members{which}.")
            if j == 0:
                expl = decision.explain()
                expl["sentence"] = said
            else:
                expl["sentence"] += f" Arm {j + 1} of the round: {said}"
            arms.append(arm)
            parts.append(rows)
            taken[arm] = True
            left -= m
        if self.spec.arms_per_round > 1:
            expl["arms"] = [int(a) for a in arms]
            expl["arm_rows"] = [int(len(r)) for r in parts]
        return arms[0], np.concatenate(parts), expl

    def _batch(self, arm: int) -> int:
        return int(min(self.spec.draw_batch, self.budget_total - self.budget_used,
                       self.remaining[arm]))

    def _refit_if_due(self) -> None:
        """At the end of a round: refit the reward model once the rows in it have grown by
        REFIT_GROWTH since the last fit, and put every arm's undrawn members in the order of
        its prediction (stable: ties keep the random order). A function of the rounds so far
        only, so a replayed log refits at the same rounds."""
        model = self._model
        if model.n_added == 0 or model.n_added < math.ceil(self._fit_at * REFIT_GROWTH):
            return
        model.fit()
        self._fit_at = model.n_added
        for k in range(self.K):
            rest = self._order[k][self._ptr[k]:]
            if len(rest) > 1:
                key = self.features[rest].astype(np.float64) @ model.w
                self._order[k][self._ptr[k]:] = rest[np.argsort(-key, kind="stable")]

    def _expected(self, stats: ArmStats) -> np.ndarray:
        """Per arm, the model's mean prediction for the rows it would draw next (NaN for an
        arm with nothing left, or whose cluster has no scored row)."""
        out = np.full(self.K, np.nan)
        for k in np.flatnonzero(stats.eligible & (stats.n > 0)):
            nxt = self._order[k][self._ptr[k]:self._ptr[k] + self._batch(int(k))]
            if len(nxt):
                out[k] = float(np.mean(self._model.predict(nxt)))
        return out

    def _most_similar(self, arm: int, m: int) -> np.ndarray:
        """The arm's `m` undrawn members closest (cosine) to the mean feature of the best
        scored rows so far (the top quarter of them, at most top-p many); its random order
        breaks ties and serves while nothing is scored."""
        undrawn = self._order[arm][self._ptr[arm]:]
        scored = np.flatnonzero(np.isfinite(self.scores))
        if len(scored) == 0:
            return undrawn[:m]
        n_best = max(1, min(self.n_top, math.ceil(len(scored) / 4)))
        best = scored[np.argsort(-self.scores[scored], kind="stable")[:n_best]]
        query = self.features[best].mean(axis=0)
        sims = self.features[undrawn] @ query
        return undrawn[np.argsort(-sims, kind="stable")[:m]]

    def _split_plan(self, round_no: int, arm: int | None, reason: str | None, rows: np.ndarray,
                    rewards: np.ndarray, banned: np.ndarray) -> dict[str, Any] | None:
        """The split the hot-arm rule (class docstring) makes after this round, or None,
        without changing any state: a function of the run so far, the round, the features
        and the seed, so a replayed log makes the same splits."""
        m = self.spec.split_hot
        if not m or round_no == 0 or arm is None or reason != "max_value":
            return None
        if self.budget_used + len(rows) >= self.budget_total:
            return None
        hist = np.concatenate([self._hist[arm], rewards[np.isfinite(rewards)]])
        rest = self._order[arm][self._ptr[arm]:]
        took = np.isin(rest, rows)
        undrawn = rest[~took]
        others = np.isfinite(self._mean) & ~banned
        others[arm] = False
        if (len(hist) < m or not hist.std() > 0 or len(undrawn) < 2 * self.spec.draw_batch
                or (others.any() and hist.mean() < self._mean[others].max())):
            return None
        # the member order _apply leaves: drawn (this round's rows last), then undrawn
        members = np.concatenate([self._order[arm][:self._ptr[arm]], rest[took], undrawn])
        drawn = np.arange(len(members)) < len(members) - len(undrawn)
        part = _two_means(self.features[members], np.random.default_rng(
            np.random.SeedSequence([int(self.spec.seed), STREAM_SPLIT, int(arm), round_no])))
        if not all((~drawn & (part == j)).any() for j in (0, 1)):
            return None
        children = [self.K, self.K + 1]
        score = self.scores.copy()
        score[rows] = rewards
        said = []
        for j, c in enumerate(children):
            r = score[members[drawn & (part == j)]]
            r = r[np.isfinite(r)]
            said.append(f"arm {c} takes {len(r)} scored draws"
                        + (f" (mean {r.mean():.4g})" if len(r) else "")
                        + f" and {int((~drawn & (part == j)).sum())} undrawn members")
        sentence = (f"Split arm {arm} into arms {children[0]}, {children[1]} because it is hot: "
                    f"its {len(hist)} scored draws average {hist.mean():.4g}, the best of all "
                    f"arms, spread with std {hist.std():.3g}, and {len(undrawn)} members are "
                    f"undrawn; the rest of its budget goes to the finer arms (spherical 2-means "
                    f"on the features: {'; '.join(said)}).")
        return {"parent": int(arm), "children": children, "sentence": sentence,
                "parts": [members[part == j] for j in (0, 1)],
                "n_drawn": [int((drawn & (part == j)).sum()) for j in (0, 1)]}

    def _split(self, plan: dict[str, Any], banned: np.ndarray) -> np.ndarray:
        """Make a planned split (after the round's draws are applied); returns the banned
        mask grown by the children (banned with their parent's cluster)."""
        a = plan["parent"]
        for part, n_drawn in zip(plan["parts"], plan["n_drawn"]):
            hist = self.scores[part[:n_drawn]]
            hist = hist[np.isfinite(hist)]
            self._order.append(part.copy())
            self._hist.append(hist)
            self.sizes = np.append(self.sizes, len(part))
            self._ptr = np.append(self._ptr, n_drawn)
            self._n = np.append(self._n, len(hist))
            self._mean = np.append(self._mean, hist.mean() if len(hist) else np.nan)
            self._std = np.append(self._std, hist.std() if len(hist) else np.nan)
            self.arm_cluster = np.append(self.arm_cluster, self.arm_cluster[a])
            self.arm_parent = np.append(self.arm_parent, a)
            self._arm_of[part] = self.K
            self.K += 1
        self._order[a] = self._order[a][:0]
        self._hist[a] = np.zeros(0)
        self.sizes[a] = self._ptr[a] = self._n[a] = 0
        self._mean[a] = self._std[a] = np.nan
        return np.append(banned, [banned[a], banned[a]])

    def peek(self) -> dict[str, Any] | None:
        """What the next `step()` will draw and why, without drawing (None when done).

        The same decision step() takes: the policy's generator depends only on (seed, round),
        and the ledger is read now (a ban made before the step changes both)."""
        self.refresh()
        if self.done:
            return None
        banned = self._banned_mask()
        if self._next_round == 0:
            self.check_cold_start(banned)
        arm, rows, expl = self._plan(self._next_round, banned)
        return {"round": self._next_round, "arm": arm, "rows": rows, "explanation": expl}

    def _score(self, rows: np.ndarray) -> np.ndarray:
        if self.oracle is None:
            raise RuntimeError("this run was reopened without an oracle; it cannot draw")
        if len(rows) == 0:
            return np.zeros(0)
        rewards = np.asarray(self.oracle.score(rows), dtype=np.float64).reshape(-1)
        if len(rewards) != len(rows):
            raise ValueError(f"the oracle returned {len(rewards)} scores for {len(rows)} rows")
        return rewards

    def refresh(self) -> int:
        """Replay the rounds another process (a second tab, the CLI) appended to the log since
        this object last read it; returns how many. Reading needs no lock: a round is one
        whole line, and a line still being written is left for the next refresh."""
        if self.log is None:
            return 0
        objs, offset = self.log.read_from(self._log_offset)
        for obj in objs:
            self._replay(obj, self.log.path)
        self._log_offset = offset
        return len(objs)

    def _append_log(self, line: dict[str, Any]) -> None:
        if self.log is not None:
            self._log_offset = self.log.append(line)

    def _apply(self, round_no: int, kind: str, arm: int | None, rows: np.ndarray,
               rewards: np.ndarray, banned: np.ndarray, expl: dict[str, Any],
               split: dict[str, Any] | None = None) -> RoundRecord:
        rows = np.asarray(rows, dtype=np.int64)
        touched = sorted(set(int(k) for k in self._arm_of[rows])) if len(rows) else []
        for k in touched:
            sel = self._arm_of[rows] == k
            # the drawn rows move to the front of the arm's undrawn part (they need not be
            # the next ones of its order under draw_order "similar"); the rest keep their order
            rest = self._order[k][self._ptr[k]:]
            took = np.isin(rest, rows[sel])
            self._order[k][self._ptr[k]:] = np.concatenate([rest[took], rest[~took]])
            self._ptr[k] += int(sel.sum())
            fin = rewards[sel][np.isfinite(rewards[sel])]
            if len(fin):
                self._hist[k] = np.concatenate([self._hist[k], fin])
                self._n[k] = len(self._hist[k])
                self._mean[k] = self._hist[k].mean()
                self._std[k] = self._hist[k].std()
        self.scores[rows] = rewards
        if self._model is not None:
            self._model.add(rows, rewards)
            self._refit_if_due()
        self.round_drawn[rows] = round_no
        self.budget_used += len(rows)
        self._next_round = round_no + 1
        if split is not None:
            banned = self._split(split, banned)
        after = self.stats(banned)
        rec = RoundRecord(round_no, kind, arm, rows, rewards, after.n, after.mean, after.std,
                          self.policy.masked_values(after, None), after.exhausted,
                          banned.copy(), self.budget_used, self.budget_total, expl)
        self.records.append(rec)
        return rec

    def step(self) -> RoundRecord:
        """Play one round (the cold start first, when there is one) and log it.

        With a log, the round is played under the run's writer lock, after catching up with
        any rounds another writer appended, so two writers never draw the same rows."""
        if self.log is None:
            return self._step()
        with self.log.writer(self.lock_timeout):
            self.refresh()
            self.log.cut(self._log_offset)  # a crashed writer's torn line
            return self._step()

    def _step(self) -> RoundRecord:
        if self.done:
            raise RunFinished(f"the run is finished: {self.budget_used}/{self.budget_total} "
                              "draws used, or no arm left to draw")
        banned = self._banned_mask()
        round_no = self._next_round
        if round_no == 0:
            self.check_cold_start(banned)
        arm, rows, expl = self._plan(round_no, banned)
        rewards = self._score(rows)
        kind = "cold_start" if round_no == 0 else "bandit"
        split = self._split_plan(round_no, arm, expl.get("reason"), rows, rewards, banned)
        if split is not None:
            expl["split"] = {"parent": split["parent"], "children": split["children"]}
            expl["sentence"] += " " + split["sentence"]
        self._append_log({"round": round_no, "kind": kind, "arm": arm,
                          "rows": [int(r) for r in rows],
                          "rewards": jsonable_values(rewards),
                          "banned": [int(k) for k in np.flatnonzero(banned)],
                          "budget_used": self.budget_used + len(rows),
                          "explanation": expl, "ts": time.time()})
        return self._apply(round_no, kind, arm, rows, rewards, banned, expl, split)

    def run_to_end(self, max_rounds: int | None = None) -> list[RoundRecord]:
        """Step until the budget is spent or no arm is left (or `max_rounds` rounds)."""
        out = []
        while not self.done and (max_rounds is None or len(out) < max_rounds):
            out.append(self.step())
        return out

    # ---------------------------------------------------------------- results
    def selected(self, ledger: Any = None) -> np.ndarray:
        """The final selection, pinned rows first (they take slots first), then best first:
        pinned rows always in, rejected rows and rows of banned clusters never in (unless
        pinned), the rest the top scored rows up to floor(N * top_p) in all; rows with a NaN
        score are never chosen by score. Ties in score go to the lower row index."""
        view = self.ledger_view() if ledger is None else _ledger_view(ledger)
        return select_top(self.scores, self.labels, self.n_top, view)

    def result(self, ledger: Any = None) -> SelectionResult:
        view = self.ledger_view() if ledger is None else _ledger_view(ledger)
        return SelectionResult(select_top(self.scores, self.labels, self.n_top, view),
                               self.scores.copy(), self.round_drawn.copy(), self.labels.copy(),
                               view.pinned, view.rejected, view.banned, self.spec, self.n_top,
                               self.budget_used, self.budget_total, len(self.records),
                               self.labels_fingerprint, self.ban_changes(), self.K0)

    def ban_changes(self) -> tuple[tuple[int, tuple[int, ...]], ...]:
        """(round, banned clusters) for the first round and every round where the banned set the
        bandit saw changed: enough to rerun the run exactly (export.reproduce_selection)."""
        out: list[tuple[int, tuple[int, ...]]] = []
        for rec in self.records:  # clusters, not arms: a split arm's children follow it
            cur = tuple(int(k) for k in np.flatnonzero(rec.banned[:self.K0]))
            if not out or out[-1][1] != cur:
                out.append((rec.round, cur))
        return tuple(out)

    # ---------------------------------------------------------------- resume
    @classmethod
    def open(cls, log_dir: str | Path, labels: np.ndarray, oracle: Oracle | None = None,
             ledger: Any = None, features: np.ndarray | None = None) -> SelectionRun:
        """Reopen a run from its log: replay every complete round (no rescoring) and continue
        from there. A half-written last line (a crash mid-round) is ignored, so at most the
        round in flight is lost. Refuses a log made with other labels. (Callers outside the
        engine use `runs.open_run`, which finds the labels and the ledger from the log.)"""
        log = runlog.RunLog(log_dir)
        header, rounds, good_len = log.read()
        labels = np.asarray(labels)
        fp = labels_fingerprint(labels)
        if len(labels) != header["n_rows"] or fp != header["labels_fingerprint"]:
            raise ValueError(
                f"{log.path} was made with other cluster labels (n_rows {header['n_rows']}, "
                f"fingerprint {header['labels_fingerprint']}; given {len(labels)}, {fp})")
        spec = from_dict(SelectionSpec, header["spec"])
        run = cls(labels, oracle, spec, log_dir, ledger, n_clusters=header["k"],
                  meta=header.get("meta"), features=features, _replaying=True)
        run.header = header
        for obj in rounds:
            run._replay(obj, log.path)
        run._log_offset = good_len
        return run

    def _replay(self, obj: dict[str, Any], path: Path) -> None:
        round_no = int(obj["round"])
        if round_no != self._next_round:
            raise ValueError(f"{path}: round {round_no} where round {self._next_round} was "
                             "expected")
        banned = np.zeros(self.K, dtype=bool)
        banned[[int(k) for k in obj.get("banned", []) if 0 <= int(k) < self.K]] = True
        rows = np.asarray(obj["rows"], dtype=np.int64)
        arm = obj.get("arm")
        # the rows must be exactly what the seeded order gives (labels/seed unchanged)
        if round_no == 0:
            counts = self.cold_start_counts(banned)
            expect = [self._order[k][self._ptr[k]:self._ptr[k] + counts[k]]
                      for k in range(self.K) if counts[k] > 0]
            expect = np.concatenate(expect) if expect else np.zeros(0, dtype=np.int64)
        else:
            expl = obj.get("explanation", {})
            arms = expl.get("arms", [arm])
            counts = expl.get("arm_rows", [len(rows)])
            if len(arms) != len(counts) or sum(int(c) for c in counts) != len(rows):
                raise ValueError(f"{path}: round {round_no} logged arms {arms} with row counts "
                                 f"{counts} for {len(rows)} rows")
            expect = np.concatenate([
                self._most_similar(int(a), int(c)) if self.spec.draw_order == "similar"
                else self._order[int(a)][self._ptr[int(a)]:self._ptr[int(a)] + int(c)]
                for a, c in zip(arms, counts)])
        if not np.array_equal(expect, rows):
            raise ValueError(f"{path}: round {round_no} drew rows that this seed and these "
                             "labels do not give; the log belongs to another run")
        rewards = from_json_values(obj["rewards"], np.nan)
        kind = "cold_start" if round_no == 0 else "bandit"
        expl = obj.get("explanation", {})
        arm = None if arm is None else int(arm)
        split = self._split_plan(round_no, arm, expl.get("reason"), rows, rewards, banned)
        made = None if split is None else {"parent": split["parent"],
                                           "children": split["children"]}
        if made != expl.get("split"):
            raise ValueError(f"{path}: round {round_no} logged the split {expl.get('split')} "
                             f"where these features and this seed give {made}")
        self._apply(round_no, kind, arm, rows, rewards, banned, expl, split)


def _two_means(F: np.ndarray, rng: np.random.Generator, n_init: int = 3) -> np.ndarray:
    """0/1 per row: spherical 2-means of the rows centred on their mean (an arm's members
    share its direction; the split is about how they differ), the best of `n_init`
    k-means++ starts. Float64 numpy, not kmeans.py's torch: an arm is small, and a replayed
    log must make the same cut, whatever device or torch thread count the reopening has."""
    G = F.astype(np.float64) - F.mean(axis=0, dtype=np.float64)
    G /= np.maximum(np.linalg.norm(G, axis=1, keepdims=True), 1e-30)
    best, best_fit = np.zeros(len(G), dtype=np.int64), -np.inf
    for _ in range(n_init):
        first = G[rng.integers(len(G))]
        far = np.clip(1.0 - G @ first, 0.0, None)
        C = np.stack([first, G[rng.choice(len(G), p=far / far.sum())] if far.sum() > 0
                      else first])
        labels = None
        for _ in range(100):
            sims = G @ C.T
            new = np.argmax(sims, axis=1)
            if labels is not None and np.array_equal(new, labels):
                break
            labels = new
            for j in (0, 1):
                if (labels == j).any():
                    c = G[labels == j].sum(axis=0)
                    C[j] = c / max(np.linalg.norm(c), 1e-30)
        fit = float(sims[np.arange(len(G)), labels].sum())
        if fit > best_fit:
            best, best_fit = labels, fit
    return best


def select_top(scores: np.ndarray, labels: np.ndarray, n_top: int,
               view: LedgerView = LedgerView()) -> np.ndarray:
    """Top `n_top` rows by score with the ledger applied (see SelectionRun.selected)."""
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    pinned = np.array(sorted(r for r in view.pinned if 0 <= r < n), dtype=np.int64)
    excluded = np.zeros(n, dtype=bool)
    rejected = [r for r in view.rejected if 0 <= r < n]
    excluded[rejected] = True
    if view.banned:
        excluded |= np.isin(labels, np.array(sorted(view.banned), dtype=np.int64))
    excluded[pinned] = True  # already in
    cand = np.flatnonzero(np.isfinite(scores) & ~excluded)
    n_fill = max(n_top - len(pinned), 0)
    order = np.lexsort((cand, -scores[cand]))[:n_fill]
    # pins rank first (best-scored first, unscored pins after them), then the filled slots
    key = np.where(np.isfinite(scores[pinned]), -scores[pinned], np.inf)
    return np.concatenate([pinned[np.lexsort((pinned, key))], cand[order]])
