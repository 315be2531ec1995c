"""Shard stores and their merge: distributed feature runs that are safe on any file system.

Each torchrun rank or Ray worker writes only its own store,

    W/features/<name>/shards/<shard>/   a FeatureStore with the main store's identity and shape
                                        (full-size sparse files; only its rows are written)

so no two machines ever write the same file (on a network file system two writers of one file
may overwrite each other's pages). `merge_shards` then copies every shard's rows into the main
store `W/features/<name>/` byte for byte, after checking that every row of the pool is present
exactly once (main store and shards together); it refuses, naming the row, when one is missing
or held twice. Rows are copied shard by shard and a shard is removed only once its rows are in
the main store, so a merge killed midway is finished by running it again (a row found both in
the main store and a shard with the same bytes is the trace of such a kill, not a duplicate).

Planning reads `done_anywhere`: a resumed run, with any number of ranks or workers, skips every
row already finished in the main store or in any shard.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from clusterucb_core.features.store import DONE, MANIFEST, FeatureStore
from clusterucb_core.workspace import check_name

SHARDS = "shards"
COPY_ROWS = 65536


class MergeError(ValueError):
    """The shards do not hold every row exactly once."""


def shard_path(store_path: str | Path, shard: str) -> Path:

    return Path(store_path) / SHARDS / check_name(shard, "shard name")


def shard_names(store_path: str | Path) -> list[str]:
    """Finished-creation shards of a store (folders with a manifest), sorted."""
    base = Path(store_path) / SHARDS
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / MANIFEST).exists())


def open_shard(main: FeatureStore, shard: str) -> FeatureStore:
    """The shard `shard` of `main` for writing (created with main's identity when absent)."""
    return FeatureStore.create_or_open(shard_path(main.path, shard), main.n_rows, main.dim,
                                       main.identity, dtype=main.dtype)


def _shard_done(store_path: Path, shard: str) -> np.ndarray:
    return np.load(shard_path(store_path, shard) / DONE, mmap_mode="r")


def done_anywhere(main: FeatureStore) -> np.ndarray:
    """Rows done in the main store or in any shard (a fresh boolean array)."""
    done = main.done
    for name in shard_names(main.path):
        done |= np.asarray(_shard_done(main.path, name)) != 0
    return done


def _rows_text(rows: np.ndarray, limit: int = 5) -> str:
    head = ", ".join(str(int(r)) for r in rows[:limit])
    return head + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def check_shards(main: FeatureStore, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Each shard's rows still to copy; raises MergeError unless every row of `rows` (default
    all) is present, and no row twice."""
    names = shard_names(main.path)
    in_main = main.done
    owner = np.full(main.n_rows, -1, dtype=np.int64)
    pending: dict[str, np.ndarray] = {}
    for k, name in enumerate(names):
        with FeatureStore.open(shard_path(main.path, name)) as shard:
            if shard.identity != main.identity or (shard.n_rows, shard.dim, shard.dtype) != \
                    (main.n_rows, main.dim, main.dtype):
                raise MergeError(f"shard {name!r} of {main.path} was made from other inputs "
                                 "than the store; delete it")
            held = np.flatnonzero(shard.done)
            twice = held[owner[held] >= 0]
            if len(twice):
                r = int(twice[0])
                raise MergeError(f"row {r} is in shard {names[owner[r]]!r} and in shard "
                                 f"{name!r} ({len(twice)} rows held twice: "
                                 f"{_rows_text(twice)}); refusing to merge {main.path}")
            owner[held] = k
            both = held[in_main[held]]
            for lo in range(0, len(both), COPY_ROWS):
                part = both[lo:lo + COPY_ROWS]
                same = (main._data.array[part] == shard._data.array[part]) | \
                    (np.isnan(main._data.array[part]) & np.isnan(shard._data.array[part]))
                if not same.all():
                    r = int(part[~same.all(axis=1)][0])
                    raise MergeError(f"row {r} is in the store {main.path} and, with other "
                                     f"values, in shard {name!r}; refusing to merge")
            pending[name] = held[~in_main[held]]
    absent = ~in_main & (owner < 0)
    wanted = np.arange(main.n_rows) if rows is None else np.unique(np.asarray(rows, np.int64))
    missing = wanted[absent[wanted]]
    if len(missing):
        raise MergeError(f"row {int(missing[0])} is in no shard nor in the store {main.path} "
                         f"({len(missing)} rows missing: {_rows_text(missing)}); run "
                         "`clusterucb features` again to compute them, then merge")
    return pending


def merge_shards(main: FeatureStore, rows: np.ndarray | None = None) -> int:
    """Check (every row of `rows`, default all, present once), then copy every shard into
    `main` and remove it; returns the rows copied."""
    pending = check_shards(main, rows)
    copied = 0
    for name, held in pending.items():
        with FeatureStore.open(shard_path(main.path, name)) as shard:
            for lo in range(0, len(held), COPY_ROWS):
                main.copy_rows(shard, held[lo:lo + COPY_ROWS])
            copied += len(held)
        shutil.rmtree(shard_path(main.path, name))
    base = main.path / SHARDS
    if base.is_dir() and not any(base.iterdir()):
        base.rmdir()
    return copied


__all__ = ["SHARDS", "MergeError", "check_shards", "done_anywhere", "merge_shards",
           "open_shard", "shard_names", "shard_path"]
