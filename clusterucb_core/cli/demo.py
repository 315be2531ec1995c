"""`clusterucb demo`: the whole pipeline on the bundled demo, headless."""

from __future__ import annotations

import argparse

from clusterucb_core.cli.run import add_overrides
from clusterucb_core.config import DEMO_DIR

HELP = "run the whole pipeline on the bundled demo pool, target and model (a few CPU minutes)"
DEMO_CONFIG = DEMO_DIR / "demo_run.toml"  # may be missing: `run` says how to get the demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_overrides(parser, workspace_default="workspaces/demo")
    parser.add_argument("--pool", default=None,
                        help="another pool instead of the demo's (a path or hf://ORG/NAME)")
    parser.add_argument("--quick", action="store_true",
                        help="skip the warm-up training, the 2-D map and the cost plan "
                             "(checks an install in about a minute)")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from clusterucb_core.cli.run import run_config
    from clusterucb_core.config import load_config
    from clusterucb_core.data.demo import require_demo

    require_demo("demo_run.toml", "demo_pool.jsonl", "demo_model", "targets")
    cfg = load_config(DEMO_CONFIG)
    if args.pool:
        cfg = replace(cfg, pool=args.pool)
    if args.quick:
        cfg = replace(cfg, use_warmup=False, make_map=False)
    return run_config(cfg, args)
