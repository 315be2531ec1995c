"""`clusterucb select`: spend a gradient budget with a bandit over clusters, keep the top-p.

Rewards come from a score table (`--scores FILE.npy|FILE.pt|NAME`, or the workspace's
exhaustive scores `W/scores/exhaustive.npy`) or, with `--lazy`, from gradients computed only
for the drawn rows (`lazy_oracle` below, built from the run settings saved in the workspace).
The run's log lives in W/runs/RUN/; running the same `--run-id` again continues it.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from clusterucb_core.cli.spec_flags import add_spec_flags, spec_from_flags
from clusterucb_core.config import RunConfig, SelectionSpec

HELP = "select data: a UCB bandit over clusters spends the budget, the top-p rows are kept"



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", "-w", required=True, help="workspace folder")
    parser.add_argument("--method", choices=("ucb", "rds"), default="ucb",
                        help="ucb: ClusterUCB (default); rds: RDS+, the top-p rows by hidden-"
                             "state cosine to the target, no gradient (saved as run `rds`)")
    parser.add_argument("--clusters", help="clustering name in W/clusters/ (default: the "
                                           "workspace's current one, else the newest)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--scores", help="reward table: a .npy (or LESS .pt) file with one score "
                                      "per pool row, or a name in W/scores/ (default: "
                                      "W/scores/exhaustive.npy when present)")
    src.add_argument("--lazy", action="store_true",
                     help="compute gradients only for the drawn rows (needs features set up)")
    add_spec_flags(parser, SelectionSpec, RunConfig().selection)
    parser.add_argument("--run-id", help="run name (default: run-<date>-<time>); an existing "
                                         "run is continued")
    parser.add_argument("--rounds", type=int, default=None,
                        help="stop after this many rounds (continue later with --run-id)")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="print every round's choice and why")


# ------------------------------------------------------------------------------ helpers


def load_labels(ws: Any, name: str) -> tuple[Any, int, Any]:
    """(labels, K, ClusterSet) of a saved clustering."""
    from clusterucb_core.clustering.clusterset import load_clusters

    cs = load_clusters(ws, name)
    return cs.labels, int(cs.k), cs


def load_scores(path: Path):
    import numpy as np

    if path.suffix == ".pt":
        import torch

        arr = torch.load(path, map_location="cpu", weights_only=True)
        arr = arr.float().numpy() if hasattr(arr, "numpy") else np.asarray(arr)
    else:
        arr = np.load(path, allow_pickle=False)
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{path}: scores must be one number per pool row, got shape "
                         f"{arr.shape}")
    return arr


def resolve_scores(ws: Any, value: str | None) -> tuple[Path | None, str]:
    """(path, reward kind) for --scores; (None, 'lazy') when there is no table."""
    if value is None:
        default = ws.scores()
        return (default, "exhaustive") if default.exists() else (None, "lazy")
    p = Path(value).expanduser()
    if p.exists():
        return p.resolve(), "table"
    named = ws.scores(value)
    if named.exists():
        return named, "exhaustive" if value == "exhaustive" else "table"
    raise FileNotFoundError(f"no scores at {value} nor {named}")


def lazy_oracle(ws: Any, clustering: str, n_rows: int) -> Any:
    """The lazy reward oracle (gradients of the drawn rows only), built from the run
    settings saved in the workspace by `clusterucb run`/`demo` or the app."""
    from clusterucb_core.pipeline import Pipeline

    try:
        pipe = Pipeline.from_workspace(ws.root)
    except ValueError as exc:
        raise ValueError(f"lazy rewards compute gradients with the workspace's model and "
                         f"target, and {exc}; or pass --scores FILE.npy") from None
    if len(pipe.pool) != n_rows:
        raise ValueError(f"the workspace's pool has {len(pipe.pool)} rows but clustering "
                         f"{clustering!r} has {n_rows}")
    return pipe.oracle


def make_oracle(ws: Any, meta: Any, n_rows: int) -> Any:
    """The oracle a run's `RunMeta` names."""
    from clusterucb_core.selection.oracle import TableOracle

    kind = meta.reward
    if kind == "lazy":
        return lazy_oracle(ws, meta.clustering, n_rows)
    path = Path(meta.scores_path) if meta.scores_path else \
        ws.scores()
    if not path.exists():
        raise FileNotFoundError(f"this run's reward table {path} is gone")
    scores = load_scores(path)
    if len(scores) != n_rows:
        raise ValueError(f"{path} has {len(scores)} scores but the clustering has {n_rows} rows")
    return TableOracle(scores, name=kind or "table")


def scores_source(meta: Any) -> str:
    """What a run's recall is measured against: the exhaustive scores, or the user's table."""
    if meta.reward == "table":
        return f"the whole score table {Path(meta.scores_path).name} (the run's rewards)"
    return "exhaustive scores"


def spec_from_args(args: argparse.Namespace, base: Any = None) -> tuple[Any, list[str]]:
    """The spec the flags ask for, and the names of flags given explicitly."""
    return spec_from_flags(args, SelectionSpec, base or RunConfig().selection)


def new_run_id() -> str:
    return "run-" + datetime.now().strftime("%Y%m%d-%H%M%S")


def _fmt(x: float) -> str:
    return "n/a" if x != x else f"{x:.3f}"


# ------------------------------------------------------------------------------ command


def run(args: argparse.Namespace) -> int:
    import dataclasses

    if args.method == "rds":
        from clusterucb_core.cli import select_rds

        return select_rds.run(args)

    from clusterucb_core.cli.stage import clusters_name, open_workspace, settings
    from clusterucb_core.clustering.clusterset import load_clusters
    from clusterucb_core.selection import run as selection
    from clusterucb_core.selection.audit import audit_run
    from clusterucb_core.selection.oracle import run_metrics
    from clusterucb_core.selection.runlog import RunLog, RunMeta
    from clusterucb_core.selection.runs import new_run, open_run
    from clusterucb_core.workspace import check_name

    ws = open_workspace(args.workspace)
    run_id = check_name(args.run_id, "run id") if args.run_id else new_run_id()

    def oracle_for(meta: RunMeta, n_rows: int) -> Any:
        return make_oracle(ws, meta, n_rows)

    if RunLog(ws.runs(run_id)).exists():
        sel = open_run(ws, run_id, oracle_for)
        if args.clusters and sel.meta.clustering not in (None, args.clusters):
            raise ValueError(f"run {run_id} uses clustering {sel.meta.clustering!r}, "
                             f"not {args.clusters!r}")
        wanted, given = spec_from_args(args, sel.spec)
        if wanted != sel.spec:
            raise ValueError(f"run {run_id} exists with other settings ({', '.join(given)}); "
                             "leave those flags out to continue it, or pick a new --run-id")
        print(f"continuing run {run_id} at round {sel.next_round} "
              f"({sel.budget_used}/{sel.budget_total} rows scored)")
    else:
        name = clusters_name(ws, args.clusters)
        spec, given = spec_from_args(args, settings(ws).selection)
        if spec.draw_order != "random" and "draw_order" not in given and \
                not load_clusters(ws, name).meta.get("features"):
            spec = dataclasses.replace(spec, draw_order="random")
            print(f"note: clusters {name!r} record no feature store, so rounds draw at random "
                  "(the default, --draw-order predicted, orders draws by those features)")
        path, kind = (None, "lazy") if args.lazy else resolve_scores(ws, args.scores)
        meta = RunMeta(clustering=name, reward=kind,
                       scores_path=None if path is None else str(path),
                       workspace=ws.name, pool=ws.meta().get("pool"))
        sel = new_run(ws, run_id, spec, meta, oracle_for)
        print(f"run {run_id}: {spec.policy} over {sel.K} clusters of {sel.N} rows; budget "
              f"{sel.budget_total} rows, top {sel.n_top}")
    ws.update_meta(current_run=run_id)

    done = 0
    while args.rounds is None or done < args.rounds:
        sel.refresh()  # another writer (a browser tab, a second terminal) may have stepped
        if sel.done:
            break
        try:
            rec = sel.step()
        except selection.RunFinished:
            break
        done += 1
        if args.verbose:
            print(f"round {rec.round:4d} [{rec.budget_used}/{rec.budget_total}] "
                  f"{rec.explanation.get('sentence', '')}")
    state = "finished" if sel.done else "paused (continue with --run-id " + run_id + ")"
    print(f"{state}: {len(sel.records)} rounds, {sel.budget_used}/{sel.budget_total} rows "
          f"scored, {len(sel.selected())} selected")
    metrics = run_metrics(sel)
    if metrics is not None:
        print(f"against {scores_source(sel.meta)}: recall of the top-{sel.spec.top_p:g} "
              f"{_fmt(metrics['recall'])}, score mass {_fmt(metrics['mass_share'])}")
    if (audit := audit_run(sel)) is not None:
        print(audit.sentence())
    print(f"log: {sel.log_path}")
    known = sel.meta.pool or ws.meta().get("pool")  # what export will read (else --pool)
    print(f"export with: clusterucb export --workspace {ws.root} --run {run_id}"
          + ("" if known else " --pool POOL (no pool is recorded for this workspace)"),
          file=sys.stderr)
    return 0
