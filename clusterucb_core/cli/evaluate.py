"""`clusterucb evaluate`: does the selection help? Fine-tune on it, on random rows and on the
exhaustive LESS top-p (when known), the same way, and compare held-out target losses."""

from __future__ import annotations

import argparse

HELP = ("fine-tune LoRA on a run's selection, a random subset and the exhaustive top-p; compare "
        "target loss")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", required=True, help="workspace folder")
    parser.add_argument("--run", default=None, help="selection run id (default: the config's)")
    parser.add_argument("--eval-target", default=None,
                        help="held-out target examples (default: the selection target itself)")
    parser.add_argument("--steps", type=int, default=0,
                        help="optimiser steps for every subset (default: the warm-up epochs "
                             "over the subset size)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random subset")
    parser.add_argument("--out", default=None, help="write the table as CSV here")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import numpy as np
    import pandas as pd

    from clusterucb_core.data.targets import load_target
    from clusterucb_core.pipeline import Pipeline
    from clusterucb_core.selection.evaluate import compare_subsets
    from clusterucb_core.selection.oracle import exhaustive_top

    pipe = Pipeline.from_workspace(args.workspace)
    run_id = args.run or pipe.cfg.run_id
    selected = pipe.selection(run_id).selected()
    n = len(pipe.pool)
    rng = np.random.default_rng(args.seed)
    subsets = {f"ClusterUCB ({run_id})": np.sort(selected),
               "random": np.sort(rng.choice(n, size=len(selected), replace=False))}
    exhaustive = pipe.known_exhaustive()
    if exhaustive is not None:
        subsets["exhaustive LESS top-p"] = np.sort(exhaustive_top(exhaustive, len(selected)))
    if args.eval_target:
        eval_target = load_target(args.eval_target)
    else:
        print("note: evaluating on the selection target itself; pass --eval-target with "
              "held-out examples for an unbiased comparison")
        eval_target = pipe.target
    train = replace(pipe.cfg.warmup, max_steps=args.steps)
    table = pd.DataFrame(compare_subsets(pipe.pool, subsets, eval_target, pipe.cfg.model,
                                         pipe.cfg.lora, train))
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if args.out:
        from clusterucb_core.runtime.atomic import write_text

        write_text(args.out, table.to_csv(index=False))
    return 0
