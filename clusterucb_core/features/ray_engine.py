"""Feature computation on a Ray cluster (Ray Data): for clusters of GPU machines.

`compute_with_ray(engine)` plans the missing rows the way one process would (`engine.plan`:
whole chunks, so every row is batched exactly as in a single-process run and the store ends
bit-identical), turns the plan into a Ray dataset of row groups and `map_batches` it over a pool
of actors. Each actor holds its own `FeatureEngine` on one GPU (or CPU cores), memory-maps the
workspace's pool cache (the pool is never shipped through Ray's object store) and writes its
own shard store; the driver merges the shards at the end (shards.py).

A worker that dies is restarted by Ray and its task retried. A retried group first drops the
rows already done in any shard, so a worker killed after writing a group but before reporting
it leaves no duplicate, and the merge checks every row is present exactly once.

`ray.init()` joins the cluster named by RAY_ADDRESS when it is set, else starts a local one.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from clusterucb_core.data.pool_cache import open_entry
from clusterucb_core.features.engine import FeatureEngine
from clusterucb_core.features.shards import merge_shards
from clusterucb_core.runtime.progress import Progress, report


class _FeatureActor:
    """One Ray actor: a FeatureEngine over the memory-mapped pool, writing its own shard."""

    def __init__(self, entry: str, pool_path: str, signature: list, model_spec: Any,
                 lora_spec: Any, checkpoint_dir: str | None, feature_spec: Any,
                 store_path: str, crash_marker: str | None = None):

        pool = open_entry(Path(entry), Path(pool_path), signature)
        self.engine = FeatureEngine(pool, model_spec, lora_spec, checkpoint_dir, feature_spec,
                                    store_path)
        self.shard = f"ray-{uuid.uuid4().hex[:12]}"
        self.crash_marker = crash_marker

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n_done = []
        for rows in batch["rows"]:
            rows = np.asarray(rows, dtype=np.int64)
            self.engine.compute(rows, progress=_quiet, rank=0, world=1, shard=self.shard)
            n_done.append(len(rows))  # done now: here, or in a shard before a retry
            if self.crash_marker and not os.path.exists(self.crash_marker):
                # fault injection for tests: die once after writing, before reporting
                Path(self.crash_marker).touch()
                os._exit(1)
        return {"n": np.asarray(n_done, dtype=np.int64)}


def _quiet(*args: Any, **kwargs: Any) -> None:
    """Progress sink of an actor (the driver reports progress)."""


def _resources() -> tuple[float, int]:
    """(GPUs per actor, default actor count) from the cluster's resources."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    return (1.0, gpus) if gpus else (0.0, 2)


def compute_with_ray(engine: FeatureEngine, rows: np.ndarray | None = None,
                     workers: int | None = None, progress: Progress | None = None,
                     crash_marker: str | None = None) -> int:
    """Compute the missing rows among `rows` (default all) of `engine`'s store with Ray
    actors, then merge their shards; returns the number of rows computed.

    The engine's pool must come from a workspace's pool cache (`load_pool(cache_dir=...)`),
    which each actor memory-maps. `crash_marker` (tests) makes one actor die once after
    writing its first group, before reporting it."""
    import ray


    pool = engine.table
    entry = getattr(pool, "cache_entry", None)
    if entry is None:
        raise ValueError("the Ray engine reads the pool from the workspace's pool cache; load "
                         "it with load_pool(path, cache_dir=ws.pool_cache())")
    store = engine.store()
    groups = engine.plan(rows)
    total = int(sum(len(g) for g in groups))
    report(progress, 0, total, f"rows 0/{total}")
    if groups:
        if not ray.is_initialized():
            ray.init(address=os.environ.get("RAY_ADDRESS") or None,
                     log_to_driver=False, include_dashboard=False)
        gpus, default_workers = _resources()
        n = max(1, min(int(workers or default_workers), len(groups)))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the caller's progress reports the rows
        ds = ray.data.from_items([{"rows": g} for g in groups], override_num_blocks=len(groups))
        spec = engine.spec
        out = ds.map_batches(
            _FeatureActor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=n),
            num_gpus=gpus, num_cpus=0 if gpus else 1,
            fn_constructor_kwargs=dict(
                entry=str(entry), pool_path=str(pool.path), signature=pool.signature,
                model_spec=engine.model_spec, lora_spec=engine.lora_spec,
                checkpoint_dir=None if engine.checkpoint_dir is None
                else str(engine.checkpoint_dir),
                feature_spec=spec, store_path=str(engine.store_path),
                crash_marker=crash_marker))
        done = 0
        for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
            done += int(batch["n"].sum())
            report(progress, min(done, total), total, f"rows {min(done, total)}/{total}")
    merge_shards(store, rows)
    return total


__all__ = ["compute_with_ray"]
