"""The one way to open a pool: parse it, or memory-map the workspace's cache of it.

`pool.py` parses, `pool_cache.py` keeps the parsed table in a workspace; this module sits
above both, so neither has to know the other.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from clusterucb_core.data import sources
from clusterucb_core.data.pool import Pool, check_pool, parse_pool
from clusterucb_core.data.pool_cache import cached_pool
from clusterucb_core.data.schema import SCHEMA


def load_pool(path: str | Path, format: str = "auto", shape: str = "auto",
              strict: bool = False, cache_dir: str | Path | None = None,
              id_field: str | None = None, source_field: str | None = None) -> Pool:
    """Read a pool file (or `datasets` folder) into the columnar table; see module doc.

    With `cache_dir` (a workspace's pool cache) the table is parsed once, written there and
    memory-mapped by every later call while the file is unchanged (`pool_cache.py`).
    `id_field` / `source_field` name the column holding each record's id / source, for pools
    that do not use `id` and `dataset`/`source`; a named column no record has is an error."""
    path = sources.resolve(path)  # a Hub dataset or a .gz file: its local, plain copy
    if cache_dir is not None:
        return cached_pool(path, cache_dir, format=format, shape=shape, strict=strict,
                           id_field=id_field, source_field=source_field)
    parsed = parse_pool(path, format, shape, id_field=id_field, source_field=source_field)
    pool = Pool(data=pa.Table.from_batches(parsed.batches, SCHEMA), **parsed.meta())
    check_pool(pool, strict)
    return pool
