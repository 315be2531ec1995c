"""The workspace's exhaustive score table (every row scored: LESS without the bandit), and
when it still holds.

`W/scores/exhaustive.npy` (one score per pool row) is written with a side file
`exhaustive.json` recording what made it: the target's fingerprint and the fingerprint of
every reward feature store it was scored from. The table holds for a workspace while that
target is the workspace's and each of those stores is still there, made from this pool. The
check reads files only (no model), so the pages and the pipeline share it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from clusterucb_core.config import fingerprint
from clusterucb_core.workspace import Workspace


def identity(ws: Workspace) -> dict[str, Any] | None:
    """What the saved table was made from (its side file), or None when there is none."""
    path = ws.scores()
    side = path.with_suffix(".json")
    if not (path.exists() and side.exists()):
        return None
    try:
        return json.loads(side.read_text()).get("identity") or {}
    except (OSError, ValueError):
        return None


def saved_exhaustive(ws: Workspace, pool_fingerprint: str, target_fingerprint: str,
                     n_rows: int, stores: list[str] | None = None) -> np.ndarray | None:
    """The saved exhaustive scores when they are this pool's and this target's, else None.

    `stores`: the reward stores the caller would score from (the pipeline's); the table must
    have been made from exactly those. Without it, every store the table names must still be
    in the workspace and made from this pool."""
    ident = identity(ws)
    if ident is None or ident.get("target") != target_fingerprint:
        return None
    made_from = list(ident.get("stores") or [])
    if stores is not None and made_from != list(stores):
        return None
    present = {}
    for name in ws.list("features"):
        manifest = ws.features(name) / "manifest.json"
        store_ident = json.loads(manifest.read_text()).get("identity") \
            if manifest.exists() else None
        if isinstance(store_ident, dict):
            present[fingerprint(store_ident)] = store_ident
    for fp in made_from:
        if fp not in present or present[fp].get("pool") != pool_fingerprint:
            return None
    arr = np.load(ws.scores(), mmap_mode="r")
    if arr.ndim != 1 or len(arr) != n_rows:
        return None
    return np.asarray(arr, dtype=np.float64)
