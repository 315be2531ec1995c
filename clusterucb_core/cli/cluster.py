"""`clusterucb cluster`: spherical k-means over a feature store into W/clusters/<name>/ (labels,
centroids, per-cluster summary, the K scan when K is picked automatically)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

HELP = "cluster the pool's features (spherical k-means) into the workspace"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from clusterucb_core.config import RunConfig

    d = RunConfig().clusters  # the defaults when the workspace records no settings
    parser.add_argument("--workspace", "-w", required=True,
                        help="workspace folder (a flag left out takes its recorded setting)")
    parser.add_argument("--features", "-f", default=None,
                        help="feature store name in W/features/ (default: the only one, else "
                             "the workspace's cluster features)")
    parser.add_argument("--k", default=None,
                        help="number of clusters, or 'auto' to pick it by --k-rule "
                             f"(default {d.k or 'auto'})")
    parser.add_argument("--k-rule", default=None,
                        help=f"--k auto: size<m> (each arm ~m cold-start draws) or silhouette "
                             f"(the K scan) (default {d.k_rule})")
    parser.add_argument("--cold-start", type=float, default=None,
                        help="--k-rule size<m>: the cold start the selection will use")
    parser.add_argument("--condition", default=None,
                        choices=("none", "center", "whiten"),
                        help=f"feature conditioning before k-means, stored with the clusters "
                             f"(default {d.condition})")
    parser.add_argument("--ks", default=None,
                        help="--k auto: candidate K values, e.g. '4,8,16,32' (default: a "
                             "ladder up to about sqrt(N))")
    parser.add_argument("--scan-sample", type=int, default=10_000,
                        help="--k auto: rows in the K scan's sample (default 10000)")
    parser.add_argument("--name", default=None,
                        help="clustering name: W/clusters/NAME (default as `run` names it: "
                             "FEATURES[-CONDITION]-kK)")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"seed of the k-means++ starts (default {d.seed})")
    parser.add_argument("--max-iter", type=int, default=None,
                        help=f"most k-means iterations per start (default {d.max_iter})")
    parser.add_argument("--tol", type=float, default=None,
                        help="stop when no centroid moves more than this (squared distance)")
    parser.add_argument("--minibatch", action="store_true", default=None,
                        help="stream the rows in chunks (pools too big for memory)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"rows per chunk with --minibatch (default {d.batch_size})")
    parser.add_argument("--n-init", type=int, default=None,
                        help=f"k-means++ restarts, the best kept (default {d.n_init})")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--pool", default=None,
                        help="pool file for the cluster summaries (default: the workspace's "
                             "pool; without one, no summaries)")


def recorded_store(ws: Any, cfg: Any) -> str | None:
    """The store `run` clusters for the workspace's recorded cluster features, if it is there:
    hidden states of the base model, or gradients at a warm-up's first checkpoint."""
    from clusterucb_core.features.engine import store_name
    from clusterucb_core.features.model import find_checkpoints

    if cfg is None:
        return None
    spec, names = cfg.cluster_features, ws.list("features")
    firsts = [c[0] for c in map(find_checkpoints, ws.checkpoints().glob("*")) if c] \
        if spec.kind == "gradient" and ws.checkpoints().is_dir() else []
    for ck in [None, *firsts]:
        if store_name(spec, ck) in names:
            return store_name(spec, ck)
    return None


def pick_store(ws: Any, name: str | None, cfg: Any = None):
    """The named feature store (or the only one, or the recorded cluster features' one),
    opened read-only."""
    from clusterucb_core.features.store import FeatureStore

    names = ws.list("features")
    if name is None:
        if len(names) == 1:
            name = names[0]
        elif recorded_store(ws, cfg):
            name = recorded_store(ws, cfg)
        elif not names:
            raise FileNotFoundError(f"no feature stores in {ws.root}; run "
                                    "`clusterucb features` first")
        else:
            raise ValueError(f"several feature stores, choose one with --features: "
                             f"{', '.join(names)}")
    path = ws.features(name)
    if not path.exists():
        raise FileNotFoundError(f"no feature store {name!r} in {ws.root} "
                                f"(have: {', '.join(names) or 'none'})")
    return name, FeatureStore.open(path)


_CLUSTER_FLAGS = {"k_rule": "k_rule", "condition": "condition", "seed": "seed",
                  "max_iter": "max_iter", "tol": "tol", "minibatch": "minibatch",
                  "batch_size": "batch_size", "n_init": "n_init"}


def parse_k(text: str) -> int:
    """--k as ClusterSpec reads it (same rule, same message); 0 means the automatic K."""
    from clusterucb_core.config import ClusterSpec

    t = str(text).strip().lower()
    spec = ClusterSpec(k=t if t == "auto" else int(t) if t.lstrip("-").isdigit() else text)
    return 0 if spec.auto_k else int(spec.k)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import numpy as np

    from clusterucb_core.cli import stage
    from clusterucb_core.cli.features import ProgressLine
    from clusterucb_core.clustering.clusterset import save_clusters
    from clusterucb_core.clustering.kmeans import cluster_features, fits_in_memory
    from clusterucb_core.clustering.summaries import summarize_clusters
    from clusterucb_core.pipeline import clusters_name
    from clusterucb_core.workspace import check_name

    ws = stage.open_workspace(args.workspace)
    cfg = stage.recorded_config(ws)
    fname, store = pick_store(ws, args.features, cfg)
    base = stage.settings(ws)
    spec = stage.merged(base.clusters, args, _CLUSTER_FLAGS)
    if args.k is not None:
        spec = replace(spec, k=parse_k(args.k) or "auto")
    cold_start = base.selection.cold_start if args.cold_start is None else args.cold_start
    k = 0 if spec.auto_k else int(spec.k)
    name = check_name(args.name or clusters_name(fname, spec), "clustering name")
    if not store.complete:
        raise ValueError(f"feature store {fname!r} is incomplete ({store.n_done}/{store.n_rows} "
                         "rows); finish `clusterucb features` first (it resumes)")
    print(f"cluster: {store.n_rows:,} rows x {store.dim} dims from {fname} "
          f"({int(store.flagged.sum()):,} flagged rows without features get label -1)",
          file=sys.stderr, flush=True)
    from clusterucb_core.clustering import conditioning
    from clusterucb_core.clustering.krule import choose_k_with_scan

    minibatch = bool(spec.minibatch)
    if not minibatch and not fits_in_memory(store.n_rows, store.dim):
        minibatch = True
        print(f"note: {store.n_rows:,} x {store.dim} float32 rows would not fit in the memory "
              "available now; clustering in mini-batch (streaming) mode instead",
              file=sys.stderr, flush=True)
    # both modes read the store chunk by chunk (full mode keeps one copy)
    cond = conditioning.fit(store, spec.condition, seed=spec.seed)
    source: Any = conditioning.conditioned(store, cond)
    scan, why = None, f"K={k} was set by hand"
    if k == 0:
        ks = [int(x) for x in args.ks.split(",") if x.strip()] if args.ks else None
        scan_kw = ({"ks": ks, "sample": args.scan_sample, "device": args.device,
                    "progress": ProgressLine("K", prefix="K scan: ")}
                   if spec.k_rule == "silhouette" else {})
        k, why, scan = choose_k_with_scan(spec.k_rule, n_rows=int((~store.flagged).sum()),
                                          cold_start=cold_start, X=source, seed=spec.seed,
                                          **scan_kw)
        if scan is not None:
            print(scan.to_string(index=False), file=sys.stderr)
    print(f"K: {why}", file=sys.stderr, flush=True)
    spec = replace(spec, k=k, minibatch=minibatch)
    result = cluster_features(source, k, seed=spec.seed, max_iter=spec.max_iter, tol=spec.tol,
                              minibatch=spec.minibatch, batch_size=spec.batch_size,
                              device=args.device, n_init=spec.n_init,
                              progress=ProgressLine("iter", prefix="k-means: "))
    print(f"k-means: {result.n_iter} iterations, "
          f"{'converged' if result.converged else 'stopped at --max-iter'}, inertia "
          f"{result.inertia:.4g}, {result.n_reseeded} empty-cluster re-seeds", file=sys.stderr)

    summary, extra = None, {}
    pool = _pool(args, ws)
    if pool is not None and len(pool) != store.n_rows:
        print(f"warning: the pool has {len(pool)} rows but the features {store.n_rows}; "
              "no summaries", file=sys.stderr)
        pool = None
    if pool is not None:
        summary = summarize_clusters(pool.frame(), result.labels, source, result.centroids)
        sources = pool.column("source").astype(str)
        ok = result.labels >= 0
        if len(np.unique(sources[ok])) > 1:
            from sklearn.metrics import adjusted_rand_score

            ari = float(adjusted_rand_score(sources[ok], result.labels[ok]))
            extra["ari_vs_source"] = ari
            print(f"agreement of clusters with the pool's sources: ARI={ari:.3f}",
                  file=sys.stderr)
    extra.update(k_reason=why, condition=cond.kind)
    path = save_clusters(ws, name, result, features_fingerprint=store.fingerprint, spec=spec,
                         features_name=fname, summary=summary, kscan=scan, extra=extra)
    cond.save(path)
    ws.update_meta(clusters=name)
    if summary is not None:
        cols = ["cluster", "size", "top_source", "tokens_median", "label"]
        print(summary[cols].to_string(index=False))
    else:
        print("sizes: " + " ".join(str(s) for s in result.sizes()))
    print(f"clusters: K={k} -> {path} ({why})")
    return 0


def _pool(args: argparse.Namespace, ws: Any):
    from clusterucb_core.cli.features import open_pool

    try:
        return open_pool(args, ws)
    except FileNotFoundError as exc:
        if args.pool:
            raise
        print(f"note: {exc}; saving clusters without summaries", file=sys.stderr)
        return None
