"""`clusterucb plan --config C`: what a run will cost, per stage, before any work."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

HELP = ("predict each stage's seconds and GPU/CPU-hours (warm-up, cluster features, the "
        "bandit's gradients, exhaustive LESS) and the whole-path speed-up, before a run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="run settings (example: sample_data/demo_run.toml)")
    parser.add_argument("--workspace", default=None,
                        help="workspace folder (overrides the config); the plan, the token "
                             "counts and the calibration are kept in its plan/ folder")
    parser.add_argument("--recalibrate", action="store_true",
                        help="time the calibration batches again instead of reusing the "
                             "calibration kept for this device and these settings")
    parser.add_argument("--lazy-row-ms", type=float, default=None, metavar="MS",
                        help="a measured cost of one bandit row in milliseconds, instead of "
                             "the padding model's (rounds of draw_batch rows padded to the "
                             "longest)")
    parser.add_argument("--json", action="store_true",
                        help="print the plan as JSON (for machines) instead of the table")


def run(args: argparse.Namespace) -> int:
    from clusterucb_core.config import check_runnable, load_config
    from clusterucb_core.features.planner import format_plan, make_plan

    if args.lazy_row_ms is not None and not args.lazy_row_ms > 0:
        raise ValueError(f"--lazy-row-ms = {args.lazy_row_ms}: must be > 0 milliseconds")
    cfg = load_config(args.config)
    if args.workspace:
        cfg = replace(cfg, workspace=args.workspace)
    check_runnable(cfg)
    log = None if args.json else print
    plan = make_plan(cfg, recalibrate=args.recalibrate, log=log,
                     lazy_row_s=None if args.lazy_row_ms is None else args.lazy_row_ms / 1e3)
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan))
    return 0
