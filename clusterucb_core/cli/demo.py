"""`clusterucb demo`: the whole pipeline on the bundled demo, headless."""

from __future__ import annotations

import argparse

from ..config import DEMO_DIR
from .run import add_overrides

HELP = "run the whole pipeline on the bundled demo pool, target and model (a few CPU minutes)"
DEMO_CONFIG = DEMO_DIR / "demo_run.toml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_overrides(parser, workspace_default="workspaces/demo")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from .run import run_config

    return run_config(load_config(DEMO_CONFIG), args)
