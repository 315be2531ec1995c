"""Does splitting hot arms (`SelectionSpec.split_hot`) buy recall? A replay on cached scores.

For each pool (the demo pool + arithmetic target, the real Flan pool + MMLU target), its cached
exhaustive scores and cached cluster features (bench_fidelity.py writes both), and 5 seeds:
the features conditioned (conditioning.py), spherical k-means at a fixed K (seeded), then the
bandit replayed on the exhaustive scores (TableOracle) with split_hot off and at a few
settings, the features passed for the split. Reported: recall of the exhaustive top-p and
mass share (score mass of the selection / of the exhaustive top-p), mean and std over seeds,
and the mean number of splits a run made. Numpy and the CPU only; the cache is only read.

    python bench/replay_split.py [--cache DIR] [--seeds 5] [--budget 0.2] [--splits 0,4,8,16]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clusterucb_core import conditioning  # noqa: E402
from clusterucb_core.config import SelectionSpec  # noqa: E402
from clusterucb_core.kmeans import cluster_features  # noqa: E402
from clusterucb_core.oracle import TableOracle, mass_share, recall  # noqa: E402
from clusterucb_core.selection import SelectionRun  # noqa: E402

CACHE = Path(__file__).resolve().parents[2] / "s12sel" / "bench" / ".cache" / "fidelity"
# pool folder -> (K, feature files under candidates/)
POOLS = {"demo": (21, ("hidden_L1_mean", "hidden_L1_answer")),
         "flan_mmlu": (11, ("hidden_L1_mean", "hidden_L4_answer"))}
TOP_P = 0.05


def labels_for(Y: np.ndarray, k: int, seed: int, scores: np.ndarray) -> np.ndarray:
    labels = np.asarray(cluster_features(Y, k, seed=seed, n_init=1, device="cpu").labels,
                        dtype=np.int64).copy()
    labels[~np.isfinite(scores)] = -1  # unscorable rows are never drawn
    return labels


def replay(labels, scores, Y, spec: SelectionSpec) -> tuple[float, float, int]:
    run = SelectionRun(labels, TableOracle(scores), spec,
                       features=Y if spec.split_hot else None)
    run.run_to_end()
    sel = run.selected()
    return (recall(sel, scores, run.n_top), mass_share(sel, scores, run.n_top),
            int((run.arm_parent >= 0).sum() // 2))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=float, default=0.2)
    ap.add_argument("--splits", default="0,4,8,16",
                    help="split_hot settings (0 = off); the first is the paired baseline")
    ap.add_argument("--cond", default="none", help="none (the default) | center | whiten")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # the k-means is small; threads only contend on a shared CPU
    settings = [int(x) for x in args.splits.split(",")]  # the first is the paired baseline
    print(f"budget {args.budget:g}, top-p {TOP_P:g}, {args.seeds} seeds, conditioning "
          f"{args.cond}; recall / mass share: mean (std) over seeds")
    print(f"{'pool':10} {'features':17} {'K':>3} {'split_hot':>9} {'recall':>15} "
          f"{'mass share':>15} {'splits':>6} {'recall - off (paired)':>22}")
    for pool, (k, names) in POOLS.items():
        scores = np.load(args.cache / pool / "scores" / "exhaustive.npy")
        for name in names:
            X = np.load(args.cache / pool / "candidates" / f"{name}.npy")
            res: dict[int, list[tuple[float, float, int]]] = {m: [] for m in settings}
            for seed in range(args.seeds):
                Y = conditioning.fit(X, args.cond, seed=seed).transform(X)
                labels = labels_for(Y, k, seed, scores)
                base = SelectionSpec(budget=args.budget, top_p=TOP_P, seed=seed)
                for m in settings:
                    res[m].append(replay(labels, scores, Y, replace(base, split_hot=m)))
            off = np.array([v[0] for v in res[settings[0]]])
            for m in settings:
                r, s, n = (np.array(v, dtype=float) for v in zip(*res[m]))
                d = r - off
                print(f"{pool:10} {name:17} {k:3d} {m if m else 'off':>9} "
                      f"{r.mean():8.3f} ({r.std():.3f}) {s.mean():8.3f} ({s.std():.3f}) "
                      f"{n.mean():6.1f} {d.mean():+13.3f} ({d.std():.3f})", flush=True)


if __name__ == "__main__":
    main()
