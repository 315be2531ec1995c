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
    parser.add_argument("--no-plan", action="store_true",
                        help="skip the cost plan printed before the run (and its few seconds "
                             "of calibration); the summary then has no predicted column")


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
    if not args.no_plan:
        from clusterucb_core.features.planner import format_plan, make_plan

        print(format_plan(make_plan(cfg, log=print)), flush=True)
    summary = Pipeline(cfg).run_all()
    print(json.dumps(summary, indent=2))
    if "stages" in summary.get("plan", {}):
        from clusterucb_core.features.planner import format_comparison

        print(format_comparison(summary["plan"]))
    return 0
