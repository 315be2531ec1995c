"""Where the bundled demo (pool, targets, model, prebuilt workspace) lives.

The demo ships inside the wheel as the `clusterucb_demo` data package (pyproject maps it to the
checkout's `sample_data/`). Looked up in order: the folder named by `CLUSTERUCB_DEMO_DIR`, the
`sample_data/` of the checkout this package runs from, the installed `clusterucb_demo`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

ENV = "CLUSTERUCB_DEMO_DIR"
_CHECKOUT = Path(__file__).resolve().parents[2] / "sample_data"  # clusterucb_core/data/ -> root


def find_demo_dir() -> Path:
    """The demo folder (it may not exist: `require_demo` says how to get it)."""
    env = os.environ.get(ENV)
    if env:
        return Path(env).expanduser()
    if _CHECKOUT.is_dir():
        return _CHECKOUT
    try:
        spec = importlib.util.find_spec("clusterucb_demo")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return _CHECKOUT


def require_demo(*names: str) -> Path:
    """The demo folder, after checking it holds `names`; a one-line how-to when it does not."""
    folder = find_demo_dir()
    missing = [n for n in names if not (folder / n).exists()]
    if not folder.is_dir() or missing:
        what = f"{folder} lacks {', '.join(missing)}" if folder.is_dir() else f"no {folder}"
        raise FileNotFoundError(
            f"the bundled demo was not found ({what}): install the clusterucb-studio wheel "
            f"(it ships the demo), or set {ENV} to the sample_data/ folder of a checkout")
    return folder
