"""Recall when a round plays the top-m arms (SelectionSpec.arms_per_round), m = 1, 2, 4, 8.

Replays ClusterUCB on a workspace's exhaustive scores (W/scores/exhaustive.npy) with its
clustering and cluster features, at the run defaults (ucb_beta, beta 1, cold start 5%, budget
20%, top-p 5%, draw batch 8), for the product's draw order (predicted) and the paper's
(random), over several seeds. m = 1 is the paper's one arm a round; a larger m is kept off by
default unless its recall stays within 0.02 of m = 1.

    python bench/bench_topm.py [--workspace W] [--seeds 5]

Default workspace: the bundled demo's. Last line: recall_m1=<r> recall_m2=<r> recall_m4=<r>
recall_m8=<r> (draw order predicted, mean over seeds).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clusterucb_core.config import DEMO_DIR, SelectionSpec  # noqa: E402
from clusterucb_core.selection.oracle import TableOracle, recall  # noqa: E402
from clusterucb_core.selection.run import SelectionRun  # noqa: E402

ARMS = (1, 2, 4, 8)


def load(root: str, clusters: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    from clusterucb_core.clustering.clusterset import cluster_rows, load_clusters
    from clusterucb_core.workspace import Workspace

    ws = Workspace.open(root, create=False)
    name = clusters or ws.meta().get("clusters") or ws.list("clusters")[-1]
    cs = load_clusters(ws, name)
    scores = np.load(ws.root / "scores" / "exhaustive.npy").astype(np.float64)
    desc = f"{ws.root} clusters {name}: N={len(scores)}, K={cs.k}"
    return cs.labels, scores, cluster_rows(ws, cs), desc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default=str(DEMO_DIR / "demo_workspace"))
    ap.add_argument("--clusters")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one seed (checks the bench runs)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds = 1
    labels, scores, feats, desc = load(args.workspace, args.clusters)
    print(desc)
    means = {}
    for order in ("predicted", "random"):
        for m in ARMS:
            got, rounds = [], []
            for seed in range(args.seeds):
                spec = SelectionSpec(arms_per_round=m, draw_order=order, seed=seed)
                run = SelectionRun(labels, TableOracle(scores), spec, features=feats)
                run.run_to_end()
                got.append(recall(run.selected(), scores, run.n_top))
                rounds.append(len(run.records))
            means[order, m] = float(np.mean(got))
            print(f"draw order {order:<9} m={m}: recall {np.mean(got):.3f} ± {np.std(got):.3f} "
                  f"over {args.seeds} seeds, {np.mean(rounds):.0f} rounds "
                  f"({m * 8} rows a bandit round)")
    print(" ".join(f"recall_m{m}={means['predicted', m]:.3f}" for m in ARMS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
