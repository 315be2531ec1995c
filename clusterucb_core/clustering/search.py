"""Finding rows: text or regular-expression search over the pool, and "more like this"
(nearest neighbours by cosine on the cluster features).

Both return pool row indices, so the app can highlight them on the map, list them in a table
or pin/tag them, and both stream over big inputs: texts one by one, features in chunks of a
memory-mapped `FeatureStore` (never the whole matrix in memory at once).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from clusterucb_core.clustering.summaries import row_text

MODES = ("text", "regex")
_CHUNK = 65_536


def compile_query(query: str, mode: str = "text", case: bool = False) -> re.Pattern[str]:
    """The pattern for `query`: a literal substring (mode "text") or a regular expression
    (`^` and `$` match at every line: a row's text is its id, source and turns, one a line)."""
    if mode not in MODES:
        raise ValueError(f"search mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not str(query).strip():
        raise ValueError("the search is empty: type some text")
    flags = 0 if case else re.IGNORECASE
    if mode == "text":
        return re.compile(re.escape(str(query)), flags)
    try:
        return re.compile(str(query), flags | re.MULTILINE)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression {query!r}: {exc}") from None


def search_texts(texts: Iterable[str], query: str, mode: str = "text", case: bool = False,
                 limit: int | None = None) -> np.ndarray:
    """Indices of the texts that match (in order; at most `limit`)."""
    pat = compile_query(query, mode, case)
    hits: list[int] = []
    for i, t in enumerate(texts):
        if pat.search(str(t)):
            hits.append(i)
            if limit is not None and len(hits) >= limit:
                break
    return np.asarray(hits, dtype=np.int64)


def pool_texts(pool: Any) -> list[str]:
    """The searchable text of every pool row: id, source and the chat's turns, one a line.
    `pool` is a `Pool` (read through its columns, a block of chats at a time) or a table."""

    if hasattr(pool, "messages") and callable(pool.messages):
        ids, srcs = pool.column("id"), pool.column("source")
        out: list[str] = []
        for lo in range(0, len(ids), _CHUNK):
            chats = pool.messages(np.arange(lo, min(lo + _CHUNK, len(ids))))
            out += [f"{i}\n{s}\n{row_text(m)}" for i, s, m in
                    zip(ids[lo:lo + _CHUNK], srcs[lo:lo + _CHUNK], chats)]
        return out
    ids = pool["id"].astype(str).to_numpy()
    srcs = pool["source"].astype(str).to_numpy()
    body = [row_text(m) for m in pool["messages"].to_numpy()]
    return [f"{i}\n{s}\n{b}" for i, s, b in zip(ids, srcs, body)]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, x / norms, np.nan)


def _chunks(features: Any) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    if hasattr(features, "iter_chunks"):  # a FeatureStore
        yield from features.iter_chunks(_CHUNK)
        return
    arr = np.asarray(features)
    for lo in range(0, len(arr), _CHUNK):
        yield np.arange(lo, min(lo + _CHUNK, len(arr))), np.asarray(arr[lo:lo + _CHUNK],
                                                                    dtype=np.float32)


def _row(features: Any, r: int) -> np.ndarray:
    if hasattr(features, "read"):
        return features.read(np.array([r]))[0]
    return np.asarray(features[r], dtype=np.float32)


def neighbours(features: Any, rows: Sequence[int], k: int = 20,
               exclude_query: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The `k` rows most similar to `rows` (cosine to the normalised mean of their unit
    features), best first: (row indices, cosines). Rows without features (NaN or all zero)
    are never returned; ties are broken by the lower row index."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    if not len(rows):
        raise ValueError("more like this: choose at least one row")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q = _unit(np.stack([_row(features, int(r)) for r in rows]))
    q = q[np.isfinite(q).all(axis=1)]
    if not len(q):
        raise ValueError("the chosen rows have no features, so nothing is similar to them")
    q = _unit(q.mean(axis=0))
    best_rows = np.zeros(0, dtype=np.int64)
    best_sims = np.zeros(0, dtype=np.float32)
    for idx, feats in _chunks(features):
        sims = _unit(feats) @ q
        keep = np.isfinite(sims)
        if exclude_query:
            keep &= ~np.isin(idx, rows)
        idx, sims = idx[keep], sims[keep]
        all_rows = np.concatenate([best_rows, idx])
        all_sims = np.concatenate([best_sims, sims.astype(np.float32)])
        order = np.lexsort((all_rows, -all_sims))[:k]
        best_rows, best_sims = all_rows[order], all_sims[order]
    return best_rows, best_sims
