"""`clusterucb run --config run.toml`: every stage, from one file, resumable."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from clusterucb_core.config import check_runnable, load_config

HELP = "run every stage (warm-up, features, clusters, map, selection, export) from one TOML file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="run settings (example: sample_data/demo_run.toml)")
    add_overrides(parser, workspace_default=None)


def add_overrides(parser: argparse.ArgumentParser, workspace_default: str | None) -> None:
    parser.add_argument("--workspace", default=workspace_default,
                        help="workspace folder to create or reuse (overrides the config)")
    parser.add_argument("--exhaustive", action="store_true",
                        help="also score every row, to report recall against full LESS")
    parser.add_argument("--plan", action="store_true",
                        help="calibrate on this device when no calibration is kept, and print "
                             "the cost plan before the run (a kept calibration is always "
                             "used; `clusterucb plan` makes one)")


def run(args: argparse.Namespace) -> int:
    from clusterucb_core.preflight import preflight  # torch + transformers: see cli/__init__

    cfg = load_config(args.config)
    if args.workspace:
        cfg = replace(cfg, workspace=args.workspace)
    # every setting and path, then what needs the model's config and the pool's size: all
    # before any work or any file is written
    check_runnable(cfg)
    preflight(cfg)
    return run_config(cfg, args)


def run_config(cfg, args: argparse.Namespace) -> int:
    """Shared by `run` and `demo`: apply the command-line overrides, run, print the summary."""
    from clusterucb_core.pipeline import Pipeline

    if args.workspace:
        cfg = replace(cfg, workspace=args.workspace)
    if args.exhaustive:
        cfg = replace(cfg, exhaustive=True)
    from clusterucb_core.features.planner import format_plan, make_plan

    plan = make_plan(cfg, log=print, calibrate_missing=args.plan)
    if plan is None:
        print("cost plan: no calibration kept for these settings on this device; "
              "`clusterucb plan --config C` (or --plan) predicts every stage first", flush=True)
    else:
        print(format_plan(plan), flush=True)
    summary = Pipeline(cfg).run_all()
    print(json.dumps(summary, indent=2))
    if "stages" in summary.get("plan", {}):
        from clusterucb_core.features.planner import format_comparison

        print(format_comparison(summary["plan"]))
    return 0
