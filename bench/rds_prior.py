"""Does what RDS+ knows help the bandit? (issue 22, item 2; README "Against RDS+")

Replays ClusterUCB with the shipped selection settings on exhaustive scores, as
bench_fidelity.py's `evaluate` does (same conditioning, K rule, k-means and bandit seeds),
with RDS+ fed in one of two ways:

* `featA`: the standardised RDS+ score appended, with weight A, to the features the reward
  model (surrogate.py) fits, so it can order each cluster's draws;
* `coldF`: a fraction F of each cluster's cold-start draws taken from its top rows by RDS+
  instead of its random order (the rest follow the random order).

Neither is a product option (neither helped enough, see the README), so the cold start is
changed here by reordering the run's per-cluster draw order before its first round.

    python bench/rds_prior.py FEATURES SCORES RDS [SEEDS] [VARIANTS]

FEATURES: the cluster-feature store folder (or a .npy), SCORES: exhaustive scores (.npy),
RDS: RDS+ scores (.npy, e.g. W/scores/rds.npy); VARIANTS: comma-separated, default
`base,feat0.3,feat1,feat3,cold0.5,cold1`. Env SEED0 starts the seeds later (to add seeds).
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_fidelity as B  # noqa: E402

from clusterucb_core.clustering.krule import choose_k  # noqa: E402
from clusterucb_core.config import RunConfig  # noqa: E402
from clusterucb_core.features.store import FeatureStore  # noqa: E402
from clusterucb_core.selection.oracle import TableOracle, mass_share, recall  # noqa: E402
from clusterucb_core.selection.rds import screen  # noqa: E402
from clusterucb_core.selection.run import SelectionRun, count_of, unit_rows  # noqa: E402


def replay(X, scores, z, k, variant: str, seed: int, budget: float) -> tuple[float, float]:
    d = RunConfig()
    Y = B.conditioned(X, d.clusters.condition, seed)
    labels = B.cluster_labels(Y, k, seed, scores)
    spec = replace(d.selection, budget=budget, top_p=B.TOP_P, seed=seed)
    F = unit_rows(Y)
    if variant.startswith("feat"):
        F = np.hstack([F, float(variant[4:]) * z[:, None]]).astype(np.float32)
    run = SelectionRun(labels, TableOracle(scores), spec, features=F)
    if variant.startswith("cold"):
        frac = float(variant[4:])
        for arm, order in enumerate(run._order):
            m = int(round(frac * max(count_of(spec.cold_start, len(order)), 1)))
            if m:
                prior = order[np.argsort(-z[order], kind="stable")[:m]]
                run._order[arm] = np.concatenate([prior, order[~np.isin(order, prior)]])
    run.run_to_end()
    sel = run.selected()
    return recall(sel, scores, run.n_top), mass_share(sel, scores, run.n_top)


def main(argv: list[str]) -> int:
    feats, scores_path, rds_path = argv[:3]
    seeds = int(argv[3]) if len(argv) > 3 else 3
    variants = (argv[4] if len(argv) > 4 else "base,feat0.3,feat1,feat3,cold0.5,cold1").split(",")
    X = np.load(feats) if feats.endswith(".npy") else FeatureStore.open(feats).read()
    scores = np.load(scores_path).astype(np.float64)
    rds = np.load(rds_path).astype(np.float64)
    n, ok = len(scores), np.isfinite(scores)
    z = np.nan_to_num((rds - np.nanmean(rds[ok])) / np.nanstd(rds[ok]))
    for b in (0.1, 0.2):
        sel = screen(np.where(ok, rds, np.nan), scores, count_of(b, n), count_of(B.TOP_P, n))
        print(f"RDS+ at the same budget {b}: recall {recall(sel, scores, len(sel)):.3f}")
    d = RunConfig()
    Y0 = B.conditioned(X, d.clusters.condition, 0)
    k, _ = choose_k(d.clusters.k_rule, n_rows=int(ok.sum()), cold_start=d.selection.cold_start,
                    X=Y0)
    first = int(os.environ.get("SEED0", 0))
    for v in variants:
        for b in (0.1, 0.2):
            res = [replay(X, scores, z, k, v, s, b) for s in range(first, seeds)]
            print(f"{v:8s} budget {b}: recall {np.mean([r for r, _ in res]):.3f} mass "
                  f"{np.mean([m for _, m in res]):.3f} (seeds: "
                  f"{' '.join(f'{r:.2f}' for r, _ in res)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
