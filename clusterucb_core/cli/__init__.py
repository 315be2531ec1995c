"""The `clusterucb` command: one subcommand module per stage, imported only when used.

Each module in this package exposes `HELP` (one line), `add_arguments(parser)` and
`run(args) -> int` (the exit code). Lazy imports keep `clusterucb --help` instant: torch is
loaded only by the commands that need it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from clusterucb_core.selection.runlog import RunLocked

# subcommand -> module in this package
COMMANDS: dict[str, str] = {
    "app": "app",
    "demo": "demo",
    "run": "run",
    "plan": "plan",
    "validate": "validate",
    "warmup": "warmup",
    "features": "features",
    "cluster": "cluster",
    "map": "map",
    "select": "select",
    "export": "export",
    "evaluate": "evaluate",
    "race": "race",
}


def passive_openmp() -> None:
    """Ask OpenMP threads to sleep, not spin, between parallel regions (unless the user chose).

    torch and scikit-learn each load their own OpenMP runtime; with the default active wait
    the threads of one keep spinning while the other works, and on a small machine that
    starves it: `cluster --k auto` (torch k-means, sklearn silhouettes in turn) on the demo
    pool took 21.6 s with active waiting and 8.0 s with passive on 2 cores. Only effective
    before torch/sklearn are loaded, hence here, before any command runs."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("clusterucb-studio")
    except metadata.PackageNotFoundError:  # running from a checkout that is not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clusterucb",
        description="Choose fine-tuning data by gradient influence, spending a budget with a "
                    "UCB bandit over clusters.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}",
                        help="print the installed version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"{__name__}.{module_name}")
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    passive_openmp()
    args = build_parser().parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and the next run resumes from it",
              file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError,
            RunLocked) as exc:  # RunLocked: another writer held the run past the wait
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
