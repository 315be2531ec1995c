"""Arm policies over clusters (docs/METHOD.md section 4): each turns the arms' reward statistics
(`ArmStats`) into one value per arm and picks an arm, and can say why (`Decision`: the values
it compared and a sentence). `make_policy(name, ...)` builds one by name.

Rules shared by every policy:
- an arm that is exhausted (no undrawn member) or banned is never chosen; its value is
  reported as -inf (the reference code used 0, which wins when cosines are negative);
- an eligible arm that has never been drawn is played first (lowest index), except under
  `random`, the baseline;
- otherwise the eligible arm with the largest value is played, ties to the lowest index.
- an arm whose draws were all unscorable (NaN rewards, e.g. rows with no trained token)
  has no statistics; its value is -inf, so it is played only when nothing else is left.

A policy that needs randomness in round `r` (`random`, `thompson`) gets a generator from
`(seed, round)` (`policy_rng`), so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, get_args

import numpy as np

from clusterucb_core.config import POLICY

if TYPE_CHECKING:  # pragma: no cover
    from clusterucb_core.config import SelectionSpec

POLICIES: tuple[str, ...] = get_args(POLICY)

# streams of SeedSequence([seed, stream, index])
STREAM_POLICY = 0
STREAM_ORDER = 1
STREAM_SPLIT = 2


def finite_or_none(x: float) -> float | None:
    """x as a float, or None when it is not finite (JSON has no NaN or inf)."""
    x = float(x)
    return x if math.isfinite(x) else None


def jsonable_values(values: np.ndarray) -> list[float | None]:
    """A float array as a JSON-ready list (non-finite values become None)."""
    return [finite_or_none(v) for v in np.asarray(values, dtype=np.float64)]


def from_json_values(values: Sequence[float | None], fill: float) -> np.ndarray:
    """The inverse of `jsonable_values`, with None read as `fill`."""
    return np.array([fill if v is None else float(v) for v in values], dtype=np.float64)


def policy_rng(seed: int, round_no: int) -> np.random.Generator:
    """The generator a policy gets in one round: a function of (seed, round) only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), STREAM_POLICY,
                                                         int(round_no)]))



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
    # per arm, a reward model's predicted mean for the rows the arm would draw next (NaN:
    # none); set under draw_order "predicted", where draws are not uniform and the mean of
    # past draws understates the next ones
    expected: np.ndarray | None = None

    @classmethod
    def from_rewards(cls, rewards: Sequence[Sequence[float]],
                     remaining: Sequence[int] | None = None,
                     banned: Sequence[int] | Sequence[bool] | None = None) -> ArmStats:
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
                "values": jsonable_values(self.values),
                "eligible": [bool(e) for e in self.eligible],
                "sentence": self.sentence,
                "detail": {k: (finite_or_none(v) if isinstance(v, float) else v)
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
        text = (f"{self.name}: arm {arm} has the largest {self.rule}: "
                f"{self.term(stats, arm, vals[arm])}")
        if others:
            runner = max(others, key=lambda i: (vals[i], -i))
            text += f"; next best arm {runner}: {self.term(stats, runner, vals[runner])}"
        return text + skipped + "."


def pooled_std(stats: ArmStats, prior: float) -> np.ndarray:
    """Each arm's std shrunk toward the std of every reward drawn so far, as if the pool's
    spread had been seen `prior` more times in the arm: sqrt((n var + prior var_all) /
    (n + prior)). An arm with one or two draws no longer looks certain (std 0) or wild."""
    if prior <= 0:
        return stats.std
    every = np.concatenate([r for r in stats.rewards if len(r)]) if stats.total else \
        np.zeros(0)
    var_all = float(every.var()) if len(every) > 1 else 0.0
    n = stats.n.astype(np.float64)
    with np.errstate(invalid="ignore"):
        var = np.where(n > 0, np.nan_to_num(stats.std) ** 2, 0.0)
        return np.sqrt((n * var + prior * var_all) / (n + prior))


def center(stats: ArmStats) -> np.ndarray:
    """Each arm's mean: the predicted mean of its next draws where there is one, else the
    mean of its draws so far."""
    if stats.expected is None:
        return stats.mean
    return np.where(np.isfinite(stats.expected), stats.expected, stats.mean)


class UcbBeta(Policy):
    """The paper's rule: mean + beta * std (population std); with `pooled` > 0 the std is
    `pooled_std` (an option beyond the paper, off by default)."""

    name = "ucb_beta"

    def __init__(self, beta: float = 1.0, pooled: float = 0.0):
        if not math.isfinite(beta):
            raise ValueError(f"beta must be finite, got {beta}")
        if not (math.isfinite(pooled) and pooled >= 0):
            raise ValueError(f"pooled_variance must be a number of draws >= 0, got {pooled}")
        self.beta = float(beta)
        self.pooled = float(pooled)
        self.rule = f"mean + {self.beta:g}*std" + (" (pooled std)" if self.pooled else "")

    def values(self, stats, rng=None):
        with np.errstate(invalid="ignore"):
            v = center(stats) + self.beta * pooled_std(stats, self.pooled)
        v[stats.n == 0] = -np.inf
        return v

    def term(self, stats, k, value):
        std = pooled_std(stats, self.pooled)[k]
        c = center(stats)[k]
        mean = (f"mean {c:.4g}" if c == stats.mean[k] or not math.isfinite(c) else
                f"predicted mean of its next draws {c:.4g} (drawn so far {stats.mean[k]:.4g})")
        return f"{mean} + {self.beta:g}*std {std:.4g} = {value:.4g} (n={stats.n[k]})"


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


def make_policy(name: str, beta: float = 1.0, quantile: float = 0.25,
                pooled: float = 0.0) -> Policy:
    """A policy by name (see POLICIES)."""
    if name == "ucb_beta":
        return UcbBeta(beta, pooled)
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
    return make_policy(spec.policy, beta=spec.beta, quantile=spec.quantile,
                       pooled=spec.pooled_variance)
