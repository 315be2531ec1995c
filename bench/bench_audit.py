"""How well does the audit meter (selection/audit.py) guess a run's recall of the exhaustive
top-p? Over seeded runs with the shipped selection settings on pools whose exhaustive scores
are known: the bundled demo (its workspace's clusters and features), the Flan pool + MMLU
(when bench_fidelity.py has cached its exhaustive scores) and two synthetic pools, each run's
true recall against the meter's estimate and 90% interval.

    python bench/bench_audit.py [--seeds 20] [--pools demo,flan_mmlu,syn0,syn1]

Last line: audit_coverage=<share of runs whose interval holds the true recall>
audit_median_err=<median |estimate - truth|> (bench_fidelity.py --audit appends the same).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clusterucb_core.config import DEMO_DIR, RunConfig  # noqa: E402
from clusterucb_core.selection.audit import audit_run  # noqa: E402
from clusterucb_core.selection.oracle import TableOracle, mass_share, recall  # noqa: E402
from clusterucb_core.selection.run import SelectionRun  # noqa: E402


def workspace_pool(root: Path):
    """(labels, conditioned cluster features, exhaustive scores) of a workspace's clustering."""
    from clusterucb_core.clustering.clusterset import cluster_rows, load_clusters
    from clusterucb_core.workspace import Workspace

    ws = Workspace.open(root, create=False)
    name = sorted(ws.list("clusters"))[0]
    cs = load_clusters(ws, name)
    scores = np.load(root / "scores" / "exhaustive.npy").astype(np.float64)
    return np.asarray(cs.labels), cluster_rows(ws, cs), scores


def synthetic(seed: int):
    """bench_fidelity's synthetic pool, centred and clustered with the size8 rule."""
    from synthetic_pools import synthetic_pool

    from clusterucb_core.clustering.kmeans import cluster_features
    from clusterucb_core.clustering.krule import choose_k

    X, scores, _ = synthetic_pool(seed)
    F = X - X.mean(axis=0)
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    k, _ = choose_k("size8", n_rows=len(F), cold_start=RunConfig().selection.cold_start)
    return np.asarray(cluster_features(F, k, seed=0, n_init=1).labels), F, scores


def load(name: str):
    if name == "demo":
        return workspace_pool(DEMO_DIR / "demo_workspace")
    if name == "flan_mmlu":
        root = ROOT / "bench" / ".cache" / "fidelity" / "flan_mmlu"
        return workspace_pool(root) if (root / "scores" / "exhaustive.npy").exists() else None
    return synthetic(int(name[3:]))


def audit_rows(name: str, seeds: int, log=print) -> list[dict]:
    """One row per seeded run: true recall and mass share, the meter's estimates."""
    got = load(name)
    if got is None:
        log(f"{name}: no cached exhaustive scores (run bench_fidelity.py once); skipped")
        return []
    labels, F, scores = got
    labels = labels.copy()
    labels[~np.isfinite(scores)] = -1
    out = []
    for seed in range(seeds):
        spec = replace(RunConfig().selection, seed=seed)
        run = SelectionRun(labels, TableOracle(scores), spec,
                           features=F if spec.needs_features else None)
        run.run_to_end()
        sel = run.selected()
        a = audit_run(run)
        out.append({"pool": name, "seed": seed, "recall": recall(sel, scores, run.n_top),
                    "est": a.recall.value, "low": a.recall.low, "high": a.recall.high,
                    "mass": mass_share(sel, scores, run.n_top), "mass_est": a.mass_share.value,
                    "mass_low": a.mass_share.low, "mass_high": a.mass_share.high})
        r = out[-1]
        log(f"  {name} seed {seed}: recall {r['recall']:.3f}, estimated {a.recall.text()}")
    return out


def summarize(rows: list[dict]) -> tuple[float, float]:
    """(coverage of the recall interval, median absolute error of the recall estimate)."""
    if not rows:
        return float("nan"), float("nan")
    cover = [r["low"] <= r["recall"] <= r["high"] for r in rows]
    return float(np.mean(cover)), float(np.median([abs(r["est"] - r["recall"]) for r in rows]))


def audit_line(pools: list[str], seeds: int, log=print) -> str:
    """Run the audit bench and return 'audit_coverage=<c> audit_median_err=<e>', after a
    per-pool table."""
    import pandas as pd

    rows = [r for p in pools for r in audit_rows(p, seeds, log)]
    df = pd.DataFrame(rows)
    if len(df):
        for pool, g in df.groupby("pool", sort=False):
            c, e = summarize(g.to_dict("records"))
            mc = float(np.mean((g["mass_low"] <= g["mass"]) & (g["mass"] <= g["mass_high"])))
            me = float(np.median(np.abs(g["mass_est"] - g["mass"])))
            log(f"{pool}: {len(g)} runs, recall {g['recall'].mean():.3f} (estimated "
                f"{g['est'].mean():.3f}); interval coverage {c:.2f}, median error {e:.3f}; "
                f"mass share coverage {mc:.2f}, median error {me:.3f}")
    c, e = summarize(rows)
    return f"audit_coverage={c:.2f} audit_median_err={e:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--pools", default="demo,flan_mmlu,syn0,syn1")
    ap.add_argument("--quick", action="store_true",
                    help="3 seeds on the two synthetic pools (checks the bench runs)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.pools = 3, "syn0,syn1"
    print(audit_line([p.strip() for p in args.pools.split(",") if p.strip()], args.seeds))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "bench"))
    sys.exit(main())
