"""Feature rows as one readable thing: a plain array, a memmap, or a FeatureStore.

Everything that streams feature rows (k-means, the K scan, summaries, the 2-D map) reads them
through a `RowSource` in float32 chunks, and makes them unit length with `normalize_rows`, the
project's one L2 normaliser.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

_EPS_NORM = 1e-12

class RowSource:
    """Uniform read access to feature rows: chunks in order, or a sorted subset.

    Wraps a 2-D NumPy array (a ``np.memmap`` included; nothing is read until asked) or a
    FeatureStore-like object with ``n_rows``, ``dim`` and ``read(rows)``. Rows come back as
    float32 whatever the stored dtype.
    """

    def __init__(self, data: Any):
        self.data = data
        if isinstance(data, np.ndarray):
            if data.ndim != 2:
                raise ValueError(f"features must be a 2-D array, got shape {data.shape}")
            self.n_rows, self.dim = int(data.shape[0]), int(data.shape[1])
            self.fingerprint: str | None = None
            self._store = False
        elif hasattr(data, "read") and hasattr(data, "n_rows") and hasattr(data, "dim"):
            self.n_rows, self.dim = int(data.n_rows), int(data.dim)
            self.fingerprint = getattr(data, "fingerprint", None)
            self._store = True
            done = getattr(data, "done", None)
            if done is not None:
                missing = int(np.size(done) - np.count_nonzero(done))
                if missing:
                    raise ValueError(
                        f"feature store {getattr(data, 'path', '')} is incomplete: {missing} of "
                        f"{self.n_rows} rows not computed yet; finish `clusterucb features` "
                        "first (it resumes where it stopped)")
        else:
            raise TypeError("features must be a 2-D NumPy array or a FeatureStore, got "
                            f"{type(data).__name__}")

    def chunk(self, start: int, stop: int) -> np.ndarray:
        if self._store:
            return np.asarray(self.data.read(np.arange(start, stop)), dtype=np.float32)
        return np.asarray(self.data[start:stop], dtype=np.float32)

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if self._store:
            return np.asarray(self.data.read(rows), dtype=np.float32)
        return np.asarray(self.data[rows], dtype=np.float32)

    def chunks(self, size: int) -> Iterable[tuple[int, np.ndarray]]:
        for start in range(0, self.n_rows, size):
            yield start, self.chunk(start, min(start + size, self.n_rows))

    def read_all(self) -> np.ndarray:
        if not self._store:
            return np.asarray(self.data, dtype=np.float32)
        return np.asarray(self.data.read(None), dtype=np.float32)


def as_source(data: Any) -> RowSource:
    return data if isinstance(data, RowSource) else RowSource(data)


def normalize_rows(x: Any) -> tuple[Any, Any]:
    """(unit rows as float32, valid mask): the project's one L2 normaliser.

    Takes a NumPy array or a torch tensor and answers in the same kind. Rows that have no
    direction (any NaN/inf, or norm <= 1e-12) come back as zeros and are False in the mask."""
    if not isinstance(x, np.ndarray) and hasattr(x, "detach"):  # a torch tensor
        import torch

        x = x.to(torch.float32)
        finite = torch.isfinite(x).all(dim=1)
        x = torch.where(finite[:, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        norms = torch.linalg.vector_norm(x.double(), dim=1)
        valid = finite & (norms > _EPS_NORM)
        scale = torch.where(valid, 1.0 / torch.where(valid, norms, torch.ones_like(norms)),
                            torch.zeros_like(norms)).to(torch.float32)
        return x * scale[:, None], valid
    x = np.asarray(x, dtype=np.float32)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        x = np.where(finite[:, None], x, 0.0).astype(np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    valid = finite & (norms > _EPS_NORM)
    scale = np.where(valid, 1.0 / np.where(valid, norms, 1.0), 0.0).astype(np.float32)
    return x * scale[:, None], valid


def chunk_rows_for(dim: int, target_bytes: int = 1 << 25) -> int:
    """Rows per streamed chunk so one float32 chunk is about ``target_bytes`` (32 MB): 32K rows
    of 256 dims, 1K rows of 8192."""
    return int(max(256, target_bytes // (4 * max(int(dim), 1))))


def load_normalized(src: RowSource, chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(the valid rows, normalised, float32 [n_valid, d]; valid mask [N]), filled chunk by
    chunk into one array: peak memory is that array plus one chunk (a float16 store is never
    converted whole)."""
    chunk = chunk or chunk_rows_for(src.dim)
    out = np.empty((src.n_rows, src.dim), dtype=np.float32)
    valid = np.zeros(src.n_rows, dtype=bool)
    w = 0
    for start, raw in src.chunks(chunk):
        xs, ok = normalize_rows(raw)
        valid[start:start + len(raw)] = ok
        m = int(ok.sum())
        out[w:w + m] = xs[ok] if m < len(xs) else xs
        w += m
    return out[:w], valid


def take_chunked(src: RowSource, rows: np.ndarray, size: int) -> np.ndarray:
    """Rows `rows` of `src` read `size` at a time into one float32 array."""
    out = np.empty((len(rows), src.dim), dtype=np.float32)
    for s in range(0, len(rows), size):
        out[s:s + size] = src.take(rows[s:s + size])
    return out
