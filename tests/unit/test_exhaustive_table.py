"""The workspace's exhaustive table holds only for the pool, target and stores it was made from."""

from __future__ import annotations

import json

import numpy as np

from clusterucb_core.config import fingerprint
from clusterucb_core.selection.exhaustive import saved_exhaustive
from clusterucb_core.workspace import Workspace


def _workspace(tmp_path, pool_fp="P"):
    ws = Workspace.open(tmp_path / "w")
    store_ident = {"pool": pool_fp, "kind": "gradient"}
    (ws.features("g")).mkdir(parents=True)
    (ws.features("g") / "manifest.json").write_text(json.dumps({"identity": store_ident}))
    ws.scores().parent.mkdir(parents=True)
    np.save(ws.scores(), np.arange(4, dtype=np.float64))
    ws.scores().with_suffix(".json").write_text(json.dumps(
        {"identity": {"target": "T", "stores": [fingerprint(store_ident)]}}))
    return ws, fingerprint(store_ident)


def test_the_table_holds_for_its_pool_target_and_stores(tmp_path):
    ws, store = _workspace(tmp_path)
    assert saved_exhaustive(ws, "P", "T", 4).tolist() == [0, 1, 2, 3]
    assert saved_exhaustive(ws, "P", "T", 4, stores=[store]) is not None
    assert saved_exhaustive(ws, "P", "other target", 4) is None
    assert saved_exhaustive(ws, "other pool", "T", 4) is None
    assert saved_exhaustive(ws, "P", "T", 5) is None  # another pool size
    assert saved_exhaustive(ws, "P", "T", 4, stores=["another store"]) is None


def test_a_removed_store_or_missing_side_file_voids_it(tmp_path):
    ws, _ = _workspace(tmp_path)
    (ws.features("g") / "manifest.json").unlink()
    assert saved_exhaustive(ws, "P", "T", 4) is None
    ws.scores().with_suffix(".json").unlink()
    assert saved_exhaustive(ws, "P", "T", 4) is None
