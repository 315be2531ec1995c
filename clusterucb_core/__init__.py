"""ClusterUCB Studio's engine: gradient features, clusters, and a UCB bandit over them.

Never imports streamlit: the app, the CLI and a `torchrun` job all drive the same modules.
The public API (README "Python API") is imported lazily, so `import clusterucb_core` stays
cheap until one of its names is used:

    from clusterucb_core import ClusterUCB, SphericalKMeans, Pipeline, load_pool, load_target
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {"ClusterUCB": "api", "SphericalKMeans": "api", "Pipeline": "pipeline",
           "RunConfig": "config", "load_config": "config", "load_pool": "pool",
           "load_target": "targets", "open_run": "runs"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
