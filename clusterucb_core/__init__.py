"""ClusterUCB Studio's engine: gradient features, clusters, and a UCB bandit over them.

Never imports streamlit: the app, the CLI and a `torchrun` job all drive the same modules.

The public API (README "Python API") is imported lazily, so `import clusterucb_core` stays
cheap until one of its names is used:

    from clusterucb_core import ClusterUCB, SphericalKMeans, Pipeline, load_pool, load_target

On CUDA, PyTorch's allocator grows its segments in place (`expandable_segments:True`) unless
the user set PYTORCH_CUDA_ALLOC_CONF: batches of changing token counts otherwise fragment the
cache until a batch that fits in total memory fails. It is set here, before any module of the
package can initialise CUDA.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

__version__ = "0.1.0"

_PUBLIC = {"ClusterUCB": "api", "SphericalKMeans": "api", "RDSPlus": "api",
           "Pipeline": "pipeline",
           "RunConfig": "config", "load_config": "config", "load_pool": "data.load",
           "load_target": "data.targets", "open_run": "selection.runs"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
