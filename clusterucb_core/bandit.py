"""ClusterUCB: arm policies over clusters and the selection run (METHOD.md section 4).

Two layers:

* **Policies** (`make_policy(name, ...)`): each turns the arms' reward statistics
  (`ArmStats`) into one value per arm and picks an arm, and can say why (`Decision`: the
  values it compared and a sentence). Rules shared by every policy:
  - an arm that is exhausted (no undrawn member) or banned is never chosen; its value is
    reported as -inf (the reference code used 0, which wins when cosines are negative);
  - an eligible arm that has never been drawn is played first (lowest index), except under
    `random`, the baseline;
  - otherwise the eligible arm with the largest value is played, ties to the lowest index.
  - an arm whose draws were all unscorable (NaN rewards, e.g. rows with no trained token)
    has no statistics; its value is -inf, so it is played only when nothing else is left.
* **`SelectionRun`**: cold start, budget, rounds (`step()` returns a `RoundRecord`), final
  top-p with the curation ledger applied. Its state is an append-only JSONL log; a run
  reopens from its log (`SelectionRun.open`) and continues exactly as if never interrupted.

Randomness, all derived from `spec.seed` so that a resumed run equals an uninterrupted one:
every cluster's members are put in a random order once, from `(seed, cluster)`; drawing
`m` members uniformly without replacement is taking the next `m` of that order. A policy
that needs randomness in round `r` (`random`, `thompson`) gets a generator from
`(seed, round)`. Nothing depends on a generator that advances across rounds.

Fractions are of the pool size N and exact for the decimal typed: `floor(N * b)` with
b = 0.29 and N = 100 is 29 (plain float arithmetic gives 28).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from . import atomic
from .config import SelectionSpec, from_dict, to_dict

POLICIES: tuple[str, ...] = ("ucb_beta", "ucb1", "thresh_hard", "thresh_normal", "random",
                             "thompson")
LOG_NAME = "log.jsonl"
LOG_VERSION = 1

# streams of SeedSequence([seed, stream, index])
_STREAM_POLICY = 0
_STREAM_ORDER = 1


# --------------------------------------------------------------------------------------
# small helpers


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


def _finite_or_none(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _jsonable_values(values: np.ndarray) -> list[float | None]:
    return [_finite_or_none(v) for v in np.asarray(values, dtype=np.float64)]


def _from_json_values(values: Sequence[float | None], fill: float) -> np.ndarray:
    return np.array([fill if v is None else float(v) for v in values], dtype=np.float64)


def policy_rng(seed: int, round_no: int) -> np.random.Generator:
    """The generator a policy gets in one round: a function of (seed, round) only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), _STREAM_POLICY,
                                                         int(round_no)]))


def cluster_order(members: np.ndarray, seed: int, cluster: int) -> np.ndarray:
    """A cluster's members in the random order they will be drawn (a function of seed, k)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _STREAM_ORDER,
                                                        int(cluster)]))
    return members[rng.permutation(len(members))]


# --------------------------------------------------------------------------------------
# arm statistics


@dataclass(frozen=True)
class ArmStats:
    """What the policies see: each arm's reward history and how many members are left.

    `rewards[k]` holds arm k's finite rewards in draw order (NaN rewards are left out; they
    still count in `drawn`). `n`, `mean`, `std` (population, ddof=0) describe them; mean and
    std are NaN for an arm without a finite reward.
    """

    rewards: tuple[np.ndarray, ...]
    drawn: np.ndarray  # members drawn so far per arm (NaN-scored included)
    remaining: np.ndarray  # undrawn members per arm
    banned: np.ndarray  # bool per arm
    n: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def from_rewards(cls, rewards: Sequence[Sequence[float]],
                     remaining: Sequence[int] | None = None,
                     banned: Sequence[int] | Sequence[bool] | None = None) -> "ArmStats":
        """Build statistics from per-arm reward lists (NaN = an unscorable draw).

        `remaining` defaults to 1 per arm (every arm still drawable); `banned` is either a
        bool per arm or a list of arm indices.
        """
        k = len(rewards)
        raw = [np.asarray(r, dtype=np.float64).reshape(-1) for r in rewards]
        hist = tuple(r[np.isfinite(r)] for r in raw)
        drawn = np.array([len(r) for r in raw], dtype=np.int64)
        rem = np.ones(k, dtype=np.int64) if remaining is None else np.asarray(remaining,
                                                                             dtype=np.int64)
        ban = np.zeros(k, dtype=bool)
        if banned is not None:
            b = np.asarray(banned)
            if b.dtype == bool and len(b) == k:
                ban = b.copy()
            elif len(b):
                ban[b.astype(np.int64)] = True
        n = np.array([len(h) for h in hist], dtype=np.int64)
        mean = np.array([h.mean() if len(h) else np.nan for h in hist])
        std = np.array([h.std() if len(h) else np.nan for h in hist])
        return cls(hist, drawn, rem, ban, n, mean, std)

    @property
    def k(self) -> int:
        return len(self.rewards)

    @property
    def total(self) -> int:
        """Number of finite rewards over all arms."""
        return int(self.n.sum())

    @property
    def exhausted(self) -> np.ndarray:
        return self.remaining <= 0

    @property
    def eligible(self) -> np.ndarray:
        return (self.remaining > 0) & ~self.banned

    @cached_property
    def all_rewards(self) -> np.ndarray:
        return (np.concatenate(self.rewards) if self.k else np.zeros(0))

    @cached_property
    def max_reward(self) -> np.ndarray:
        return np.array([h.max() if len(h) else -np.inf for h in self.rewards])


# --------------------------------------------------------------------------------------
# policies


@dataclass(frozen=True)
class Decision:
    """A policy's choice and the values it compared (ineligible arms: -inf)."""

    policy: str
    arm: int
    values: np.ndarray
    eligible: np.ndarray
    reason: str  # no_history | max_value | fallback_max_draw | random
    sentence: str
    detail: dict[str, Any] = field(default_factory=dict)

    def explain(self) -> dict[str, Any]:
        """JSON-ready form (non-finite values become None)."""
        return {"policy": self.policy, "chosen": int(self.arm), "reason": self.reason,
                "values": _jsonable_values(self.values),
                "eligible": [bool(e) for e in self.eligible],
                "sentence": self.sentence,
                "detail": {k: (_finite_or_none(v) if isinstance(v, float) else v)
                           for k, v in self.detail.items()}}


class NoEligibleArm(ValueError):
    """Every arm is exhausted or banned."""


class Policy:
    """Base class: subclasses define `values` (and `term` for the explanation)."""

    name = ""
    rule = ""
    history_first = True

    def values(self, stats: ArmStats, rng: np.random.Generator | None = None) -> np.ndarray:
        """One value per arm; larger is better. Stochastic policies given no generator return
        a deterministic summary (for display)."""
        raise NotImplementedError

    def term(self, stats: ArmStats, k: int, value: float) -> str:
        """How arm k's value is made, in words, e.g. 'mean 0.12 + 1*std 0.03 = 0.15'."""
        return f"value {value:.4g}"

    def masked_values(self, stats: ArmStats,
                      rng: np.random.Generator | None = None) -> np.ndarray:
        vals = np.asarray(self.values(stats, rng), dtype=np.float64).copy()
        vals[np.isnan(vals)] = -np.inf
        vals[~stats.eligible] = -np.inf
        return vals

    def _pick(self, stats: ArmStats, vals: np.ndarray, rng: np.random.Generator | None,
              ) -> tuple[int, str, dict[str, Any]]:
        idx = np.flatnonzero(stats.eligible)
        return int(idx[np.argmax(vals[idx])]), "max_value", {}

    def decide(self, stats: ArmStats, rng: np.random.Generator | None = None) -> Decision:
        eligible = stats.eligible
        if not eligible.any():
            raise NoEligibleArm("every arm is exhausted or banned")
        vals = self.masked_values(stats, rng)
        fresh = np.flatnonzero(eligible & (stats.drawn == 0))
        if self.history_first and len(fresh):
            arm, reason, detail = int(fresh[0]), "no_history", {}
        else:
            arm, reason, detail = self._pick(stats, vals, rng)
        return Decision(self.name, arm, vals, eligible.copy(), reason,
                        self._sentence(stats, vals, arm, reason, detail), detail)

    def choose(self, stats: ArmStats, rng: np.random.Generator | None = None) -> int:
        return self.decide(stats, rng).arm

    def explain(self, stats: ArmStats, rng: np.random.Generator | None = None
                ) -> dict[str, Any]:
        return self.decide(stats, rng).explain()

    def _sentence(self, stats: ArmStats, vals: np.ndarray, arm: int, reason: str,
                  detail: dict[str, Any]) -> str:
        n_out = int((~stats.eligible).sum())
        skipped = (f" ({n_out} arm(s) exhausted or banned, never chosen)" if n_out else "")
        if reason == "no_history":
            return (f"{self.name}: arm {arm} has not been drawn yet, and arms without history "
                    f"are played first{skipped}.")
        if reason == "random":
            return (f"{self.name}: arm {arm} drawn uniformly at random among "
                    f"{int(stats.eligible.sum())} eligible arms{skipped}.")
        if reason == "fallback_max_draw":
            return (f"{self.name}: no eligible arm has a draw above tau = "
                    f"{detail.get('tau', float('nan')):.4g}, so arm {arm} is played for its "
                    f"largest single draw {stats.max_reward[arm]:.4g}{skipped}.")
        others = [i for i in np.flatnonzero(stats.eligible) if i != arm]
        text = f"{self.name}: arm {arm} has the largest {self.rule}: {self.term(stats, arm, vals[arm])}"
        if others:
            runner = max(others, key=lambda i: (vals[i], -i))
            text += f"; next best arm {runner}: {self.term(stats, runner, vals[runner])}"
        return text + skipped + "."


class UcbBeta(Policy):
    """The paper's rule: mean + beta * std (population std)."""

    name = "ucb_beta"

    def __init__(self, beta: float = 1.0):
        if not math.isfinite(beta):
            raise ValueError(f"beta must be finite, got {beta}")
        self.beta = float(beta)
        self.rule = f"mean + {self.beta:g}*std"

    def values(self, stats, rng=None):
        with np.errstate(invalid="ignore"):
            v = stats.mean + self.beta * stats.std
        v[stats.n == 0] = -np.inf
        return v

    def term(self, stats, k, value):
        return (f"mean {stats.mean[k]:.4g} + {self.beta:g}*std {stats.std[k]:.4g} = "
                f"{value:.4g} (n={stats.n[k]})")


class Ucb1(Policy):
    """UCB1: mean + sqrt(2 ln(total draws) / n_k)."""

    name = "ucb1"
    rule = "mean + sqrt(2 ln(total)/n)"

    def values(self, stats, rng=None):
        total = max(stats.total, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            v = stats.mean + np.sqrt(2.0 * math.log(total) / stats.n)
        v[stats.n == 0] = -np.inf
        return v

    def term(self, stats, k, value):
        bonus = value - stats.mean[k] if math.isfinite(value) else float("nan")
        return (f"mean {stats.mean[k]:.4g} + bonus {bonus:.4g} = {value:.4g} "
                f"(n={stats.n[k]}, total={stats.total})")


def top_quantile(rewards: np.ndarray, q: float) -> float:
    """tau: the top-q quantile of the rewards, i.e. the (1-q) quantile (linear interpolation);
    NaN when there are none."""
    return float(np.quantile(rewards, 1.0 - q)) if len(rewards) else float("nan")


class _Thresh(Policy):
    def __init__(self, quantile: float = 0.25):
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
        self.quantile = float(quantile)

    def tau(self, stats: ArmStats) -> float:
        memo = stats.__dict__.setdefault("_tau", {})  # one quantile per stats and q
        if self.quantile not in memo:
            memo[self.quantile] = top_quantile(stats.all_rewards, self.quantile)
        return memo[self.quantile]

    def _pick(self, stats, vals, rng):
        idx = np.flatnonzero(stats.eligible)
        tau = self.tau(stats)
        best = vals[idx].max()
        if best > 0:
            return int(idx[np.argmax(vals[idx])]), "max_value", {"tau": tau}
        # every eligible arm has value 0: the arm with the largest single draw
        mx = stats.max_reward[idx]
        return int(idx[np.argmax(mx)]), "fallback_max_draw", {"tau": tau}


class ThreshHard(_Thresh):
    """Fraction of the arm's draws at or above tau (tau = top-q quantile of all draws)."""

    name = "thresh_hard"

    def __init__(self, quantile: float = 0.25):
        super().__init__(quantile)
        self.rule = f"share of draws >= tau (top-{self.quantile:g} quantile of all draws)"

    def values(self, stats, rng=None):
        tau = self.tau(stats)
        return np.array([np.count_nonzero(h >= tau) / len(h) if len(h) else -np.inf
                         for h in stats.rewards])

    def term(self, stats, k, value):
        return f"{value:.4g} of {stats.n[k]} draws >= tau {self.tau(stats):.4g}"


class ThreshNormal(_Thresh):
    """P(X >= tau) under Normal(mean_k, std_k); with std_k = 0 it is 1 if mean_k >= tau
    else 0 (the reference returns NaN)."""

    name = "thresh_normal"

    def __init__(self, quantile: float = 0.25):
        super().__init__(quantile)
        self.rule = f"P(X >= tau) under Normal(mean, std), tau = top-{self.quantile:g} quantile"

    def values(self, stats, rng=None):
        tau = self.tau(stats)
        out = np.full(stats.k, -np.inf)
        for k in range(stats.k):
            if stats.n[k] == 0 or not math.isfinite(tau):
                continue
            m, s = float(stats.mean[k]), float(stats.std[k])
            if s > 0:
                out[k] = 0.5 * math.erfc((tau - m) / (s * math.sqrt(2.0)))
            else:
                out[k] = 1.0 if m >= tau else 0.0
        return out

    def term(self, stats, k, value):
        return (f"P = {value:.4g} (mean {stats.mean[k]:.4g}, std {stats.std[k]:.4g}, "
                f"tau {self.tau(stats):.4g})")


class RandomArm(Policy):
    """The baseline: a uniformly random eligible arm (no history-first rule)."""

    name = "random"
    rule = "uniform choice"
    history_first = False

    def values(self, stats, rng=None):
        return np.zeros(stats.k)

    def _pick(self, stats, vals, rng):
        idx = np.flatnonzero(stats.eligible)
        if rng is None:
            raise ValueError("the random policy needs a generator")
        return int(rng.choice(idx)), "random", {}


class Thompson(Policy):
    """Gaussian Thompson sampling (our addition).

    Model: an arm's rewards are Normal(theta_k, sigma^2) with sigma^2 the population
    variance of all rewards drawn so far (1 while there are fewer than two). Prior:
    theta_k ~ Normal(mu0, sigma^2) with mu0 the mean of all rewards drawn so far (0 when
    none), i.e. worth one pseudo-draw at the pooled mean (empirical Bayes, scale-free: it
    works the same for cosines of 0.01 or 0.5). Posterior: Normal((mu0 + sum R_k)/(n_k+1),
    sigma^2/(n_k+1)). Each round samples one theta per arm and plays the largest. Without a
    generator, `values` returns the posterior means.
    """

    name = "thompson"
    rule = "posterior sample of the arm's mean"

    def posterior(self, stats: ArmStats) -> tuple[np.ndarray, np.ndarray]:
        allr = stats.all_rewards
        mu0 = float(allr.mean()) if len(allr) else 0.0
        var = float(allr.var()) if len(allr) >= 2 else 1.0
        var = max(var, 1e-12)
        sums = np.array([h.sum() for h in stats.rewards])
        mean = (mu0 + sums) / (stats.n + 1)
        sd = np.sqrt(var / (stats.n + 1))
        return mean, sd

    def values(self, stats, rng=None):
        mean, sd = self.posterior(stats)
        if rng is None:
            return mean
        return rng.normal(mean, sd)

    def term(self, stats, k, value):
        mean, sd = self.posterior(stats)
        return (f"sample {value:.4g} from Normal({mean[k]:.4g}, {sd[k]:.3g}) "
                f"(n={stats.n[k]})")


def make_policy(name: str, beta: float = 1.0, quantile: float = 0.25) -> Policy:
    """A policy by name (see POLICIES)."""
    if name == "ucb_beta":
        return UcbBeta(beta)
    if name == "ucb1":
        return Ucb1()
    if name == "thresh_hard":
        return ThreshHard(quantile)
    if name == "thresh_normal":
        return ThreshNormal(quantile)
    if name == "random":
        return RandomArm()
    if name == "thompson":
        return Thompson()
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")


def policy_for(spec: SelectionSpec) -> Policy:
    return make_policy(spec.policy, beta=spec.beta, quantile=spec.quantile)


# --------------------------------------------------------------------------------------
# the selection run


class Oracle(Protocol):
    """Anything that scores rows: `.score(rows) -> float array` (NaN = unscorable row)."""

    def score(self, rows: np.ndarray) -> np.ndarray: ...


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
                "rewards": _jsonable_values(self.rewards),
                "n": [int(x) for x in self.n], "mean": _jsonable_values(self.mean),
                "std": _jsonable_values(self.std), "value": _jsonable_values(self.value),
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


def validate_spec(spec: SelectionSpec) -> None:
    """Refuse settings that cannot make a selection, naming the setting."""
    if spec.policy not in POLICIES:
        raise ValueError(f"unknown policy {spec.policy!r}; choose one of {', '.join(POLICIES)}")
    for name in ("cold_start", "budget", "top_p"):
        v = getattr(spec, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 1):
            raise ValueError(f"{name} must be a fraction in [0, 1], got {v!r}")
    if spec.budget <= 0:
        raise ValueError("budget must be > 0")
    if spec.top_p <= 0:
        raise ValueError("top_p must be > 0")
    if spec.top_p > spec.budget:
        raise ValueError(f"top_p ({spec.top_p}) cannot exceed the budget ({spec.budget}): "
                         "the selection is taken from the scored rows")
    if int(spec.draw_batch) != spec.draw_batch or spec.draw_batch < 1:
        raise ValueError(f"draw_batch must be an integer >= 1, got {spec.draw_batch!r}")
    if int(spec.seed) != spec.seed or spec.seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {spec.seed!r}")
    make_policy(spec.policy, spec.beta, spec.quantile)  # checks beta / quantile


class SelectionRun:
    """One ClusterUCB selection over a fixed clustering (METHOD.md section 4).

    labels: cluster index per pool row (0..K-1); a negative label keeps the row out of the
      bandit (never drawn) but it still counts in N. Empty clusters are exhausted arms.
    oracle: `.score(rows)` (see oracle.py); None only for a run reopened read-only.
    log_dir: where the JSONL log lives (None: in memory only).
    n_clusters: K when the last clusters may be empty (default: max label + 1).
    ledger: a curation.Ledger (re-read every round, so bans made between rounds apply), a
      ledger state, or None.
    """

    def __init__(self, labels: np.ndarray, oracle: Oracle | None,
                 spec: SelectionSpec = SelectionSpec(), log_dir: str | Path | None = None,
                 ledger: Any = None, *, n_clusters: int | None = None,
                 meta: dict[str, Any] | None = None, _replaying: bool = False):
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) == 0:
            raise ValueError("labels must be a non-empty 1-D array of cluster indices")
        if not np.issubdtype(labels.dtype, np.integer):
            if not np.all(np.equal(np.mod(labels, 1), 0)):
                raise ValueError("labels must be integers")
        self.labels = labels.astype(np.int64)
        validate_spec(spec)
        self.spec = spec
        self.policy = policy_for(spec)
        self.oracle = oracle
        self.ledger = ledger
        self.meta = dict(meta or {})
        self.N = len(self.labels)
        self.K = int(self.labels.max()) + 1 if (self.labels >= 0).any() else 0
        if n_clusters is not None:
            if n_clusters < self.K:
                raise ValueError(f"n_clusters={n_clusters} but the labels go up to {self.K - 1}")
            self.K = int(n_clusters)
        self.budget_total = count_of(spec.budget, self.N)
        self.n_top = count_of(spec.top_p, self.N)
        self.labels_fingerprint = labels_fingerprint(self.labels)

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

        if not _replaying:
            self.check_cold_start(self._banned_mask())

        self.log_path = None if log_dir is None else Path(log_dir) / LOG_NAME
        if self.log_path is not None and not _replaying:
            if self.log_path.exists() and self.log_path.stat().st_size > 0:
                raise FileExistsError(f"{self.log_path} already holds a run; reopen it with "
                                      "SelectionRun.open() to continue it")
            atomic.write_text(self.log_path, json.dumps(self._header()) + "\n")

    # ---------------------------------------------------------------- state views
    def _header(self) -> dict[str, Any]:
        describe = getattr(self.oracle, "describe", None)
        return {"kind": "header", "version": LOG_VERSION, "spec": to_dict(self.spec),
                "n_rows": self.N, "k": self.K, "labels_fingerprint": self.labels_fingerprint,
                "budget_total": self.budget_total, "n_top": self.n_top,
                "oracle": describe() if callable(describe) else None, "meta": self.meta,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def ledger_view(self) -> LedgerView:
        return _ledger_view(self.ledger)

    def banned_mask(self) -> np.ndarray:
        """Bool per arm: banned in the ledger right now."""
        return self._banned_mask()

    def _banned_mask(self, view: LedgerView | None = None) -> np.ndarray:
        view = self.ledger_view() if view is None else view
        mask = np.zeros(self.K, dtype=bool)
        for k in view.banned:
            if 0 <= k < self.K:
                mask[k] = True
        return mask

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
        return ArmStats(tuple(self._hist), self._ptr.copy(), self.remaining, banned.copy(),
                        self._n.copy(), self._mean.copy(), self._std.copy())

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
        decision = self.policy.decide(self.stats(banned), policy_rng(self.spec.seed, round_no))
        arm = decision.arm
        m = int(min(self.spec.draw_batch, self.budget_total - self.budget_used,
                    self.remaining[arm]))
        rows = self._order[arm][self._ptr[arm]:self._ptr[arm] + m]
        expl = decision.explain()
        expl["sentence"] += f" Drew {m} of its {int(self.remaining[arm])} undrawn members."
        return arm, rows, expl

    def peek(self) -> dict[str, Any] | None:
        """What the next `step()` will draw and why, without drawing (None when done).

        The same decision step() takes: the policy's generator depends only on (seed, round),
        and the ledger is read now (a ban made before the step changes both)."""
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

    def _append_log(self, line: dict[str, Any]) -> None:
        if self.log_path is None:
            return
        data = (json.dumps(line, allow_nan=False) + "\n").encode()
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _apply(self, round_no: int, kind: str, arm: int | None, rows: np.ndarray,
               rewards: np.ndarray, banned: np.ndarray, expl: dict[str, Any]) -> RoundRecord:
        rows = np.asarray(rows, dtype=np.int64)
        touched = sorted(set(int(k) for k in self.labels[rows])) if len(rows) else []
        for k in touched:
            sel = self.labels[rows] == k
            self._ptr[k] += int(sel.sum())
            fin = rewards[sel][np.isfinite(rewards[sel])]
            if len(fin):
                self._hist[k] = np.concatenate([self._hist[k], fin])
                self._n[k] = len(self._hist[k])
                self._mean[k] = self._hist[k].mean()
                self._std[k] = self._hist[k].std()
        self.scores[rows] = rewards
        self.round_drawn[rows] = round_no
        self.budget_used += len(rows)
        self._next_round = round_no + 1
        after = self.stats(banned)
        rec = RoundRecord(round_no, kind, arm, rows, rewards, after.n, after.mean, after.std,
                          self.policy.masked_values(after, None), after.exhausted,
                          banned.copy(), self.budget_used, self.budget_total, expl)
        self.records.append(rec)
        return rec

    def step(self) -> RoundRecord:
        """Play one round (the cold start first, when there is one) and log it."""
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
        self._append_log({"round": round_no, "kind": kind, "arm": arm,
                          "rows": [int(r) for r in rows],
                          "rewards": _jsonable_values(rewards),
                          "banned": [int(k) for k in np.flatnonzero(banned)],
                          "budget_used": self.budget_used + len(rows),
                          "explanation": expl, "ts": time.time()})
        return self._apply(round_no, kind, arm, rows, rewards, banned, expl)

    def run_to_end(self, max_rounds: int | None = None) -> list[RoundRecord]:
        """Step until the budget is spent or no arm is left (or `max_rounds` rounds)."""
        out = []
        while not self.done and (max_rounds is None or len(out) < max_rounds):
            out.append(self.step())
        return out

    # ---------------------------------------------------------------- results
    def selected(self, ledger: Any = None) -> np.ndarray:
        """The final selection, best first: pinned rows always in, rejected rows and rows of
        banned clusters never in (unless pinned), the rest the top scored rows up to
        floor(N * top_p) in all; rows with a NaN score are never chosen by score.
        Ties in score go to the lower row index."""
        view = self.ledger_view() if ledger is None else _ledger_view(ledger)
        return select_top(self.scores, self.labels, self.n_top, view)

    def result(self, ledger: Any = None) -> SelectionResult:
        view = self.ledger_view() if ledger is None else _ledger_view(ledger)
        return SelectionResult(select_top(self.scores, self.labels, self.n_top, view),
                               self.scores.copy(), self.round_drawn.copy(), self.labels.copy(),
                               view.pinned, view.rejected, view.banned, self.spec, self.n_top,
                               self.budget_used, self.budget_total, len(self.records),
                               self.labels_fingerprint, self.ban_changes(), self.K)

    def ban_changes(self) -> tuple[tuple[int, tuple[int, ...]], ...]:
        """(round, banned arms) for the first round and every round where the banned set the
        bandit saw changed: enough to rerun the run exactly (export.reproduce_selection)."""
        out: list[tuple[int, tuple[int, ...]]] = []
        for rec in self.records:
            cur = tuple(int(k) for k in np.flatnonzero(rec.banned))
            if not out or out[-1][1] != cur:
                out.append((rec.round, cur))
        return tuple(out)

    # ---------------------------------------------------------------- resume
    @classmethod
    def open(cls, log_dir: str | Path, labels: np.ndarray, oracle: Oracle | None = None,
             ledger: Any = None) -> "SelectionRun":
        """Reopen a run from its log: replay every complete round (no rescoring) and continue
        from there. A half-written last line (a crash mid-round) is dropped, so at most the
        round in flight is lost. Refuses a log made with other labels."""
        path = Path(log_dir) / LOG_NAME
        if not path.exists():
            raise FileNotFoundError(f"no selection log at {path}")
        raw = path.read_bytes()
        lines = raw.split(b"\n")
        complete, good_len = [], 0
        for i, line in enumerate(lines[:-1]):  # the part after the last newline is partial
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines) - 2:  # a torn last line that happens to end in newline
                    break
                raise ValueError(f"{path}: line {i + 1} is not valid JSON") from None
            complete.append(obj)
            good_len += len(line) + 1
        if not complete or complete[0].get("kind") != "header":
            raise ValueError(f"{path} has no header line; it is not a selection log")
        header = complete[0]
        if header.get("version") != LOG_VERSION:
            raise ValueError(f"{path}: log version {header.get('version')} is not supported")
        labels = np.asarray(labels)
        fp = labels_fingerprint(labels)
        if len(labels) != header["n_rows"] or fp != header["labels_fingerprint"]:
            raise ValueError(
                f"{path} was made with other cluster labels (n_rows {header['n_rows']}, "
                f"fingerprint {header['labels_fingerprint']}; given {len(labels)}, {fp})")
        spec = from_dict(SelectionSpec, header["spec"])
        run = cls(labels, oracle, spec, log_dir, ledger, n_clusters=header["k"],
                  meta=header.get("meta"), _replaying=True)
        run.header = header
        for obj in complete[1:]:
            run._replay(obj, path)
        if good_len != len(raw):  # drop the torn tail so appends stay line-aligned
            with open(path, "r+b") as fh:
                fh.truncate(good_len)
                os.fsync(fh.fileno())
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
            a = int(arm)
            expect = self._order[a][self._ptr[a]:self._ptr[a] + len(rows)]
        if not np.array_equal(expect, rows):
            raise ValueError(f"{path}: round {round_no} drew rows that this seed and these "
                             "labels do not give; the log belongs to another run")
        rewards = _from_json_values(obj["rewards"], np.nan)
        kind = "cold_start" if round_no == 0 else "bandit"
        self._apply(round_no, kind, None if arm is None else int(arm), rows, rewards, banned,
                    obj.get("explanation", {}))


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
    rows = np.concatenate([pinned, cand[order]])
    key = np.where(np.isfinite(scores[rows]), -scores[rows], np.inf)
    return rows[np.lexsort((rows, key))]
