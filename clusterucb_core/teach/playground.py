"""A bandit playground: synthetic arms whose truth is known, for teaching and for races.

No model and no pool: every "row" is a number drawn from its arm's reward distribution, and
the engine's own `SelectionRun` plays on them through a `TableOracle`, exactly as it plays on
real influence scores. Because everything is known, the truth can be revealed at any time:
the true means, the best arm, the rows of the true top-p, and the regret so far.

* `Arm(size, mean, spread)`: one cluster. Its rewards are Normal draws rescaled so that
  their mean and population std are *exactly* `mean` and `spread` (what you set is what the
  arm is; no sampling luck in the truth).
* `PlaygroundSpec`: either explicit `arms`, or arms drawn at random from `seed` (sizes,
  means, spreads in the given ranges), optionally with one **hidden gem**: a small arm whose
  mean is the highest (`gem_lift` above the best other arm). The gem is where most of the
  true top-p lives; a good policy finds it after a few draws, the random one rarely.
* `build(spec) -> Playground`: labels (cluster per row), rewards (one per row), the truth.
* `OraclePolicy`: the arm rule of someone who knows the true means (always the best arm
  still open). It has zero regret while the best arm lasts and is the reference line of a
  race. It is injected into a `SelectionRun` with `use_policy`.

Regret, two views (both in expected reward, i.e. arm means, not the noisy draws):
* the engine's (`oracle.regret_table`): `cum_regret` = sum over draws of mu* - mu(arm played),
  with mu* the best arm's mean. Once the best arm is empty every policy pays it, even one
  that knows the truth.
* `regret_vs_oracle` (added by `Playground.regret`): what a policy lost against the oracle
  that knows the true means and plays the best arm *still open* (`oracle_regret_curve`). It
  is zero for the oracle at every budget, and what a teaching chart should show.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clusterucb_core.config import SelectionSpec, reject_unknown
from clusterucb_core.selection import run as selection
from clusterucb_core.selection.oracle import TableOracle, exhaustive_top, regret_table, run_metrics
from clusterucb_core.selection.policies import ArmStats, Policy
from clusterucb_core.selection.run import SelectionRun


@dataclass(frozen=True)
class Arm:
    """One synthetic cluster: `size` rows whose rewards have exactly this mean and spread."""

    size: int
    mean: float
    spread: float

    def check(self, i: int = 0) -> None:
        if int(self.size) != self.size or self.size < 1:
            raise ValueError(f"arm {i}: size must be an integer >= 1, got {self.size!r}")
        if not (np.isfinite(self.mean) and -1.0 <= self.mean <= 1.0):
            raise ValueError(f"arm {i}: mean must lie in [-1, 1] (rewards are cosines), "
                             f"got {self.mean!r}")
        if not (np.isfinite(self.spread) and 0.0 <= self.spread <= 1.0):
            raise ValueError(f"arm {i}: spread must lie in [0, 1], got {self.spread!r}")


@dataclass(frozen=True)
class PlaygroundSpec:
    """How to make the arms. With `arms` given they are used as they are (and the ranges and
    `gem*` are ignored); otherwise `n_arms` arms are drawn from `seed`."""

    n_arms: int = 8
    seed: int = 0
    size_min: int = 60
    size_max: int = 200
    mean_min: float = 0.0
    mean_max: float = 0.10
    spread_min: float = 0.01
    spread_max: float = 0.04
    gem: bool = True
    gem_size: int = 0  # 0: half the smallest other arm (at least 5 rows)
    gem_lift: float = 0.10  # the gem's mean = the best other arm's mean + this
    arms: tuple[Arm, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlaygroundSpec:
        """From plain data (TOML/JSON); `arms` is a list of {size, mean, spread} tables."""
        reject_unknown(cls, data, "playground")
        kw = dict(data)
        if "arms" in kw:
            arms = []
            for i, a in enumerate(kw["arms"] or []):
                if isinstance(a, Arm):
                    arms.append(a)
                    continue
                extra = sorted(set(a) - {"size", "mean", "spread"})
                if extra or not {"size", "mean"} <= set(a):
                    raise ValueError(f"playground arm {i}: give size, mean and spread "
                                     f"(got {sorted(a)})")
                arms.append(Arm(int(a["size"]), float(a["mean"]), float(a.get("spread", 0.0))))
            kw["arms"] = tuple(arms)
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["arms"] = [dataclasses.asdict(a) for a in self.arms]
        return d


def random_arms(spec: PlaygroundSpec) -> tuple[list[Arm], int | None]:
    """Arms drawn from `spec.seed` within the spec's ranges, and the gem's index (or None)."""
    if int(spec.n_arms) != spec.n_arms or spec.n_arms < 2:
        raise ValueError(f"n_arms must be an integer >= 2, got {spec.n_arms!r}")
    if not 1 <= spec.size_min <= spec.size_max:
        raise ValueError(f"need 1 <= size_min <= size_max, got {spec.size_min}, {spec.size_max}")
    if not spec.mean_min <= spec.mean_max:
        raise ValueError("mean_min must not exceed mean_max")
    if not 0 <= spec.spread_min <= spec.spread_max:
        raise ValueError("need 0 <= spread_min <= spread_max")
    rng = np.random.default_rng(np.random.SeedSequence([int(spec.seed), 7]))
    n_plain = spec.n_arms - 1 if spec.gem else spec.n_arms
    sizes = rng.integers(spec.size_min, spec.size_max + 1, size=n_plain)
    means = rng.uniform(spec.mean_min, spec.mean_max, size=n_plain)
    spreads = rng.uniform(spec.spread_min, spec.spread_max, size=n_plain)
    arms = [Arm(int(s), round(float(m), 4), round(float(d), 4))
            for s, m, d in zip(sizes, means, spreads)]
    gem = None
    if spec.gem:
        size = int(spec.gem_size) if spec.gem_size > 0 else max(int(sizes.min()) // 2, 5)
        mean = round(float(means.max()) + float(spec.gem_lift), 4)
        spread = round(float(rng.uniform(spec.spread_min, spec.spread_max)), 4)
        gem = int(rng.integers(0, spec.n_arms))
        arms.insert(gem, Arm(size, min(mean, 1.0), spread))
    return arms, gem


def exact_draws(n: int, mean: float, spread: float, rng: np.random.Generator) -> np.ndarray:
    """n Normal draws rescaled to exactly this mean and population std."""
    if n == 1 or spread == 0:
        return np.full(n, float(mean))
    z = rng.standard_normal(n)
    z = (z - z.mean()) / z.std()
    return mean + spread * z


@dataclass
class Playground:
    """Synthetic arms, their rows, and the truth about them."""

    arms: tuple[Arm, ...]
    labels: np.ndarray  # arm per row; rows of arm 0 first, then arm 1, ...
    rewards: np.ndarray  # reward per row
    gem: int | None  # the hidden gem's arm (random arms with gem=True), else None
    spec: PlaygroundSpec = field(default_factory=PlaygroundSpec)

    @property
    def N(self) -> int:
        return len(self.labels)

    @property
    def K(self) -> int:
        return len(self.arms)

    @property
    def sizes(self) -> np.ndarray:
        return np.array([a.size for a in self.arms], dtype=np.int64)

    @property
    def true_means(self) -> np.ndarray:
        return np.array([a.mean for a in self.arms], dtype=np.float64)

    @property
    def spreads(self) -> np.ndarray:
        return np.array([a.spread for a in self.arms], dtype=np.float64)

    @property
    def best_arm(self) -> int:
        """The arm with the highest true mean (ties to the lowest index)."""
        return int(np.argmax(self.true_means))

    def oracle(self) -> TableOracle:
        return TableOracle(self.rewards, name="playground")

    def top_rows(self, top_p: float) -> np.ndarray:
        """The rows of the true top-p (what scoring every row would select)."""
        return exhaustive_top(self.rewards, selection.count_of(top_p, self.N))

    def truth(self, top_p: float = 0.05):
        """One row per arm: size, true mean and spread, rank by mean, best, gem, and how many
        rows of the true top-p it holds (a pandas DataFrame)."""
        import pandas as pd

        mu = self.true_means
        rank = np.empty(self.K, dtype=np.int64)
        rank[np.lexsort((np.arange(self.K), -mu))] = np.arange(1, self.K + 1)
        in_top = np.bincount(self.labels[self.top_rows(top_p)], minlength=self.K)
        return pd.DataFrame({"arm": np.arange(self.K), "size": self.sizes, "true_mean": mu,
                             "spread": self.spreads, "rank": rank,
                             "best": np.arange(self.K) == self.best_arm,
                             "gem": np.arange(self.K) == (-1 if self.gem is None else self.gem),
                             "top_p_rows": in_top})

    def table(self):
        """The rows: row, arm, reward (a pandas DataFrame; for CSV export)."""
        import pandas as pd

        return pd.DataFrame({"row": np.arange(self.N), "arm": self.labels,
                             "reward": self.rewards})

    def new_run(self, spec: SelectionSpec, policy: Policy | None = None) -> SelectionRun:
        """An in-memory selection run on these arms (`policy` overrides the spec's)."""
        run = SelectionRun(self.labels, self.oracle(), spec, None,
                           meta={"playground": self.spec.to_dict()})
        if policy is not None:
            use_policy(run, policy)
        return run

    def regret(self, run: SelectionRun, top_p: float | None = None):
        """The engine's per-round regret table (regret, cum_regret, recall_so_far, ...) plus
        `budget_used` and `regret_vs_oracle` (see the module docstring)."""
        n_top = run.n_top if top_p is None else selection.count_of(top_p, self.N)
        return with_oracle_regret(regret_table(run.records, self.rewards, self.labels, n_top),
                                  run.records, self.true_means, self.sizes)

    def metrics(self, run: SelectionRun) -> dict[str, Any]:
        """recall / mass_share of the run's current selection and the regret table."""
        return run_metrics(run, self.rewards)

    def describe(self) -> str:
        return (f"{self.K} arms, {self.N:,} rows; best arm {self.best_arm} "
                f"(true mean {self.true_means[self.best_arm]:.3f}, "
                f"{self.sizes[self.best_arm]} rows)")


def build(spec: PlaygroundSpec = PlaygroundSpec()) -> Playground:
    """Make the arms (explicit or drawn from the seed) and their rows. Deterministic."""
    if spec.arms:
        arms = list(spec.arms)
        if len(arms) < 2:
            raise ValueError("a playground needs at least 2 arms")
        mu = np.array([a.mean for a in arms])
        best = int(np.argmax(mu))
        sizes = np.array([a.size for a in arms])
        # the best arm counts as a hidden gem when it is also one of the smaller arms
        gem = best if sizes[best] < np.median(sizes) else None
    else:
        arms, gem = random_arms(spec)
    for i, a in enumerate(arms):
        a.check(i)
    rng = np.random.default_rng(np.random.SeedSequence([int(spec.seed), 11]))
    labels = np.concatenate([np.full(a.size, k, dtype=np.int64) for k, a in enumerate(arms)])
    rewards = np.concatenate([exact_draws(a.size, a.mean, a.spread, rng) for a in arms])
    return Playground(tuple(arms), labels, rewards, gem, spec)


# --------------------------------------------------------------------------------------
# the reference policy that knows the truth


def oracle_cum_regret(mu: Sequence[float], sizes: Sequence[int],
                      budget_used: Sequence[int] | np.ndarray) -> np.ndarray:
    """The engine's cumulative regret of the oracle after `t` draws, for each t given.

    The oracle draws arms in order of their mean (ties to the lower index) until each is
    empty; its regret after t draws is sum over those draws of mu* - mu(arm). Arms with a
    NaN mean are never drawn by it (they have no scored rows).
    """
    mu = np.asarray(mu, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.int64)
    ok = np.flatnonzero(np.isfinite(mu) & (sizes > 0))
    t = np.asarray(budget_used, dtype=np.int64)
    if len(ok) == 0:
        return np.zeros(len(t))
    order = ok[np.lexsort((ok, -mu[ok]))]
    mu_star = float(mu[order[0]])
    ends = np.cumsum(sizes[order])  # draws after emptying each arm in turn
    gaps = mu_star - mu[order]
    starts = ends - sizes[order]
    out = np.zeros(len(t))
    for s, e, g in zip(starts, ends, gaps):
        out += g * np.clip(t - s, 0, e - s)
    return out


def with_oracle_regret(table, records: Sequence[Any], mu: Sequence[float],
                       sizes: Sequence[int]):
    """Add `budget_used` (rows scored after the round) and `regret_vs_oracle` (cum_regret
    minus the oracle's at the same number of draws) to a `regret_table`."""
    used = [int(r.budget_used) for r in records if len(r.rows)]
    table = table.copy()
    table["budget_used"] = np.asarray(used[:len(table)], dtype=np.int64)
    base = oracle_cum_regret(mu, sizes, table["budget_used"].to_numpy())
    # float noise of an exact tie (the oracle itself) is not regret
    diff = table["cum_regret"].to_numpy(dtype=np.float64) - base
    table["regret_vs_oracle"] = np.where(np.abs(diff) < 1e-9 * max(1.0, np.abs(base).max(
        initial=0.0)), 0.0, diff)
    return table


class OraclePolicy(Policy):
    """Plays the open arm with the highest *true* mean (only a playground can know it)."""

    name = "oracle"
    rule = "true mean (known only to the oracle)"
    history_first = False

    def __init__(self, true_means: Sequence[float]):
        self.true_means = np.asarray(true_means, dtype=np.float64)

    def values(self, stats: ArmStats, rng: np.random.Generator | None = None) -> np.ndarray:
        if len(self.true_means) != stats.k:
            raise ValueError(f"the oracle knows {len(self.true_means)} arms, the run has "
                             f"{stats.k}")
        return self.true_means.copy()

    def term(self, stats, k, value):
        return f"true mean {value:.4g}"


def use_policy(run: SelectionRun, policy: Policy) -> SelectionRun:
    """Make `run` choose arms with `policy` (e.g. OraclePolicy). Only for in-memory runs: a
    log written this way names a policy its spec does not, so it is not replayable."""
    if run.log_path is not None:
        raise ValueError("use_policy is for in-memory runs (log_dir=None) only")
    run.policy = policy
    return run
