"""Policy races and run comparisons: how the arm policies spend the same budget.

**Race** (`run_race`): every contestant (a policy with its parameters: beta, threshold
quantile, cold start, draw batch) plays on the same clusters and the same rewards with the
same seeds, through the engine's own `SelectionRun` and `TableOracle`; so two contestants with
the same seed see the same draw order inside every cluster and differ only in which arm they
play. The rewards are either a playground's (`playground.build`) or a workspace's exhaustive
scores (`workspace_source`). Results are tidy pandas DataFrames:

* `curves`: one row per (contestant, seed, round): rows drawn, `budget_used` (rows scored
  so far), `budget_share` (of the pool), `recall` of the true top-p among the rows scored so
  far (= the recall of the run's selection at that point), `cum_regret` (the engine's: mu* -
  mu(arm) per draw, summed), `regret_vs_oracle` (the same minus what an oracle that knows the
  cluster means pays, see playground.py), and `best_arm_share` (share of draws on the best
  arm). A round-(-1) row at zero budget starts every curve.
* `band`: the curves averaged over seeds on a common budget grid (step interpolation): one
  row per (contestant, metric, grid point) with mean, std, lo, hi (min/max over seeds).
* `draws`: one row per (contestant, seed, round, cluster) with the rows drawn (zeros left
  out), for the draws-per-cluster-over-rounds heat map (`draw_matrix`).
* `summary`: one row per contestant: final recall, mass share and regret (mean and std over
  seeds), rounds, best-arm share.

`race_png` draws the comparison with matplotlib (headless, no browser), `write_race` writes
CSVs + PNG + the settings used.

**Run comparison** (`compare_runs`): two saved selection runs of a workspace, replayed from
their logs: overlap of the selected sets, per-cluster and per-source counts, score
distributions, the settings side by side, and a per-row CSV.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clusterucb_core.clustering.clusterset import cluster_rows, load_clusters
from clusterucb_core.config import SelectionSpec, reject_unknown
from clusterucb_core.runtime import atomic
from clusterucb_core.selection import policies, runlog
from clusterucb_core.selection import run as selection
from clusterucb_core.selection.oracle import (
    TableOracle,
    cluster_means,
    exhaustive_top,
    mass_share,
    regret_table,
)
from clusterucb_core.selection.run import SelectionRun
from clusterucb_core.selection.runs import open_run
from clusterucb_core.teach.playground import OraclePolicy, use_policy, with_oracle_regret

ORACLE = "oracle"
RACE_POLICIES: tuple[str, ...] = policies.POLICIES + (ORACLE,)
METRICS: tuple[str, ...] = ("recall", "cum_regret", "regret_vs_oracle")

METRIC_LABELS = {"recall": "recall of the true top-p",
                 "cum_regret": "cumulative regret (vs the best arm)",
                 "regret_vs_oracle": "regret vs an oracle that knows the means"}


# --------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class Contestant:
    """One policy with its parameters. `cold_start` / `draw_batch` None: the race's."""

    policy: str
    beta: float = 1.0
    quantile: float = 0.25
    cold_start: float | None = None
    draw_batch: int | None = None
    label: str = ""

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        p = self.policy
        text = {"ucb_beta": f"ucb_beta β={self.beta:g}",
                "thresh_hard": f"thresh_hard q={self.quantile:g}",
                "thresh_normal": f"thresh_normal q={self.quantile:g}"}.get(p, p)
        if self.cold_start is not None:
            text += f" cs={self.cold_start:g}"
        if self.draw_batch is not None:
            text += f" B={self.draw_batch}"
        return text

    def check(self) -> None:
        if self.policy not in RACE_POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; choose from "
                             f"{', '.join(RACE_POLICIES)}")
        if self.policy != ORACLE:
            policies.make_policy(self.policy, self.beta, self.quantile)


def default_contestants() -> tuple[Contestant, ...]:
    """Every engine policy with its default parameters."""
    return tuple(Contestant(p) for p in policies.POLICIES)


@dataclass(frozen=True)
class RaceSpec:
    contestants: tuple[Contestant, ...] = field(default_factory=default_contestants)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    budget: float = 0.2
    top_p: float = 0.05
    cold_start: float = 0.05
    draw_batch: int = 8
    grid_points: int = 101  # budget grid of the averaged curves
    # which undrawn rows of the chosen arm each round draws (selection.run.DRAW_ORDERS);
    # "random" is the paper's; the others need the clustering's features (run_race features=)
    draw_order: str = "random"

    def selection_spec(self, c: Contestant, seed: int) -> SelectionSpec:
        """The engine settings of one contestant's run. The oracle needs no exploration: its
        cold start is 0 unless the contestant sets one."""
        cold = c.cold_start if c.cold_start is not None else (
            0.0 if c.policy == ORACLE else self.cold_start)
        return SelectionSpec(policy="ucb_beta" if c.policy == ORACLE else c.policy,
                             beta=float(c.beta), quantile=float(c.quantile),
                             cold_start=float(cold),
                             budget=float(self.budget), top_p=float(self.top_p),
                             draw_batch=int(self.draw_batch if c.draw_batch is None
                                            else c.draw_batch),
                             seed=int(seed), draw_order=str(self.draw_order))

    def check(self) -> None:
        if not self.contestants:
            raise ValueError("a race needs at least one contestant")
        if not self.seeds:
            raise ValueError("a race needs at least one seed")
        names = [c.name for c in self.contestants]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"two contestants share the name {dup[0]!r}; give one a label")
        for c in self.contestants:
            c.check()
            self.selection_spec(c, self.seeds[0])  # a SelectionSpec checks itself
        if int(self.grid_points) < 2:
            raise ValueError("grid_points must be >= 2")

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "contestants"}
        d["seeds"] = list(self.seeds)
        d["contestants"] = [{k: v for k, v in dataclasses.asdict(c).items()
                             if v is not None and v != ""} for c in self.contestants]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RaceSpec:
        reject_unknown(cls, data, "race")
        kw = dict(data)
        if "contestants" in kw:
            cs = []
            for i, c in enumerate(kw["contestants"]):
                if isinstance(c, Contestant):
                    cs.append(c)
                    continue
                reject_unknown(Contestant, c, f"contestant {i}")
                if "policy" not in c:
                    raise ValueError(f"contestant {i}: give a policy")
                cs.append(Contestant(**c))
            kw["contestants"] = tuple(cs)
        if "seeds" in kw:
            seeds = kw["seeds"]
            kw["seeds"] = tuple(range(int(seeds))) if isinstance(seeds, int) else tuple(
                int(s) for s in seeds)
        return cls(**kw)


# --------------------------------------------------------------------------------------
# the race


@dataclass
class RaceResult:
    spec: RaceSpec
    n_rows: int
    n_top: int
    k: int
    best_arm: int
    cluster_mean: np.ndarray
    sizes: np.ndarray
    curves: pd.DataFrame
    band: pd.DataFrame
    draws: pd.DataFrame
    summary: pd.DataFrame
    names: list[str] = field(default_factory=list)  # cluster display names
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def contestants(self) -> list[str]:
        return [c.name for c in self.spec.contestants]

    def recall_at(self, share: float) -> pd.DataFrame:
        """Mean/std recall over seeds when `share` of the pool has been scored."""
        rows = []
        for name in self.contestants:
            per_seed = []
            for _, g in self.curves[self.curves.contestant == name].groupby("seed"):
                per_seed.append(_step_at(g["budget_share"].to_numpy(), g["recall"].to_numpy(),
                                         np.array([share]))[0])
            rows.append({"contestant": name, "budget_share": share,
                         "recall_mean": float(np.mean(per_seed)),
                         "recall_std": float(np.std(per_seed))})
        return pd.DataFrame(rows)


def _step_at(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Step interpolation: the value of the last point with x <= g (the first before it)."""
    idx = np.searchsorted(x, grid, side="right") - 1
    return y[np.clip(idx, 0, len(y) - 1)]


def run_race(labels: np.ndarray, rewards: np.ndarray, spec: RaceSpec = RaceSpec(),
             names: Sequence[str] | None = None, source: dict[str, Any] | None = None,
             progress: Any = None, features: np.ndarray | None = None) -> RaceResult:
    """Run every contestant with every seed on these clusters and rewards (see the module
    docstring). `rewards` are the exhaustive scores (NaN = unscorable row). `progress(i, n)`
    is called after each run. `features` (one row per pool row, as `workspace_features`
    gives) are needed by a draw order other than random."""
    spec.check()
    if spec.draw_order != "random" and features is None:
        raise ValueError(f"draw order {spec.draw_order!r} needs the clustering's features: "
                         "race on a workspace, or choose the draw order 'random'")
    labels = np.asarray(labels, dtype=np.int64)
    rewards = np.asarray(rewards, dtype=np.float64)
    if labels.shape != rewards.shape or labels.ndim != 1:
        raise ValueError(f"labels ({labels.shape}) and rewards ({rewards.shape}) must be 1-D "
                         "and of the same length")
    n = len(labels)
    k = int(labels.max()) + 1 if (labels >= 0).any() else 0
    mu = cluster_means(rewards, labels)
    if len(mu) < k:
        mu = np.concatenate([mu, np.full(k - len(mu), np.nan)])
    sizes = np.bincount(labels[labels >= 0], minlength=k)
    best = int(np.nanargmax(mu)) if np.isfinite(mu).any() else -1
    n_top = selection.count_of(spec.top_p, n)
    top = exhaustive_top(rewards, n_top)

    curve_rows: list[pd.DataFrame] = []
    draw_rows: list[dict[str, Any]] = []
    finals: list[dict[str, Any]] = []
    total = len(spec.contestants) * len(spec.seeds)
    done = 0
    for c in spec.contestants:
        for seed in spec.seeds:
            run = SelectionRun(labels, TableOracle(rewards), spec.selection_spec(c, seed), None,
                               features=features if spec.draw_order != "random" else None)
            if c.policy == ORACLE:
                use_policy(run, OraclePolicy(np.where(np.isfinite(mu), mu, -np.inf)))
            run.run_to_end()
            tab = with_oracle_regret(regret_table(run.records, rewards, labels, n_top),
                                     run.records, mu, sizes)
            on_best = np.array([int((labels[r.rows] == best).sum()) for r in run.records
                                if len(r.rows)], dtype=np.int64)
            tab["best_arm_share"] = np.cumsum(on_best) / np.maximum(tab["budget_used"], 1)
            tab = tab.rename(columns={"recall_so_far": "recall"})
            start = pd.DataFrame([{"round": -1, "kind": "start", "rows": 0, "budget_used": 0,
                                   "recall": 0.0, "cum_regret": 0.0, "regret_vs_oracle": 0.0,
                                   "best_arm_share": 0.0, "regret": 0.0}])
            tab = pd.concat([start, tab], ignore_index=True)
            tab.insert(0, "seed", int(seed))
            tab.insert(0, "contestant", c.name)
            tab.insert(2, "policy", c.policy)
            tab["budget_share"] = tab["budget_used"] / n
            curve_rows.append(tab)
            for rec in run.records:
                if not len(rec.rows):
                    continue
                counts = np.bincount(labels[rec.rows], minlength=k)
                for cl in np.flatnonzero(counts):
                    draw_rows.append({"contestant": c.name, "seed": int(seed),
                                      "round": rec.round, "cluster": int(cl),
                                      "draws": int(counts[cl])})
            sel = run.selected()
            finals.append({"contestant": c.name, "seed": int(seed),
                           "recall": float(np.isin(top, sel).sum() / max(len(top), 1)),
                           "mass_share": mass_share(sel, rewards, n_top),
                           "cum_regret": float(tab["cum_regret"].iloc[-1]),
                           "regret_vs_oracle": float(tab["regret_vs_oracle"].iloc[-1]),
                           "best_arm_share": float(tab["best_arm_share"].iloc[-1]),
                           "rounds": len(run.records), "budget_used": run.budget_used})
            done += 1
            if progress is not None:
                progress(done, total)

    curves = pd.concat(curve_rows, ignore_index=True)
    cols = ["contestant", "seed", "policy", "round", "kind", "arm", "rows", "budget_used",
            "budget_share", "recall", "cum_regret", "regret_vs_oracle", "regret",
            "best_arm_share", "arm_mean", "best_arm", "best_mean", "realised_regret"]
    curves = curves[[c for c in cols if c in curves.columns]]
    draws = pd.DataFrame(draw_rows, columns=["contestant", "seed", "round", "cluster", "draws"])
    per_seed = pd.DataFrame(finals)
    summary = (per_seed.groupby("contestant", sort=False)
               .agg(recall_mean=("recall", "mean"), recall_std=("recall", lambda s: s.std(ddof=0)),
                    recall_min=("recall", "min"), recall_max=("recall", "max"),
                    mass_share_mean=("mass_share", "mean"),
                    cum_regret_mean=("cum_regret", "mean"),
                    regret_vs_oracle_mean=("regret_vs_oracle", "mean"),
                    regret_vs_oracle_std=("regret_vs_oracle", lambda s: s.std(ddof=0)),
                    best_arm_share_mean=("best_arm_share", "mean"),
                    rounds_mean=("rounds", "mean"), budget_used=("budget_used", "max"),
                    seeds=("seed", "count"))
               .reset_index())
    policy_of = {c.name: c.policy for c in spec.contestants}
    summary.insert(1, "policy", summary["contestant"].map(policy_of))
    budget_total = selection.count_of(spec.budget, n)
    band = average_curves(curves, budget_total, n, spec.grid_points)
    return RaceResult(spec, n, n_top, k, best, mu, sizes, curves, band, draws, summary,
                      list(names) if names is not None else [str(i) for i in range(k)],
                      dict(source or {}))


def average_curves(curves: pd.DataFrame, budget_total: int, n_rows: int,
                   grid_points: int = 101, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Curves averaged over seeds on a grid of rows scored (0..budget_total)."""
    grid = np.unique(np.round(np.linspace(0, budget_total, int(grid_points))).astype(np.int64))
    out = []
    for name, g in curves.groupby("contestant", sort=False):
        for metric in metrics:
            mat = np.vstack([_step_at(s["budget_used"].to_numpy(), s[metric].to_numpy(
                dtype=np.float64), grid) for _, s in g.groupby("seed")])
            out.append(pd.DataFrame({
                "contestant": name, "metric": metric, "budget_used": grid,
                "budget_share": grid / n_rows, "mean": mat.mean(0), "std": mat.std(0),
                "lo": mat.min(0), "hi": mat.max(0), "n_seeds": mat.shape[0]}))
    return pd.concat(out, ignore_index=True)


def draw_matrix(draws: pd.DataFrame, contestant: str, k: int, n_seeds: int | None = None,
                max_cols: int = 120) -> tuple[np.ndarray, list[str]]:
    """[k, columns] mean rows drawn per cluster per round over seeds (a seed without that
    round counts 0). Column 0 is the cold start when there is one; more rounds than
    `max_cols` are grouped into equal bins (the column label says which rounds)."""
    d = draws[draws.contestant == contestant]
    if n_seeds is None:
        n_seeds = max(d["seed"].nunique(), 1)
    if d.empty:
        return np.zeros((k, 0)), []
    rounds = np.arange(int(d["round"].min()), int(d["round"].max()) + 1)
    n_r = len(rounds)
    width = max(1, math.ceil(n_r / max_cols))
    n_cols = math.ceil(n_r / width)
    mat = np.zeros((k, n_cols))
    col = (d["round"].to_numpy() - rounds[0]) // width
    np.add.at(mat, (d["cluster"].to_numpy(), col), d["draws"].to_numpy(dtype=np.float64))
    mat /= n_seeds
    labels = []
    for j in range(n_cols):
        lo, hi = rounds[0] + j * width, min(rounds[0] + (j + 1) * width - 1, rounds[-1])
        labels.append(("cold start" if lo == 0 else str(lo)) if lo == hi else f"{lo}–{hi}")
    return mat, labels


# --------------------------------------------------------------------------------------
# where the rewards come from


def workspace_source(ws: Any, clusters: str | None = None,
                     scores: str | Path | None = None) -> tuple[np.ndarray, np.ndarray,
                                                                list[str], dict[str, Any]]:
    """Labels, exhaustive scores and cluster names from a workspace.

    clusters: a clustering name (default: the workspace's chosen one, else the newest).
    scores: a .npy of one score per pool row (default: W/scores/exhaustive.npy, written by
    exhaustive scoring)."""

    names = [n for n in ws.list("clusters") if (ws.clusters(n) / "meta.json").exists()]
    if clusters is None:
        chosen = ws.meta().get("clusters")
        if chosen in names:
            clusters = chosen
        elif names:
            clusters = max(names, key=lambda n: (ws.clusters(n) / "meta.json").stat().st_mtime)
        else:
            raise FileNotFoundError(f"workspace {ws.root} has no clusters; run "
                                    "`clusterucb cluster` (or the Clusters page) first")
    cs = load_clusters(ws, clusters)
    path = Path(scores) if scores is not None else ws.scores()
    if not path.is_absolute() and scores is not None and not path.exists():
        path = ws.root / path
    if not path.exists():
        raise FileNotFoundError(f"no exhaustive scores at {path}: a race on a workspace needs "
                                "every row's score (exhaustive scoring on the Model & "
                                "Features page)")
    rewards = np.load(path).astype(np.float64).reshape(-1)
    labels = np.asarray(cs.labels, dtype=np.int64)
    if len(rewards) != len(labels):
        raise ValueError(f"{path} has {len(rewards)} scores but clustering {clusters!r} has "
                         f"{len(labels)} rows; they come from different pools")
    cn = cs.cluster_names()
    return labels, rewards, [cn.get(i, str(i)) for i in range(cs.k)], {
        "kind": "workspace", "workspace": str(ws.root), "clusters": clusters,
        "scores": str(path)}


def workspace_features(ws: Any, clusters: str) -> np.ndarray:
    """The features a clustering was made from, conditioned as it was (what a run's draw
    order reads)."""

    return cluster_rows(ws, load_clusters(ws, clusters))


def playground_source(pg: Any) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, Any]]:
    names = [f"arm {i}" + (" (gem)" if i == pg.gem else "") for i in range(pg.K)]
    return pg.labels, pg.rewards, names, {"kind": "playground", "playground": pg.spec.to_dict()}


# --------------------------------------------------------------------------------------
# output


def race_png(result: RaceResult, path: str | Path | None = None, dpi: int = 110) -> bytes:
    """The race as one PNG (matplotlib, no browser): recall vs budget and regret vs the
    oracle with bands (min-max over seeds), and one draws heat map per contestant. Returns the
    bytes; written atomically to `path` when given."""

    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    names = result.contestants
    n_c = len(names)
    n_hm_cols = min(n_c, 4)
    n_hm_rows = math.ceil(n_c / n_hm_cols)
    fig = Figure(figsize=(13, 4.2 + 2.6 * n_hm_rows), layout="constrained")
    gs = fig.add_gridspec(1 + n_hm_rows, 2 * n_hm_cols, height_ratios=[1.6] + [1] * n_hm_rows)
    ax_r = fig.add_subplot(gs[0, :n_hm_cols])
    ax_g = fig.add_subplot(gs[0, n_hm_cols:])
    cmap = matplotlib.colormaps["tab10"]
    b = result.band
    for i, name in enumerate(names):
        color = cmap(i % 10)
        for ax, metric in ((ax_r, "recall"), (ax_g, "regret_vs_oracle")):
            g = b[(b.contestant == name) & (b.metric == metric)]
            x = g["budget_share"].to_numpy() * 100
            ax.plot(x, g["mean"], color=color, lw=2, label=name, drawstyle="steps-post")
            if g["n_seeds"].iloc[0] > 1:
                ax.fill_between(x, g["lo"], g["hi"], color=color, alpha=0.15, step="post",
                                lw=0)
    xmax = result.spec.budget * 100
    share = np.linspace(0, result.spec.budget, 50)
    ax_r.plot(share * 100, share, color="grey", ls=":", lw=1.2,
              label="scoring random rows (expected)")
    ax_r.set(xlim=(0, xmax), ylim=(0, 1.02), xlabel="rows scored (% of the pool)",
             ylabel="recall of the true top-p",
             title=f"Recall of the true top-p vs budget ({len(result.spec.seeds)} seeds: "
                   "mean, band = min–max)")
    ax_g.set(xlim=(0, xmax), xlabel="rows scored (% of the pool)",
             ylabel="expected reward lost",
             title="Regret vs an oracle that knows the cluster means")
    ax_r.grid(alpha=0.3)
    ax_g.grid(alpha=0.3)
    handles, labels_ = ax_r.get_legend_handles_labels()
    fig.legend(handles, labels_, loc="outside upper center", ncols=min(len(labels_), 4),
               fontsize=8, frameon=False)
    vmax = 0.0
    mats = {}
    for name in names:
        mats[name] = draw_matrix(result.draws, name, result.k, len(result.spec.seeds))
        if mats[name][0].size:
            vmax = max(vmax, float(mats[name][0].max()))
    for i, name in enumerate(names):
        r, cidx = divmod(i, n_hm_cols)
        ax = fig.add_subplot(gs[1 + r, 2 * cidx:2 * cidx + 2])
        mat, labels = mats[name]
        im = ax.imshow(mat, aspect="auto", cmap="viridis", vmin=0, vmax=max(vmax, 1e-9),
                       interpolation="nearest", origin="lower")
        ax.set_title(f"{name}: draws per cluster", fontsize=9)
        ax.set_ylabel("cluster", fontsize=8)
        ax.set_xlabel("round (0 = cold start)", fontsize=8)
        if result.k <= 20:
            ax.set_yticks(range(result.k))
            ax.set_yticklabels([("★ " if j == result.best_arm else "") + str(j)
                                for j in range(result.k)], fontsize=7)
        ax.tick_params(labelsize=7)
        fig.colorbar(im, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
    fig.supxlabel(f"Policy race: {result.n_rows:,} rows, {result.k} clusters, budget "
                 f"{result.spec.budget:g}, top-p {result.spec.top_p:g}, cold start "
                 f"{result.spec.cold_start:g}, draw batch {result.spec.draw_batch} "
                 f"(★ = best cluster)", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    data = buf.getvalue()
    if path is not None:
        atomic.write_bytes(Path(path), data)
    return data


def write_race(result: RaceResult, out: str | Path, png: bool = True) -> dict[str, Path]:
    """curves.csv, band.csv, draws.csv, summary.csv, race.png and race.json (the settings)
    into `out` (each written atomically). Returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("curves", "band", "draws", "summary"):
        p = out / f"{name}.csv"
        atomic.write_text(p, getattr(result, name).to_csv(index=False))
        paths[name] = p
    p = out / "race.json"
    atomic.write_json(p, {"race": result.spec.to_dict(), "source": result.source,
                          "n_rows": result.n_rows, "n_top": result.n_top, "k": result.k,
                          "best_cluster": result.best_arm,
                          "cluster_means": [None if not np.isfinite(m) else float(m)
                                            for m in result.cluster_mean],
                          "cluster_sizes": [int(s) for s in result.sizes]})
    paths["settings"] = p
    if png:
        p = out / "race.png"
        race_png(result, p)
        paths["png"] = p
    return paths


# --------------------------------------------------------------------------------------
# comparing two saved selection runs


@dataclass
class RunView:
    """A saved run replayed from its log: settings, scores, the selection."""

    run_id: str
    spec: SelectionSpec
    header: dict[str, Any]
    labels: np.ndarray
    scores: np.ndarray  # NaN where not scored
    round_drawn: np.ndarray
    selected: np.ndarray  # best first
    n_rounds: int
    budget_used: int

    @property
    def meta(self) -> runlog.RunMeta:
        return runlog.RunMeta.from_dict(self.header.get("meta"))

    @property
    def clustering(self) -> str | None:
        return self.meta.clustering


def load_run(ws: Any, run_id: str, labels: np.ndarray | None = None,
             apply_ledger: bool = True) -> RunView:
    """Replay a saved run (no scoring). labels: default the run's clustering (header meta).
    apply_ledger: the selection with the workspace's current pins/rejections/bans (what an
    export gives now); False: the plain top-p of the scored rows."""

    run = open_run(ws, run_id, labels=labels, ledger=apply_ledger)
    return RunView(run_id, run.spec, run.header, run.labels, run.scores.copy(),
                   run.round_drawn.copy(), run.selected(), len(run.records), run.budget_used)


@dataclass
class Comparison:
    a: RunView
    b: RunView
    overlap: dict[str, Any]
    settings: pd.DataFrame  # setting, a, b, changed
    rows: pd.DataFrame  # one row per pool row selected by a or b
    clusters: pd.DataFrame  # cluster, a, b, both
    sources: pd.DataFrame | None  # source, a, b, both
    scores: pd.DataFrame  # run, set (selected|scored), row, score (long, for distributions)
    same_clusters: bool

    def to_csv(self) -> str:
        return self.rows.to_csv(index=False)


def compare_runs(ws: Any, run_a: str, run_b: str, sources: Sequence[str] | None = None,
                 apply_ledger: bool = True) -> Comparison:
    """Compare the selections of two saved runs of a workspace.

    sources: the pool's source per row (for per-source counts), optional. Per-cluster
    counts use run A's clustering for both runs (`same_clusters` says whether B used the
    same one)."""
    a = load_run(ws, run_a, apply_ledger=apply_ledger)
    b = load_run(ws, run_b, apply_ledger=apply_ledger)
    if len(a.labels) != len(b.labels):
        raise ValueError(f"runs {run_a} and {run_b} were made on pools of different sizes "
                         f"({len(a.labels)} vs {len(b.labels)} rows)")
    same = a.clustering == b.clustering and np.array_equal(a.labels, b.labels)
    sa, sb = set(a.selected.tolist()), set(b.selected.tolist())
    both = sa & sb
    union = sa | sb
    overlap = {"a": len(sa), "b": len(sb), "both": len(both), "only_a": len(sa - sb),
               "only_b": len(sb - sa),
               "jaccard": len(both) / len(union) if union else float("nan"),
               "scored_a": int((a.round_drawn >= 0).sum()),
               "scored_b": int((b.round_drawn >= 0).sum()),
               "scored_both": int(((a.round_drawn >= 0) & (b.round_drawn >= 0)).sum())}

    keys = ["policy", "beta", "cold_start", "budget", "top_p", "draw_batch", "seed", "quantile"]
    da, db = dataclasses.asdict(a.spec), dataclasses.asdict(b.spec)
    settings = pd.DataFrame({"setting": keys + ["clustering", "reward", "rounds", "rows scored"],
                             "a": [da[k] for k in keys] + [a.clustering, a.meta.reward, a.n_rounds,
                                                           a.budget_used],
                             "b": [db[k] for k in keys] + [b.clustering, b.meta.reward, b.n_rounds,
                                                           b.budget_used]})
    settings["changed"] = [str(x) != str(y) for x, y in zip(settings["a"], settings["b"])]
    settings["a"] = settings["a"].astype(str)
    settings["b"] = settings["b"].astype(str)

    rank_a = {int(r): i + 1 for i, r in enumerate(a.selected)}
    rank_b = {int(r): i + 1 for i, r in enumerate(b.selected)}
    rows = np.array(sorted(union), dtype=np.int64)
    src = None if sources is None else np.asarray(list(sources), dtype=object)
    table = pd.DataFrame({
        "row": rows,
        "cluster": a.labels[rows] if len(rows) else np.zeros(0, np.int64),
        "in_a": [int(r) in sa for r in rows], "in_b": [int(r) in sb for r in rows],
        "rank_a": pd.array([rank_a.get(int(r)) for r in rows], dtype="Int64"),
        "rank_b": pd.array([rank_b.get(int(r)) for r in rows], dtype="Int64"),
        "score_a": a.scores[rows], "score_b": b.scores[rows],
        "round_a": pd.array([int(x) if x >= 0 else None for x in a.round_drawn[rows]],
                            dtype="Int64"),
        "round_b": pd.array([int(x) if x >= 0 else None for x in b.round_drawn[rows]],
                            dtype="Int64"),
    })
    if not same:
        table.insert(2, "cluster_b", b.labels[rows])
    if src is not None:
        if len(src) != len(a.labels):
            raise ValueError(f"sources has {len(src)} entries for {len(a.labels)} rows")
        table.insert(2, "source", src[rows])
    table["where"] = np.where(table["in_a"] & table["in_b"], "both",
                              np.where(table["in_a"], "only A", "only B"))

    k = int(max(a.labels.max(), 0)) + 1
    sel_a = np.array(sorted(sa), dtype=np.int64)
    sel_b = np.array(sorted(sb), dtype=np.int64)
    sel_both = np.array(sorted(both), dtype=np.int64)

    def _count(sel: np.ndarray) -> np.ndarray:
        lab = a.labels[sel]
        return np.bincount(lab[lab >= 0], minlength=k)

    clusters = pd.DataFrame({"cluster": np.arange(k), "a": _count(sel_a), "b": _count(sel_b),
                             "both": _count(sel_both)})
    clusters["change"] = clusters["b"] - clusters["a"]
    src_df = None
    if src is not None:
        vals = sorted({str(s) for s in src[rows]}) if len(rows) else []
        src_df = pd.DataFrame({"source": vals,
                               "a": [int(sum(str(src[r]) == v for r in sel_a)) for v in vals],
                               "b": [int(sum(str(src[r]) == v for r in sel_b)) for v in vals],
                               "both": [int(sum(str(src[r]) == v for r in sel_both))
                                        for v in vals]})
        src_df["change"] = src_df["b"] - src_df["a"]
    parts = []
    for label, view in (("A", a), ("B", b)):
        scored = np.flatnonzero(np.isfinite(view.scores))
        parts.append(pd.DataFrame({"run": label, "set": "scored", "row": scored,
                                   "score": view.scores[scored]}))
        sel = view.selected[np.isfinite(view.scores[view.selected])]
        parts.append(pd.DataFrame({"run": label, "set": "selected", "row": sel,
                                   "score": view.scores[sel]}))
    scores = pd.concat(parts, ignore_index=True)
    return Comparison(a, b, overlap, settings, table, clusters, src_df, scores, same)
