"""Background tasks the app starts through `clusterucb_core.jobs` (run in a child process).

Thin wiring of engine functions to a workspace; no streamlit here (the job process imports
this module). Each takes JSON-able arguments and a `progress(done, total, message)` callback.
Feature extraction and warm-up run the `clusterucb` commands themselves (`jobs.run_command`),
so the app and the CLI produce the same files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clusterucb_core import atomic, jobs
from clusterucb_core.workspace import Workspace

Progress = Callable[..., None]
SCORES_DIR = "scores"


def _pool(ws: Workspace) -> Any:
    from clusterucb_core.pool import load_pool

    ref = ws.meta().get("pool") or {}
    if isinstance(ref, str):
        ref = {"path": ref}
    if not ref.get("path"):
        raise FileNotFoundError("the workspace has no pool; choose one on the Pool page")
    return load_pool(ref["path"], format=ref.get("format", "auto"), shape=ref.get("shape", "auto"))


def cluster(workspace: str, features: str, k: int = 0, seed: int = 0, max_iter: int = 100,
            tol: float = 1e-4, minibatch: bool = False, name: str | None = None,
            scan: bool = True, progress: Progress | None = None) -> dict[str, Any]:
    """Spherical k-means on a feature store (K from a scan when k == 0), with summaries."""
    from clusterucb_core.clustering import (cluster_features, k_scan, pick_k, save_clusters,
                                            summarize_clusters)
    from clusterucb_core.store import FeatureStore

    ws = Workspace.open(workspace)
    store = FeatureStore.open(ws.features(features))
    if not store.complete:
        raise ValueError(f"the feature store {features!r} is not complete "
                         f"({store.n_done}/{store.n_rows} rows); resume its job first")
    pool = _pool(ws)
    if len(pool.table) != store.n_rows:
        raise ValueError(f"the pool has {len(pool.table)} rows but the features {features!r} "
                         f"have {store.n_rows}; recompute the features for this pool")
    scan_df = None
    if scan or k <= 0:
        if progress:
            progress(0, 3, "scanning K on a sample")
        scan_df = k_scan(store, seed=seed)
        if k <= 0:
            k = pick_k(scan_df)
    if progress:
        progress(1, 3, f"clustering with K={k}")
    res = cluster_features(store, k, seed=seed, max_iter=max_iter, tol=tol, minibatch=minibatch)
    if progress:
        progress(2, 3, "summarising clusters (keywords, examples)")
    summary = summarize_clusters(pool.table, res.labels, store, res.centroids, seed=seed)
    name = name or f"k{k}-{features}"[:100]
    from clusterucb_core.config import ClusterSpec

    save_clusters(ws, name, res, features_fingerprint=store.fingerprint,
                  spec=ClusterSpec(k=k, seed=seed, max_iter=max_iter, tol=tol,
                                   minibatch=minibatch),
                  features_name=features, summary=summary, kscan=scan_df)
    ws.update_meta(clusters=name)
    if progress:
        progress(3, 3, f"saved clusters {name!r}")
    return {"clusters": name, "k": int(k)}


def umap_map(workspace: str, features: str, seed: int = 0,
             progress: Progress | None = None) -> dict[str, Any]:
    """The 2-D map of a feature store (cached in W/maps/)."""
    from clusterucb_core.embedding2d import compute_map
    from clusterucb_core.store import FeatureStore

    ws = Workspace.open(workspace)
    store = FeatureStore.open(ws.features(features))
    res = compute_map(store, ws=ws, seed=seed, progress=progress)
    return {"map": str(res.path), "note": res.note()}


def exhaustive(workspace: str, features_argv: list[str], store: str,
               progress: Progress | None = None) -> dict[str, Any]:
    """Score every row: reward features for all rows (+ target features), then influence.

    Writes W/scores/exhaustive.npy (NaN for flagged rows) and exhaustive.json (provenance).
    The features land in the same store the lazy oracle uses, so nothing is computed twice.
    """
    from clusterucb_core.store import FeatureStore

    ws = Workspace.open(workspace)
    code = jobs.run_command(list(features_argv))
    if code != 0:
        raise RuntimeError(f"computing the features failed (exit code {code}); see the log")
    if progress:
        progress(0, 1, "scoring every row against the target")
    fs = FeatureStore.open(ws.features(store))
    target_dir = _target_dir(ws, fs)
    scores = score_store(fs, target_dir)
    out = ws.root / SCORES_DIR
    out.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(out / "exhaustive.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, scores)
    atomic.write_json(out / "exhaustive.json", {
        "store": store, "store_fingerprint": fs.fingerprint, "target": str(target_dir),
        "n_rows": int(len(scores)), "n_nan": int(np.isnan(scores).sum())})
    if progress:
        progress(1, 1, f"scored {len(scores):,} rows")
    return {"n_rows": int(len(scores)), "n_nan": int(np.isnan(scores).sum())}


def _target_dir(ws: Workspace, fs: Any) -> Path:
    """The target features made with the same checkpoint and projection as `fs` (newest)."""
    from clusterucb_core.features import TARGET_MANIFEST

    ckpt = fs.manifest.get("checkpoint_dir") or fs.manifest.get("checkpoint")
    cands = []
    for name in ws.list("targets"):
        man = ws.targets(name) / TARGET_MANIFEST
        if man.exists():
            cands.append((man.stat().st_mtime, ws.targets(name), json.loads(man.read_text())))
    if not cands:
        raise FileNotFoundError("no target features in the workspace; choose a target and run "
                                "the reward features again")
    cands.sort(key=lambda c: c[0], reverse=True)
    if ckpt:
        for _, path, man in cands:
            if str(man.get("checkpoint_dir")) == str(ckpt):
                return path
    return cands[0][1]


def read_target(target_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from clusterucb_core.features import TARGET_FEATURES, TARGET_SUBTASKS

    return (np.load(target_dir / TARGET_FEATURES).astype(np.float32),
            np.load(target_dir / TARGET_SUBTASKS).astype(np.int64))


def score_store(fs: Any, target_dir: Path) -> np.ndarray:
    from clusterucb_core.influence import influence_scores

    feats, ids = read_target(target_dir)
    scores = np.full(fs.n_rows, np.nan)
    ok = ~np.asarray(fs.flagged, dtype=bool)
    rows = np.flatnonzero(ok)
    for lo in range(0, len(rows), 65536):
        part = rows[lo:lo + 65536]
        scores[part] = influence_scores(fs.read(part), feats, ids)
    return scores
