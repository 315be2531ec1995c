"""`clusterucb map`: the 2-D UMAP map of a feature store, cached in W/maps/."""

from __future__ import annotations

import argparse

HELP = "compute the 2-D map (UMAP, cosine) of a feature store into the workspace"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", "-w", required=True, help="workspace folder")
    parser.add_argument("--features", "-f", default=None,
                        help="feature store name in W/features/ (default: the only one, else "
                             "the workspace's cluster features)")
    parser.add_argument("--n-neighbors", type=int, default=15,
                        help="UMAP neighbours: larger keeps more global structure (default 15)")
    parser.add_argument("--min-dist", type=float, default=0.1,
                        help="UMAP minimum distance between points on the map (default 0.1)")
    parser.add_argument("--pca-dims", type=int, default=50,
                        help="PCA pre-reduction before UMAP (0 = none; default 50)")
    parser.add_argument("--max-fit", type=int, default=20_000,
                        help="fit UMAP on at most this many rows, place the rest onto it "
                             "(default 20000)")
    parser.add_argument("--seed", type=int, default=0, help="UMAP seed (default 0)")
    parser.add_argument("--force", action="store_true", help="recompute even when cached")


def run(args: argparse.Namespace) -> int:
    from clusterucb_core.cli.cluster import pick_store
    from clusterucb_core.cli.features import ProgressLine
    from clusterucb_core.cli.stage import open_workspace, recorded_config
    from clusterucb_core.clustering.embedding2d import compute_map

    ws = open_workspace(args.workspace)
    fname, store = pick_store(ws, args.features, recorded_config(ws))
    if not store.complete:
        raise ValueError(f"feature store {fname!r} is incomplete ({store.n_done}/{store.n_rows} "
                         "rows); finish `clusterucb features` first (it resumes)")
    res = compute_map(store, ws, features_fingerprint=store.fingerprint,
                      n_neighbors=args.n_neighbors, min_dist=args.min_dist,
                      pca_dims=args.pca_dims or None, max_fit=args.max_fit, seed=args.seed,
                      force=args.force, progress=ProgressLine("rows", prefix="map: "))
    how = "read from the cache" if res.from_cache else f"computed in {res.seconds:.1f} s"
    print(f"map of {fname}: {res.note} ({how})")
    print(f"map: {res.path}")
    return 0
