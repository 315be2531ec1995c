"""`clusterucb export`: write a run's selection as the user's own records, LESS's files, a
`datasets` folder and a manifest (see clusterucb_core/export/files.py), atomically."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from clusterucb_core.data.pool import FORMATS, SHAPES

HELP = "export a selection run: original records, LESS files, datasets folder, manifest"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", "-w", required=True, help="workspace folder")
    parser.add_argument("--run", help="run id in W/runs/ (default: the current run)")
    parser.add_argument("--out", help="export folder (default: W/exports/RUN)")
    parser.add_argument("--pool", help="pool file (default: the one recorded in the run or "
                                       "the workspace)")
    parser.add_argument("--format", default=None, choices=("auto",) + FORMATS,
                        help="pool format (default: as recorded)")
    parser.add_argument("--shape", default=None, choices=("auto",) + SHAPES,
                        help="pool shape (default: as recorded)")
    parser.add_argument("--no-dataset", action="store_true",
                        help="skip the Hugging Face datasets folder")
    parser.add_argument("--push-to-hub", metavar="REPO", default=None,
                        help="then upload the selection, its manifest and a dataset card to "
                             "this Hub dataset repository (ORG/NAME; token from HF_TOKEN or "
                             "`huggingface-cli login`)")
    parser.add_argument("--private", action="store_true",
                        help="with --push-to-hub: create the repository private")


def resolve_path(ws: Any, path: str | Path) -> Path:
    """A recorded path: absolute, or relative to the workspace, the project or the cwd."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    project = Path(__file__).resolve().parents[2]
    for base in (ws.root, project, Path.cwd()):
        if (base / p).exists():
            return (base / p).resolve()
    return p


def pool_ref(ws: Any, recorded: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The pool to export from: --pool, else the one the run recorded, else the workspace's."""
    ref = recorded or ws.meta().get("pool")
    if isinstance(ref, str):
        ref = {"path": ref}
    ref = dict(ref or {})
    if args.pool:
        ref = {"path": args.pool}
    if not ref.get("path"):
        raise FileNotFoundError("no pool recorded for this run or workspace; pass --pool")
    for key in ("format", "shape"):
        if getattr(args, key):
            ref[key] = getattr(args, key)
    return ref


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from clusterucb_core.cli.stage import open_workspace
    from clusterucb_core.clustering.clusterset import load_clusters
    from clusterucb_core.data.load import load_pool
    from clusterucb_core.export.files import export_selection
    from clusterucb_core.selection.runs import open_run

    ws = open_workspace(args.workspace)
    run_id = args.run or ws.meta().get("current_run")
    if not run_id:
        raise ValueError("which run? pass --run (no current run in the workspace)")
    sel = open_run(ws, run_id)
    meta, clustering = sel.meta, sel.meta.clustering
    labels, cs = sel.labels, load_clusters(ws, clustering)
    ledger = sel.ledger
    ref = pool_ref(ws, meta.pool, args)
    pool = load_pool(resolve_path(ws, ref["path"]), ref.get("format", "auto"),
                     ref.get("shape", "auto"), cache_dir=ws.pool_cache())
    exhaustive = None
    ex_path = ws.scores()
    if ex_path.exists():
        arr = np.load(ex_path)
        exhaustive = arr if arr.ndim == 1 and len(arr) == len(labels) else None
    out = Path(args.out).expanduser() if args.out else ws.exports(run_id)
    res = sel.result()
    export_selection(out, pool, res, run_id=run_id, clustering=clustering,
                     cluster_names=cs.cluster_names(), oracle_info=sel.header.get("oracle"),
                     ledger_state=ledger.state(), log_path=sel.log_path,
                     exhaustive=exhaustive, with_dataset=not args.no_dataset,
                     extra={"workspace": str(ws.root), "reward": meta.reward,
                            "clusters_meta": {"k": cs.k, "features": cs.meta.get("features"),
                                              "features_fingerprint":
                                                  cs.meta.get("features_fingerprint")}})
    state = "finished" if sel.done else "NOT finished (the selection so far)"
    print(f"exported run {run_id} ({state}): {len(res.rows)} rows of {len(labels)} "
          f"to {out}")
    if args.push_to_hub:
        if args.no_dataset:
            raise ValueError("--push-to-hub uploads the datasets folder: drop --no-dataset")
        from clusterucb_core.export.hub import push_to_hub

        url = push_to_hub(out, args.push_to_hub, private=args.private)
        print(f"pushed to {url}")
    return 0
