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

    python bench/bench_selection.py [--quick] [--workspace W]

Last line: recall_ucb_at_20=<r> recall_random_at_20=<r> ratio=<r> e2e_speedup_vs_exhaustive=<s>
(the end-to-end speed-up needs the gradient pipeline and is `na` in this part).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clusterucb_core.bandit import POLICIES, SelectionRun, count_of  # noqa: E402
from clusterucb_core.config import SelectionSpec  # noqa: E402
from clusterucb_core.oracle import TableOracle, exhaustive_top, recall  # noqa: E402

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
    from clusterucb_core.clustering import load_clusters
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
    args = ap.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 5)
    n = args.n or (3000 if args.quick else 20000)

    import pandas as pd

    if args.workspace:
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
    print(f"recall_ucb_at_20={ucb:.3f} recall_random_at_20={rnd:.3f} ratio={ratio:.2f} "
          f"e2e_speedup_vs_exhaustive=na")
    return 0


if __name__ == "__main__":
    sys.exit(main())
