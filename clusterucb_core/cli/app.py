"""`clusterucb app`: start the Streamlit app from the installed package.

The app's entry (`app.py`), its `pages/` and the checkout's `.streamlit/config.toml` ship as
the `clusterucb_site` package, found by name so the engine never imports its UI. The server
settings are passed as flags, so the app behaves the same wherever it is started from
(Streamlit reads `.streamlit/` only from the working folder).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tomllib
from pathlib import Path

HELP = "start the ClusterUCB Studio app in the browser (bound to 127.0.0.1 by default)"
SITE = "clusterucb_site"
ENTRY = "app.py"
CONFIG = ".streamlit/config.toml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8501,
                        help="port to serve on (default: 8501)")
    parser.add_argument("--address", default="127.0.0.1",
                        help="address to bind (default: 127.0.0.1, this machine only; "
                             "0.0.0.0 serves every network the machine is on)")
    parser.add_argument("--workspaces", metavar="DIR", default=None,
                        help="folder holding the workspaces (default: ./workspaces, or the "
                             "CLUSTERUCB_WORKSPACES environment variable)")


def app_dir() -> Path:
    """The folder holding app.py: the checkout's root, or the installed `clusterucb_site`."""
    spec = importlib.util.find_spec(SITE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the app is not installed ({SITE} not found): pip install "
                                "'clusterucb-studio[app]'")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def streamlit_flags(config: Path) -> list[str]:
    """`--section.key=value` for every setting of a Streamlit config file."""
    data = tomllib.loads(config.read_text()) if config.is_file() else {}
    flags = []
    for section, values in data.items():
        for key, value in values.items():
            if isinstance(value, bool):
                value = str(value).lower()
            flags.append(f"--{section}.{key}={value}")
    return flags


def command(args: argparse.Namespace) -> list[str]:
    """The `streamlit run` command line (the last flags win over the config file's)."""
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    here = app_dir()
    entry = here / ENTRY
    if not entry.is_file():
        raise FileNotFoundError(f"the app's entry point is missing: {entry} (a broken "
                                "install: reinstall clusterucb-studio)")
    return [sys.executable, "-m", "streamlit", "run", str(entry),
            *streamlit_flags(here / CONFIG),
            f"--server.address={args.address}", f"--server.port={args.port}",
            f"--browser.serverAddress={args.address}"]


def run(args: argparse.Namespace) -> int:
    try:
        import streamlit  # noqa: F401
    except ImportError:
        raise FileNotFoundError("the app needs the [app] extra: pip install "
                                "'clusterucb-studio[app]'") from None
    cmd = command(args)
    if args.workspaces:
        os.environ["CLUSTERUCB_WORKSPACES"] = str(Path(args.workspaces).expanduser().resolve())
    print(f"ClusterUCB Studio: http://{args.address}:{args.port}  (Ctrl+C stops it)",
          flush=True)
    os.execv(sys.executable, cmd)  # the server replaces this process: signals reach it
    return 0  # not reached
