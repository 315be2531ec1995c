"""`clusterucb select --method rds`: the RDS+ selection (selection/rds.py) saved as a run.

RDS+ scores every row from hidden states, without a gradient. The scores go to
W/scores/rds.npy and the selection becomes a run of the workspace (default id `rds`) whose
reward table is that file and whose one round (a cold start of every cluster's every row)
reads it: `clusterucb export --run rds` exports it as any run, and the app lists it. The run's
"budget" is RDS+ scores, which cost no gradient.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

RUN_ID = "rds"
# selection flags that mean nothing without a bandit (top-p and seed still apply)
_BANDIT_FLAGS = ("policy", "beta", "cold_start", "budget", "draw_batch", "quantile",
                 "pooled_variance", "split_hot", "draw_order", "rounds", "lazy", "scores")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from clusterucb_core.cli.stage import clusters_name
    from clusterucb_core.config import RunConfig
    from clusterucb_core.pipeline import Pipeline
    from clusterucb_core.selection.oracle import TableOracle, mass_share, recall
    from clusterucb_core.selection.rds import SCORES_NAME, workspace_rds
    from clusterucb_core.selection.runlog import RunLog, RunMeta
    from clusterucb_core.selection.runs import new_run, open_run
    from clusterucb_core.workspace import Workspace, check_name

    given = [f for f in _BANDIT_FLAGS if getattr(args, f, None) not in (None, False)]
    if given:
        flags = ", ".join("--" + f.replace("_", "-") for f in given)
        raise ValueError(f"--method rds ranks rows without a bandit: {flags} do not apply "
                         "(only --top-p, --seed, --clusters and --run-id)")
    ws = Workspace.open(args.workspace, create=False)
    run_id = check_name(args.run_id or RUN_ID, "run id")
    try:
        pipe = Pipeline.from_workspace(ws.root)
    except ValueError as exc:
        raise ValueError(f"RDS+ embeds the pool and the target with the workspace's model, "
                         f"and {exc}") from None
    res = workspace_rds(pipe, progress=pipe.progress("RDS+ hidden states"))
    scores_path = ws.scores(SCORES_NAME)
    print(f"RDS+ scores of {len(res.scores):,} rows from {res.features} ({res.store}); "
          f"{scores_path}")
    base = RunConfig().selection
    spec = replace(base, policy="random", cold_start=1.0, budget=1.0, draw_order="random",
                   top_p=args.top_p if args.top_p is not None else base.top_p,
                   seed=args.seed if args.seed is not None else base.seed)

    def oracle_for(meta: RunMeta, n_rows: int) -> Any:
        scores = np.load(meta.scores_path)
        if len(scores) != n_rows:
            raise ValueError(f"{meta.scores_path} has {len(scores)} scores but the "
                             f"clustering has {n_rows} rows")
        return TableOracle(scores.astype(np.float64), name=SCORES_NAME)

    if RunLog(ws.runs(run_id)).exists():
        sel = open_run(ws, run_id, oracle_for)
        if sel.meta.reward != SCORES_NAME or sel.spec != spec:
            raise ValueError(f"run {run_id} exists and is not this RDS+ selection; pick "
                             "another --run-id")
        print(f"run {run_id} exists: reopened")
    else:
        meta = RunMeta(clustering=clusters_name(ws, args.clusters), reward=SCORES_NAME,
                       scores_path=str(scores_path), workspace=ws.name,
                       pool=ws.meta().get("pool"))
        sel = new_run(ws, run_id, spec, meta, oracle_for)
        sel.run_to_end()
    ws.update_meta(current_run=run_id)
    rows = sel.selected()
    print(f"RDS+ selection: the top {len(rows):,} of {sel.N:,} rows (top-p {spec.top_p:g}), "
          "no gradient computed")
    ex_path = ws.scores()
    ex = np.load(ex_path) if ex_path.exists() else None
    if ex is not None and ex.shape == (sel.N,):
        print(f"against exhaustive scores: recall of the top-{spec.top_p:g} "
              f"{recall(rows, ex, sel.n_top):.3f}, score mass "
              f"{mass_share(rows, ex, sel.n_top):.3f}")
    print(f"log: {sel.log_path}")
    print(f"export with: clusterucb export --workspace {ws.root} --run {run_id}")
    return 0
