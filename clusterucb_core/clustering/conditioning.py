"""Feature conditioning before spherical k-means (docs/METHOD.md section 3).

LM hidden states share one dominant direction, so raw cosines between them are all close to 1
and spherical k-means splits the pool along whatever is left of that direction. Removing the
pool's mean ("center") and optionally rescaling the top principal directions to unit variance
("whiten", keeping `dim` of them) gives cosines that follow content. The transform is fitted
once on the pool and stored beside the clusters, so reopening (or assigning a new row) applies
exactly the same map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clusterucb_core.features.rowsource import as_source, chunk_rows_for

KINDS = ("none", "center", "whiten")
FILE = "conditioning.npz"


@dataclass
class Conditioner:
    kind: str = "none"
    mean: np.ndarray | None = None  # [d]
    components: np.ndarray | None = None  # [d, r]: principal directions scaled by 1/sqrt(var)

    def out_dim(self, dim: int) -> int:
        """Columns of the transformed rows, for input rows of `dim` columns."""
        return dim if self.components is None else int(self.components.shape[1])

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Rows conditioned and L2-normalised (float32); non-finite rows stay NaN, zero rows
        stay zero."""
        X = np.asarray(X, dtype=np.float32)
        bad = ~np.isfinite(X).all(axis=1)
        Y = np.where(bad[:, None], 0.0, X).astype(np.float32)
        Y = Y / np.maximum(np.linalg.norm(Y, axis=1, keepdims=True), 1e-30)
        if self.mean is not None:
            Y = Y - self.mean
        if self.components is not None:
            Y = Y @ self.components
        Y = Y / np.maximum(np.linalg.norm(Y, axis=1, keepdims=True), 1e-30)
        Y[bad] = np.nan
        return Y.astype(np.float32)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / FILE
        arrays = {"kind": np.array(self.kind)}
        if self.mean is not None:
            arrays["mean"] = self.mean
        if self.components is not None:
            arrays["components"] = self.components
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Conditioner:
        """The stored transform, or the identity ("none") when the clusters have none."""
        path = Path(folder) / FILE
        if not path.exists():
            return cls()
        with np.load(path, allow_pickle=False) as z:
            return cls(kind=str(z["kind"]), mean=z["mean"] if "mean" in z else None,
                       components=z["components"] if "components" in z else None)


def fit(X: Any, kind: str = "center", dim: int = 64, sample: int = 20_000,
        seed: int = 0) -> Conditioner:
    """Fit the transform on the finite rows of `X` (an array or a FeatureStore, read chunk by
    chunk, so a pool larger than memory can be centred; the PCA of "whiten" uses a seeded
    sample of at most `sample` rows). `dim`: principal directions kept when whitening."""
    if kind not in KINDS:
        raise ValueError(f"conditioning must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "none":
        return Conditioner()
    if dim < 1:
        raise ValueError(f"whitening dim must be >= 1, got {dim}")
    src = as_source(X)
    total = np.zeros(src.dim)
    finite = np.zeros(src.n_rows, dtype=bool)
    for start, chunk in src.chunks(chunk_rows_for(src.dim)):
        V, ok = _unit(chunk)
        total += V[ok].sum(axis=0, dtype=np.float64)
        finite[start:start + len(chunk)] = ok
    ok = np.flatnonzero(finite)
    if len(ok) == 0:
        raise ValueError("no finite feature row to fit the conditioning on")
    mean = (total / len(ok)).astype(np.float32)
    if kind == "center":
        return Conditioner("center", mean=mean)
    rng = np.random.default_rng(seed)
    rows = ok if len(ok) <= sample else np.sort(rng.choice(ok, sample, replace=False))
    S = (_unit(src.take(rows))[0] - mean).astype(np.float64)
    _, sv, vt = np.linalg.svd(S, full_matrices=False)
    r = int(min(dim, vt.shape[0]))
    var = (sv[:r] ** 2) / max(len(S) - 1, 1)
    comps = (vt[:r].T / np.sqrt(np.maximum(var, 1e-12))).astype(np.float32)
    return Conditioner("whiten", mean=mean, components=comps)


def _unit(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows scaled to unit norm, finite mask); the rows are as Conditioner.transform sees
    them before conditioning."""
    X = np.asarray(X, dtype=np.float32)
    ok = np.isfinite(X).all(axis=1)
    V = np.where(ok[:, None], X, 0.0).astype(np.float32)
    return V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-30), ok


class ConditionedRows:
    """A feature store (or array) seen through a Conditioner, read chunk by chunk: what
    k-means and the K rules take when the conditioned pool would not fit in memory."""

    def __init__(self, source: Any, cond: Conditioner):
        self.source = as_source(source)
        self.cond = cond
        self.n_rows = self.source.n_rows
        self.dim = cond.out_dim(self.source.dim)

    def read(self, rows: np.ndarray | None = None) -> np.ndarray:
        X = self.source.read_all() if rows is None else self.source.take(rows)
        return self.cond.transform(X)


def conditioned(source: Any, cond: Conditioner) -> Any:
    """`source` itself when the transform is the identity, else its conditioned rows."""
    return source if cond.kind == "none" else ConditionedRows(source, cond)
