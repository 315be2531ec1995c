"""How much of the exhaustive top-5% does each policy find, for a given gradient budget?

For budgets 10/20/30/50% of the pool, cold start 0% and 5%, top-p 5%, over several seeds:
recall of the exhaustive top-p by every arm policy (ucb_beta is ClusterUCB) and by the
random-budget baseline (score a random `budget` fraction of the pool, keep its top-p), all
measured side by side in one run on the same reward table.

Reward tables:
* default: synthetic clustered scores (cluster sizes from a Dirichlet, cluster means and
  within-cluster noise Gaussian; printed with the table);
* `--workspace W [--clusters NAME]`: the workspace's exhaustive scores
  (W/scores/exhaustive.npy) with its clustering (rows labelled -1 are never drawn).

* `--e2e`: the product's headline, on a real pool with the real model (default: the bundled
  demo pool, target and model; `--pool/--target` for others, e.g. the Flan pool with MMLU):
  the whole ClusterUCB path at 20% budget (forward-only cluster features for every row,
  k-means, target gradients, the bandit's lazy gradients) against exhaustive LESS scoring
  (a gradient for every row, then the top-p), timed in the same run from the same warm-up
  checkpoint (trained once, not counted in either). The recall table is then computed on
  those exhaustive scores and that clustering.

    python bench/bench_selection.py [--quick] [--workspace W] [--e2e [--pool P --target T]]

With --e2e a table gives each path's seconds per stage (model loads, cluster features,
k-means, target gradients, lazy or exhaustive gradients, reward-model refits, the rest of the
bandit, export); every figure is timed, none estimated.

Last line: recall_ucb_at_20=<r> recall_random_at_20=<r> ratio=<r> e2e_speedup_vs_exhaustive=<s>
recall_e2e=<r> lazy_row_cost_ratio=<x> planner_error=<e> (`na` without --e2e; the cost ratio
is the lazy gradients' seconds a row over the exhaustive pass's, same run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clusterucb_core.config import SelectionSpec  # noqa: E402
from clusterucb_core.selection.oracle import TableOracle, exhaustive_top, recall  # noqa: E402
from clusterucb_core.selection.policies import POLICIES  # noqa: E402
from clusterucb_core.selection.run import SelectionRun, count_of  # noqa: E402

BUDGETS = (0.1, 0.2, 0.3, 0.5)
COLDS = (0.0, 0.05)
TOP_P = 0.05


def synthetic(n: int, k: int, seed: int, between: float = 0.03, within: float = 0.02,
              ) -> tuple[np.ndarray, np.ndarray, str]:
    """Clustered influence-like scores: cluster means N(0, between), rows N(mean, within)."""
    rng = np.random.default_rng(seed)
    sizes = np.maximum(1, np.round(rng.dirichlet(np.full(k, 2.0)) * n)).astype(int)
    sizes[-1] = max(1, n - sizes[:-1].sum())
    labels = np.repeat(np.arange(k), sizes)[:n]
    rng.shuffle(labels)
    means = rng.normal(0.0, between, k)
    scores = means[labels] + rng.normal(0.0, within, len(labels))
    desc = (f"synthetic: N={len(labels)}, K={k}, cluster means N(0, {between}), "
            f"rows N(mean, {within}), sizes {sizes.min()}..{sizes.max()}")
    return labels, scores, desc


def from_workspace(root: str, clusters: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    from clusterucb_core.clustering.clusterset import load_clusters
    from clusterucb_core.workspace import Workspace

    ws = Workspace.open(root, create=False)
    names = ws.list("clusters")
    name = clusters or ws.meta().get("clusters") or (names[-1] if names else None)
    if not name:
        raise SystemExit(f"no clusters in {root}")
    cs = load_clusters(ws, name)
    scores = np.load(ws.root / "scores" / "exhaustive.npy").astype(np.float64)
    if len(scores) != len(cs.labels):
        raise SystemExit("exhaustive scores and clusters cover different pools")
    return cs.labels, scores, f"workspace {ws.root} clusters {name}: N={len(scores)}, K={cs.k}"


class Stages:
    """Seconds per stage of one path (the e2e table), summed over calls; a stage timed inside
    another (a model load inside the cluster features) counts only in the inner one."""

    def __init__(self) -> None:
        self.s: dict[str, float] = {}
        self._stack: list[list] = []  # [name, seconds of the stages inside it]

    def time(self, name: str, fn, *args, **kw):
        if any(frame[0] == name for frame in self._stack):
            return fn(*args, **kw)
        self._stack.append([name, 0.0])
        t0 = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            took = time.perf_counter() - t0
            _, inner = self._stack.pop()
            self.s[name] = self.s.get(name, 0.0) + took - inner
            if self._stack:
                self._stack[-1][1] += took

    def wrap(self, name: str, fn):
        return lambda *a, **kw: self.time(name, fn, *a, **kw)


STAGES = ("model loads", "cluster features", "k-means", "target gradients", "lazy gradients",
          "exhaustive gradients", "reward-model refits", "bandit (rest)", "export")


def stage_table(ucb: dict[str, float], exh: dict[str, float]) -> str:
    lines = [f"{'stage':<22}{'ClusterUCB s':>14}{'exhaustive s':>14}"]
    for name in STAGES + ("total",):
        cells = [f"{d[name]:14.2f}" if name in d else f"{'-':>14}" for d in (ucb, exh)]
        lines.append(f"{name:<22}{cells[0]}{cells[1]}")
    return "\n".join(lines)


def end_to_end(pool: str | None, target: str | None, limit: int | None, workdir: Path,
               repeats: int = 2, arms_per_round: int = 1) -> dict:
    """Time ClusterUCB at 20% budget against exhaustive LESS on the same inputs, stage by
    stage (Stages); returns the clustering, the exhaustive scores, a description, the
    speed-up, the run's recall and the lazy / exhaustive gradient cost per row."""
    import shutil
    from dataclasses import replace

    from clusterucb_core.cli.demo import DEMO_CONFIG
    from clusterucb_core.config import load_config
    from clusterucb_core.features import engine as E
    from clusterucb_core.pipeline import Pipeline
    from clusterucb_core.selection.surrogate import RewardModel

    cfg = load_config(DEMO_CONFIG)
    cfg = replace(cfg, pool=pool or cfg.pool, target=target or cfg.target, make_map=False,
                  selection=replace(cfg.selection, budget=0.2, top_p=TOP_P,
                                    arms_per_round=arms_per_round))
    workdir.mkdir(parents=True, exist_ok=True)
    if limit:  # --quick: the first `limit` lines of the pool
        small = workdir / "pool.jsonl"
        with open(cfg.pool, "rb") as src, open(small, "wb") as dst:
            for i, line in enumerate(src):
                if i >= limit:
                    break
                dst.write(line)
        cfg = replace(cfg, pool=str(small))
    first = Pipeline(replace(cfg, workspace=str(workdir / "ucb0"), run_id="ucb20"), log=None)
    print(f"e2e: warm-up on {cfg.warmup.fraction:.0%} of {cfg.pool} (shared, not timed)")
    warm_dir = first.checkpoints[0].parent
    _ = first.pool, first.target, first.format_report  # parsing: shared, not timed

    def fresh(name: str, run_id: str = "ucb20") -> Pipeline:
        """A new workspace holding only the shared warm-up: nothing else is cached."""
        pipe = Pipeline(replace(cfg, workspace=str(workdir / name), run_id=run_id), log=None)
        if not pipe.warmup_dir.exists():
            shutil.copytree(warm_dir, pipe.warmup_dir)
        _ = pipe.pool, pipe.target, pipe.format_report
        return pipe

    real_init, real_fit = E.FeatureEngine.__init__, RewardModel.fit

    def instrument(st: Stages, pipe: Pipeline, gradients: str) -> None:
        E.FeatureEngine.__init__ = lambda self, *a, **kw: st.time(  # type: ignore[method-assign]
            "model loads", real_init, self, *a, **kw)
        RewardModel.fit = lambda self: st.time(  # type: ignore[method-assign]
            "reward-model refits", real_fit, self)
        pipe.compute_reward_rows = st.wrap(gradients, pipe.compute_reward_rows)

    def timed_ucb(pipe: Pipeline) -> dict[str, float]:
        st = Stages()
        instrument(st, pipe, "lazy gradients")
        t0 = time.perf_counter()
        try:
            st.time("cluster features", lambda: pipe.cluster_store)
            st.time("k-means", lambda: pipe.clusters)
            st.time("model loads", lambda: pipe.reward_engines)
            st.time("target gradients", lambda: pipe.target_features)
            run = pipe.selection("ucb20")
            run.run_to_end()
            st.time("export", pipe.export, run, "ucb20")
        finally:
            E.FeatureEngine.__init__, RewardModel.fit = real_init, real_fit
        st.s["total"] = time.perf_counter() - t0
        st.s["bandit (rest)"] = st.s["total"] - sum(v for k, v in st.s.items() if k != "total")
        st.s["lazy_rows"] = pipe.work["reward_gradient_rows"]
        return st.s

    def timed_exhaustive(pipe: Pipeline) -> tuple[dict[str, float], np.ndarray]:
        st = Stages()
        instrument(st, pipe, "exhaustive gradients")
        t0 = time.perf_counter()
        try:
            st.time("model loads", lambda: pipe.reward_engines)
            st.time("target gradients", lambda: pipe.target_features)
            scores = pipe.exhaustive_scores()  # a gradient for every row
            exhaustive_top(scores, count_of(TOP_P, len(scores)))
        finally:
            E.FeatureEngine.__init__, RewardModel.fit = real_init, real_fit
        st.s["total"] = time.perf_counter() - t0
        return st.s, scores

    # Alternate the two paths and keep each one's best of `repeats`: a shared machine's load
    # drifts, and a single pair of timings can be off by 2x either way.
    t_ucb, t_exh = [], []
    for i in range(repeats):
        ucb = first if i == 0 else fresh(f"ucb{i}")
        t_ucb.append(timed_ucb(ucb))
        took, scores = timed_exhaustive(fresh(f"exhaustive{i}"))
        t_exh.append(took)
    n = len(scores)
    best_u = min(t_ucb, key=lambda d: d["total"])
    best_e = min(t_exh, key=lambda d: d["total"])
    run = ucb.selection("ucb20")
    r = recall(run.selected(), scores, run.n_top)
    speedup = best_e["total"] / best_u["total"]
    lazy_ms = best_u["lazy gradients"] * 1e3 / max(best_u["lazy_rows"], 1)
    exh_ms = best_e["exhaustive gradients"] * 1e3 / n
    print(stage_table(best_u, best_e))
    all_u = ", ".join(f"{t['total']:.1f}" for t in t_ucb)
    all_e = ", ".join(f"{t['total']:.1f}" for t in t_exh)
    print(f"e2e on N={n}, best of {repeats} alternated runs: ClusterUCB {best_u['total']:.1f} s "
          f"({ucb.work['reward_gradient_rows']} gradients + {ucb.work['cluster_feature_rows']} "
          f"forward-only rows; all runs {all_u}), exhaustive LESS {best_e['total']:.1f} s "
          f"({n} gradients; all runs {all_e}); recall of the exhaustive top-p "
          f"{r:.3f}; speed-up {speedup:.2f}x (timed), gradients "
          f"{n / max(ucb.work['reward_gradient_rows'], 1):.2f}x fewer; lazy gradients "
          f"{lazy_ms:.1f} ms a row, exhaustive {exh_ms:.1f} ms a row; arms per round "
          f"{arms_per_round}")
    meta = ucb.clusters.meta
    print(f"e2e defaults: cluster features: {(meta.get('feature_cost') or {}).get('what')}; "
          f"conditioning {meta.get('condition', 'none')}; {meta.get('k_reason')}")
    desc = f"e2e workspace {ucb.ws.root}: N={n}, K={ucb.clusters.k} ({ucb.clusters.name})"
    return {"labels": ucb.clusters.labels, "scores": scores.astype(np.float64), "desc": desc,
            "speedup": speedup, "recall": r, "lazy_row_cost_ratio": lazy_ms / exh_ms}


def random_budget(scores: np.ndarray, labels: np.ndarray, budget: float, seed: int) -> float:
    """Score a random `budget` fraction of the (clustered) rows, keep their top-p."""
    n = len(scores)
    rng = np.random.default_rng([seed, 7])
    pool = np.flatnonzero(labels >= 0)
    rows = rng.choice(pool, size=min(count_of(budget, n), len(pool)), replace=False)
    n_top = count_of(TOP_P, n)
    sub = np.full(n, np.nan)
    sub[rows] = scores[rows]
    return recall(exhaustive_top(sub, n_top), scores, n_top)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small pool, 2 seeds")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--n", type=int, default=None, help="synthetic pool size")
    ap.add_argument("--k", type=int, default=30, help="synthetic clusters")
    ap.add_argument("--draw-batch", type=int, default=8)
    ap.add_argument("--workspace", help="use this workspace's exhaustive scores")
    ap.add_argument("--clusters", help="clustering name in the workspace")
    ap.add_argument("--e2e", action="store_true",
                    help="time the whole ClusterUCB path against exhaustive LESS")
    ap.add_argument("--pool", help="--e2e pool (default: the bundled demo pool)")
    ap.add_argument("--target", help="--e2e target (default: the demo's arithmetic target)")
    ap.add_argument("--arms-per-round", type=int, default=1,
                    help="--e2e: arms a bandit round plays (SelectionSpec.arms_per_round)")
    ap.add_argument("--workdir", help="--e2e folder for the two workspaces (default: temporary)")
    args = ap.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 5)
    n = args.n or (3000 if args.quick else 20000)

    import pandas as pd

    speedup = None
    if args.e2e:
        import tempfile

        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_selection_"))
        e2e_out = end_to_end(args.pool, args.target, 600 if args.quick else None, workdir,
                             repeats=1 if args.quick else 2,
                             arms_per_round=args.arms_per_round)
        labels, scores, desc = e2e_out["labels"], e2e_out["scores"], e2e_out["desc"]
        speedup = e2e_out["speedup"]
        tables = [(labels, scores)] * seeds
    elif args.workspace:
        labels, scores, desc = from_workspace(args.workspace, args.clusters)
        tables = [(labels, scores)] * seeds
    else:
        tables = [synthetic(n, args.k, 1000 + s)[:2] for s in range(seeds)]
        desc = synthetic(n, args.k, 1000)[2] + f"; a new table per seed ({seeds} seeds)"
    print(desc)
    print(f"top-p {TOP_P}, draw batch {args.draw_batch}; recall of the exhaustive top-p "
          f"(mean ± std over {seeds} seeds)")

    rows = []
    t0 = time.perf_counter()
    for s, (labels, scores) in enumerate(tables):
        oracle = TableOracle(scores)
        for b in BUDGETS:
            rows.append({"method": "random_budget", "budget": b, "cold": "-", "seed": s,
                         "recall": random_budget(scores, labels, b, s)})
            for c in COLDS:
                for pol in POLICIES:
                    spec = SelectionSpec(policy=pol, cold_start=c, budget=b, top_p=TOP_P,
                                         draw_batch=args.draw_batch, seed=s)
                    run = SelectionRun(labels, oracle, spec)
                    run.run_to_end()
                    rows.append({"method": pol, "budget": b, "cold": f"{c:g}", "seed": s,
                                 "recall": recall(run.selected(), scores, run.n_top)})
    elapsed = time.perf_counter() - t0
    df = pd.DataFrame(rows)
    agg = df.groupby(["method", "cold", "budget"])["recall"].agg(["mean", "std"]).reset_index()
    agg["cell"] = [f"{m:.3f}±{0 if np.isnan(sd) else sd:.3f}" for m, sd in
                   zip(agg["mean"], agg["std"])]
    table = agg.pivot(index=["method", "cold"], columns="budget", values="cell")
    order = [(p, f"{c:g}") for p in POLICIES for c in COLDS] + [("random_budget", "-")]
    table = table.reindex(order)
    table.columns = [f"b={b:g}" for b in table.columns]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string())
    print(f"({len(df)} selections in {elapsed:.1f} s)")

    def cell(method: str, cold: str, b: float) -> float:
        m = agg[(agg["method"] == method) & (agg["cold"] == cold) & (agg["budget"] == b)]
        return float(m["mean"].iloc[0])

    ucb = cell("ucb_beta", "0.05", 0.2)
    rnd = cell("random_budget", "-", 0.2)
    ratio = ucb / rnd if rnd > 0 else float("inf")
    e2e = "na" if speedup is None else f"{speedup:.2f}"
    rec = "na" if speedup is None else f"{e2e_out['recall']:.3f}"
    cost = "na" if speedup is None else f"{e2e_out['lazy_row_cost_ratio']:.2f}"
    print(f"recall_ucb_at_20={ucb:.3f} recall_random_at_20={rnd:.3f} ratio={ratio:.2f} "
          f"e2e_speedup_vs_exhaustive={e2e} recall_e2e={rec} lazy_row_cost_ratio={cost} "
          "planner_error=na")  # no cost planner (features/cost.py) on main yet
    return 0


if __name__ == "__main__":
    sys.exit(main())
