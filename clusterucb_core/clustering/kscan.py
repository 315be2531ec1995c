"""Choosing K: cluster a sample for each candidate K and score it (docs/METHOD.md section 3)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from clusterucb_core.clustering.kmeans import spherical_kmeans
from clusterucb_core.features.rowsource import (
    as_source,
    chunk_rows_for,
    normalize_rows,
    take_chunked,
)
from clusterucb_core.runtime.progress import Progress

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


DEFAULT_KS = (2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 25, 32, 40, 50, 64)
SILHOUETTE_TIE = 0.01


def default_ks(n_valid: int) -> list[int]:
    """Candidate K values for a pool: DEFAULT_KS up to about sqrt(N) (and < N)."""
    cap = max(2, min(n_valid - 1, int(math.sqrt(max(n_valid, 1))) + 1))
    ks = [k for k in DEFAULT_KS if k <= cap]
    return ks or [min(2, max(n_valid - 1, 1))]


def k_scan(X: Any, ks: Sequence[int] | None = None, sample: int = 10_000, seed: int = 0,
           silhouette_sample: int = 4_000, max_iter: int = 50, tol: float = 1e-4,
           device: str = "auto", progress: Progress | None = None) -> pd.DataFrame:
    """Cluster a random sample of rows for each K and score it.

    Returns a DataFrame with columns ``k``, ``inertia`` (sum of 1 - cos on the sample),
    ``silhouette`` (cosine metric, on at most ``silhouette_sample`` of the sample's rows; NaN
    when undefined, e.g. K=1) and ``chosen`` (the row :func:`pick_k` picks).
    """
    import pandas as pd
    from sklearn.metrics import silhouette_score

    src = as_source(X)
    rng = np.random.default_rng(seed)
    n = src.n_rows
    rows = np.sort(rng.choice(n, size=min(n, int(sample)), replace=False))
    S, ok = normalize_rows(take_chunked(src, rows, chunk_rows_for(src.dim)))
    S = S[ok]
    if ks is None:
        ks = default_ks(len(S))
    ks = sorted({int(k) for k in ks})
    sil_rows = (np.sort(rng.choice(len(S), size=silhouette_sample, replace=False))
                if len(S) > silhouette_sample else np.arange(len(S)))
    records = []
    for i, k in enumerate(ks):
        if k < 1 or k > len(S):
            continue
        res = spherical_kmeans(S, k, seed=seed, max_iter=max_iter, tol=tol, device=device)
        lab = res.labels[sil_rows]
        sil = float("nan")
        if 2 <= len(np.unique(lab)) <= len(sil_rows) - 1:
            sil = float(silhouette_score(S[sil_rows], lab, metric="cosine"))
        records.append({"k": k, "inertia": res.inertia, "silhouette": sil})
        if progress is not None:
            progress(i + 1, len(ks), f"K={k}: silhouette {sil:.3f}")
    df = pd.DataFrame(records, columns=["k", "inertia", "silhouette"])
    chosen = pick_k(df) if len(df) else None
    df["chosen"] = df["k"] == chosen
    df.attrs["n_sample"] = int(len(S))
    df.attrs["rule"] = (f"smallest K whose silhouette is within {SILHOUETTE_TIE} of the best")
    return df


def pick_k(scan: pd.DataFrame, tie: float = SILHOUETTE_TIE) -> int:
    """The default rule: the best cosine silhouette, where scores within ``tie`` of the best
    count as tied and the smaller K wins (fewer, larger arms are cheaper for the bandit's cold
    start). Without any finite silhouette, the K at the inertia curve's elbow (largest
    second difference) -- or the smallest K if there are fewer than three."""
    sil = scan["silhouette"].to_numpy(dtype=float)
    ks = scan["k"].to_numpy()
    finite = np.isfinite(sil)
    if finite.any():
        best = np.nanmax(sil)
        return int(ks[finite & (sil >= best - tie)].min())
    if len(ks) >= 3:
        order = np.argsort(ks)
        inert = scan["inertia"].to_numpy(dtype=float)[order]
        second = inert[:-2] - 2 * inert[1:-1] + inert[2:]
        return int(ks[order][1 + int(np.argmax(second))])
    return int(ks.min())
