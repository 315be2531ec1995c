"""Does the selection help? The claim the method exists for, measured.

Fine-tune LoRA the same way (same steps, seed, learning rate, fresh adapters) on
(a) ClusterUCB's top 5% at a 20% gradient budget, (b) the exhaustive-LESS top 5% (every row
scored), (c) random 5% subsets, and report each one's loss on the target's *held-out*
examples (sample_data/targets/heldout/: same subtasks, prompts never seen by the selection).
Lower is better; "base" is the model before any fine-tuning.

By default it works on a copy of the bundled demo workspace (exhaustive scores shipped), so
only the fine-tunes cost time. `--workspace W` uses another workspace that has exhaustive
scores and was configured by `clusterucb run`/the app; `--eval-target` its held-out set.

    python bench/bench_finetune.py [--quick] [--target-name arithmetic] [--random-seeds 3]

Both selection rules are fine-tuned: the max rule (LESS, the default) and `balance =
"subtasks"` (the top-5% filled round-robin over the target's subtasks).

Last line: loss_base=<l> loss_ucb=<l> loss_ucb_balanced=<l> loss_exhaustive=<l>
loss_random=<l> ucb_vs_random=<ratio>
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clusterucb_core.config import DEMO_DIR  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    from clusterucb_core.cli.demo import DEMO_CONFIG
    from clusterucb_core.config import load_config
    from clusterucb_core.data.targets import load_target
    from clusterucb_core.pipeline import Pipeline
    from clusterucb_core.selection.evaluate import compare_subsets
    from clusterucb_core.selection.oracle import exhaustive_top

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps, one random subset")
    ap.add_argument("--workspace", help="a workspace with exhaustive scores (default: a copy "
                                        "of the bundled demo workspace)")
    ap.add_argument("--target-name", default="arithmetic",
                    help="bundled target whose held-out examples are evaluated")
    ap.add_argument("--eval-target", help="held-out target file (overrides --target-name)")
    ap.add_argument("--random-seeds", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args(argv)

    if args.workspace:
        pipe = Pipeline.from_workspace(args.workspace, log=None)
    else:
        ws = Path(tempfile.mkdtemp(prefix="bench_finetune_")) / "demo"
        shutil.copytree(DEMO_DIR / "demo_workspace", ws)
        cfg = load_config(DEMO_CONFIG)
        target = DEMO_DIR / "targets" / f"{args.target_name}.jsonl"
        pipe = Pipeline(replace(cfg, workspace=str(ws), target=str(target), run_id="bench"),
                        log=None)
    exhaustive = pipe.exhaustive_scores()
    summary = pipe.run_selection(pipe.cfg.run_id)
    selected = np.sort(pipe.selection(pipe.cfg.run_id).selected())
    n_sel = len(selected)
    eval_path = args.eval_target or DEMO_DIR / "targets" / "heldout" / f"{args.target_name}.jsonl"
    eval_target = load_target(eval_path)
    n = len(pipe.pool.table)
    from clusterucb_core.selection.subtasks import balanced_top

    run = pipe.selection(pipe.cfg.run_id)
    scored = np.flatnonzero(np.isfinite(run.scores))
    balanced = np.sort(balanced_top(scored, pipe.subtask_scores(scored), n_sel))
    meta = pipe.clusters.meta
    print(f"defaults: cluster features {pipe.cfg.cluster_features.kind} "
          f"{(meta.get('feature_cost') or {}).get('options', {})}, conditioning "
          f"{meta.get('condition', 'none')}, {meta.get('k_reason') or f'K={pipe.clusters.k}'}")
    subsets = {"ClusterUCB top-5% @20% budget": selected,
               "ClusterUCB balanced over subtasks": balanced,
               "exhaustive LESS top-5%": np.sort(exhaustive_top(exhaustive, n_sel))}
    seeds = args.random_seeds or (1 if args.quick else 3)
    for s in range(seeds):
        rng = np.random.default_rng(1000 + s)
        subsets[f"random 5% (seed {s})"] = np.sort(rng.choice(n, size=n_sel, replace=False))
    steps = args.steps or (10 if args.quick else 60)
    train = replace(pipe.cfg.warmup, max_steps=steps)
    print(f"pool {n} rows, target {pipe.target.name}; held-out {eval_path} "
          f"({len(eval_target.examples)} examples); {n_sel} rows per subset, {steps} steps, "
          f"lr {train.learning_rate}, batch {train.batch_size}; selection recall of the "
          f"exhaustive top-5%: {summary.get('metrics', {}).get('recall', float('nan')):.3f}")
    table = pd.DataFrame(compare_subsets(pipe.pool, subsets, eval_target, pipe.cfg.model,
                                         pipe.cfg.lora, train, log=lambda m: None))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))

    loss = dict(zip(table["subset"], table["loss"]))
    base = loss.pop("base (no fine-tune)")
    rnd = float(np.mean([v for k, v in loss.items() if k.startswith("random")]))
    ucb, exh = loss["ClusterUCB top-5% @20% budget"], loss["exhaustive LESS top-5%"]
    bal = loss["ClusterUCB balanced over subtasks"]
    print(f"loss_base={base:.4f} loss_ucb={ucb:.4f} loss_ucb_balanced={bal:.4f} "
          f"loss_exhaustive={exh:.4f} loss_random={rnd:.4f} ucb_vs_random={ucb / rnd:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
