"""Spherical k-means over feature rows, a K scan, cluster summaries, and their workspace files.

METHOD.md section 3. Every row is L2-normalised first, so the dot product of two rows is their
cosine. A row is assigned to the centroid with the largest cosine; a centroid is the
normalised mean of its members. Against the reference code (K random seeds, 20 fixed
iterations, a crash on an empty cluster) we do:

- k-means++ seeding with the cosine distance ``1 - cos`` (for unit vectors that is half the
  squared Euclidean distance, so this is exactly the D^2 weighting of k-means++), "greedy"
  like scikit-learn: ``2 + ln K`` candidates per step, keep the one that lowers the potential
  most;
- Lloyd iterations until no centroid moves by more than ``tol`` (squared Euclidean distance
  between the old and new unit centroid, i.e. ``2 (1 - cos)``), no label changes, or
  ``max_iter``;
- an empty cluster is re-seeded at the member farthest from its own centroid (lowest cosine)
  taken from a cluster that keeps at least one member; this also runs after the final
  assignment, so a returned cluster is never empty;
- rows that cannot be normalised -- any NaN/inf, or an all-zero vector (the feature pipeline
  writes these for flagged rows that have no gradient) -- take no part in seeding or fitting
  and get the label ``-1``. Their count is ``KMeansResult.n_invalid``.

Two modes with the same result type:

- :func:`spherical_kmeans` holds the normalised rows in memory (on the GPU when there is one).
- :func:`minibatch_spherical_kmeans` never holds more than one chunk of rows: it fits on a
  random sample first, then runs exact Lloyd passes that stream the rows in chunks of
  ``batch_size`` (a float16 memmap is converted to float32 chunk by chunk), so 1M x 1024
  rows cluster in O(batch_size x dim + N) memory. Its fixed point is the same kind as the
  full mode's, so the two agree closely (see the tests).

Torch does the arithmetic on both CPU and GPU: on this project's CPU machine one assignment
plus centroid update over 100k x 256 rows took 39 ms in torch (index_add_) against 43 ms for
the best NumPy form (one-hot matmul) and 280 ms for a sort + reduceat NumPy form, so there is
one code path. The random choices come from a NumPy generator, so a seed gives the same
labels on any device up to floating-point ties.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from . import atomic

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

    from .workspace import Workspace

Progress = Callable[..., None]  # progress(done, total, message)

# ---------------------------------------------------------------------------------------------
# row sources: a plain array, a memmap, or a FeatureStore
# ---------------------------------------------------------------------------------------------

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


def normalize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit rows as float32, valid mask). Invalid rows (NaN/inf or zero) come back as zeros."""
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


def _resolve_device(device: str) -> "torch.device":
    import torch

    if device in ("auto", None):
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    return torch.device(device)


def _chunk_rows(k: int, dim: int) -> int:
    """Rows per assignment chunk so that the chunk x K similarity block stays near 64 MB."""
    return int(min(262_144, max(4_096, (1 << 24) // max(k, 1), (1 << 22) // max(dim, 1))))


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------

@dataclass
class KMeansResult:
    """labels: int64 [N] in 0..K-1, -1 for rows without usable features.
    centroids: float32 [K, d], unit norm. inertia: sum over labelled rows of ``1 - cos`` to
    their centroid. n_iter: Lloyd iterations (passes, in mini-batch mode) run."""

    labels: np.ndarray
    centroids: np.ndarray
    inertia: float
    n_iter: int
    converged: bool = False
    n_invalid: int = 0
    n_reseeded: int = 0
    mode: str = "full"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def sizes(self) -> np.ndarray:
        return np.bincount(self.labels[self.labels >= 0], minlength=self.k)


# ---------------------------------------------------------------------------------------------
# core (torch)
# ---------------------------------------------------------------------------------------------

def _assign(V: "torch.Tensor", C: "torch.Tensor", chunk: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(labels, cosine to the assigned centroid) for every row of V."""
    import torch

    n = V.shape[0]
    labels = torch.empty(n, dtype=torch.int64, device=V.device)
    best = torch.empty(n, dtype=V.dtype, device=V.device)
    for s in range(0, n, chunk):
        sims = V[s:s + chunk] @ C.T
        b, lab = sims.max(dim=1)
        labels[s:s + chunk] = lab
        best[s:s + chunk] = b
    return labels, best


def _normalize_centroids(sums: "torch.Tensor", old: "torch.Tensor") -> "torch.Tensor":
    norms = sums.norm(dim=1, keepdim=True)
    ok = norms.squeeze(1) > _EPS_NORM
    out = old.clone()
    out[ok] = sums[ok] / norms[ok]
    return out


def _kmeanspp(V: "torch.Tensor", k: int, rng: np.random.Generator, chunk: int,
              n_trials: int | None = None) -> "torch.Tensor":
    """Greedy k-means++ with distance 1 - cos; returns indices of K distinct rows of V.
    Each step scores all its candidates with one [N, trials] product (one read of V)."""
    import torch

    n = V.shape[0]
    if n_trials is None:
        n_trials = 2 + int(math.log(k))
    first = int(rng.integers(n))
    chosen = [first]
    taken = np.zeros(n, dtype=bool)
    taken[first] = True
    closest = (1.0 - V @ V[first]).clamp_(min=0.0)
    for _ in range(1, k):
        cum = torch.cumsum(closest.double(), 0)
        pot = float(cum[-1])
        if pot <= 0.0:
            # every remaining row coincides with a chosen one: pick distinct rows uniformly
            cand = rng.choice(np.flatnonzero(~taken), size=1)
        else:
            r = torch.as_tensor(rng.random(n_trials) * pot, dtype=torch.float64, device=V.device)
            cand = np.unique(torch.searchsorted(cum, r).clamp_(max=n - 1).cpu().numpy())
            cand = cand[~taken[cand]]
            if len(cand) == 0:  # only already-chosen rows drawn (duplicates): any free row
                cand = rng.choice(np.flatnonzero(~taken), size=1)
        ci = torch.as_tensor(cand, dtype=torch.int64, device=V.device)
        D = torch.empty((n, len(cand)), dtype=V.dtype, device=V.device)
        Vc = V[ci].T
        for s in range(0, n, chunk):
            torch.minimum(closest[s:s + chunk, None],
                          (1.0 - V[s:s + chunk] @ Vc).clamp_(min=0.0), out=D[s:s + chunk])
        j = int(torch.argmin(D.double().sum(dim=0)))
        best_c = int(cand[j])
        closest = D[:, j].contiguous()
        chosen.append(best_c)
        taken[best_c] = True
    return torch.as_tensor(chosen, dtype=torch.int64, device=V.device)


def _relocate_empty(labels: "torch.Tensor", best: "torch.Tensor", counts: "torch.Tensor",
                    sums: "torch.Tensor | None", V: "torch.Tensor | None",
                    rows_vectors: Callable[[np.ndarray], "torch.Tensor"] | None = None,
                    ) -> tuple[list[int], list[int], list[int]]:
    """Give every empty cluster the farthest row (lowest cosine to its own centroid) of a
    cluster that keeps at least one member. Updates labels, best, counts (and sums when given)
    in place; returns (empty clusters, rows moved, clusters they left)."""
    import torch

    empty = torch.nonzero(counts == 0).flatten().tolist()
    if not empty:
        return [], [], []
    order = torch.argsort(best).cpu().numpy()
    lab_np = labels.cpu().numpy()
    cnt = counts.cpu().numpy().astype(np.int64)
    moved, donors = [], []
    it = iter(order)
    for j in empty:
        for r in it:
            src = int(lab_np[r])
            if src >= 0 and cnt[src] >= 2:
                cnt[src] -= 1
                cnt[j] = 1
                lab_np[r] = j
                moved.append(int(r))
                donors.append(src)
                break
        else:  # cannot happen when K <= number of valid rows
            raise RuntimeError("no row left to re-seed an empty cluster")
    idx = torch.as_tensor(moved, dtype=torch.int64, device=labels.device)
    labels[idx] = torch.as_tensor(empty, dtype=torch.int64, device=labels.device)
    best[idx] = 1.0
    counts.copy_(torch.as_tensor(cnt, dtype=counts.dtype, device=counts.device))
    if sums is not None:
        vecs = V[idx] if V is not None else rows_vectors(np.asarray(moved))  # type: ignore[misc]
        vecs = vecs.to(sums.dtype)
        for vec, j, src in zip(vecs, empty, donors):
            sums[src] -= vec
            sums[j] = vec
    return empty, moved, donors


def _lloyd(V: "torch.Tensor", C: "torch.Tensor", max_iter: int, tol: float, chunk: int,
           progress: Progress | None, label: str) -> tuple["torch.Tensor", "torch.Tensor", int, bool, int]:
    import torch

    k, d = C.shape
    prev = None
    n_iter, converged, n_reseeded = 0, False, 0
    for it in range(max_iter):
        labels, best = _assign(V, C, chunk)
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros(k, d, dtype=V.dtype, device=V.device).index_add_(0, labels, V)
        empty, _, _ = _relocate_empty(labels, best, counts, sums, V)
        n_reseeded += len(empty)
        newC = _normalize_centroids(sums, C)
        shift = float(((newC - C) ** 2).sum(dim=1).max())
        changed = V.shape[0] if prev is None else int((labels != prev).sum())
        C, prev = newC, labels
        n_iter = it + 1
        if progress is not None:
            progress(n_iter, max_iter, f"{label}iteration {n_iter}: {changed} labels changed, "
                                       f"max centroid shift {shift:.2e}")
        if not empty and (shift <= tol or changed == 0):
            converged = True
            break
    return C, prev, n_iter, converged, n_reseeded


def _finalize(V: "torch.Tensor", C: "torch.Tensor", chunk: int) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Final assignment with the final centroids, guaranteed non-empty; (labels, C, inertia, reseeded)."""
    import torch

    k, d = C.shape
    labels, best = _assign(V, C, chunk)
    counts = torch.bincount(labels, minlength=k)
    empty, moved, donors = _relocate_empty(labels, best, counts, None, V)
    if empty:
        # re-seeded clusters take their row as centroid; donors' centroids are recomputed
        touched = sorted(set(empty) | set(donors))
        sums = torch.zeros(k, d, dtype=V.dtype, device=V.device).index_add_(0, labels, V)
        newC = _normalize_centroids(sums, C)
        C = C.clone()
        C[touched] = newC[touched]
    inertia = 0.0
    step = chunk_rows_for(d)  # C[labels] gathers a row per row: keep the pieces small
    for s in range(0, V.shape[0], step):
        cos = (V[s:s + step] * C[labels[s:s + step]]).sum(dim=1)
        inertia += float((1.0 - cos).double().sum())
    return labels.cpu().numpy(), C, inertia, len(empty)


def _check_k(k: int, n_valid: int, n_invalid: int) -> None:
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > n_valid:
        extra = f" ({n_invalid} rows have no usable features)" if n_invalid else ""
        raise ValueError(f"k={k} is larger than the {n_valid} rows with features{extra}")


def spherical_kmeans(X: Any, k: int, seed: int = 0, max_iter: int = 100, tol: float = 1e-4,
                     device: str = "auto", init: str | np.ndarray = "k-means++", n_init: int = 1,
                     progress: Progress | None = None) -> KMeansResult:
    """Spherical k-means with every row in memory (see the module docstring).

    X: [N, d] array (any float dtype, a memmap included) or a FeatureStore. ``init`` is
    ``"k-means++"``, ``"random"`` (K distinct random rows, the reference's seeding) or a
    [K, d] array of starting centroids. With ``n_init > 1`` the run with the lowest inertia
    wins. Rows with NaN/inf or zero vectors get label -1 and take no part.
    """
    import torch

    src = as_source(X)
    Xn, valid = load_normalized(src)
    n_invalid = int((~valid).sum())
    _check_k(k, int(valid.sum()), n_invalid)
    dev = _resolve_device(device)
    V = torch.from_numpy(Xn).to(dev)
    del Xn
    chunk = _chunk_rows(k, src.dim)
    rng = np.random.default_rng(seed)
    best_run = None
    for run in range(max(1, int(n_init))):
        label = f"run {run + 1}/{n_init}: " if n_init > 1 else ""
        C0 = _initial_centroids(V, k, init, rng, chunk)
        C, _, n_iter, converged, n_res = _lloyd(V, C0, max_iter, tol, chunk, progress, label)
        lab, C, inertia, n_res2 = _finalize(V, C, chunk)
        if best_run is None or inertia < best_run[2]:
            best_run = (lab, C, inertia, n_iter, converged, n_res + n_res2)
    lab, C, inertia, n_iter, converged, n_res = best_run  # type: ignore[misc]
    labels = np.full(src.n_rows, -1, dtype=np.int64)
    labels[valid] = lab
    return KMeansResult(labels=labels, centroids=C.float().cpu().numpy(), inertia=inertia,
                        n_iter=n_iter, converged=converged, n_invalid=n_invalid,
                        n_reseeded=n_res, mode="full",
                        info={"device": str(dev), "init": init if isinstance(init, str) else "array",
                              "n_init": int(n_init), "seed": int(seed)})


def _initial_centroids(V: "torch.Tensor", k: int, init: Any, rng: np.random.Generator,
                       chunk: int) -> "torch.Tensor":
    import torch

    if isinstance(init, str):
        if init == "k-means++":
            idx = _kmeanspp(V, k, rng, chunk)
        elif init == "random":
            idx = torch.as_tensor(rng.choice(V.shape[0], size=k, replace=False), device=V.device)
        else:
            raise ValueError(f"unknown init {init!r}; use 'k-means++', 'random' or an array")
        return V[idx].clone()
    C0 = np.asarray(init, dtype=np.float32)
    if C0.shape != (k, V.shape[1]):
        raise ValueError(f"init centroids have shape {C0.shape}, expected {(k, V.shape[1])}")
    C0, ok = normalize_rows(C0)
    if not ok.all():
        raise ValueError("init centroids contain NaN/inf or zero rows")
    return torch.from_numpy(C0).to(V.device)


# ---------------------------------------------------------------------------------------------
# mini-batch (streaming) mode
# ---------------------------------------------------------------------------------------------

def minibatch_spherical_kmeans(X: Any, k: int, seed: int = 0, max_iter: int = 100,
                               tol: float = 1e-4, batch_size: int = 4096,
                               init_size: int | None = None, init_n_init: int = 3,
                               device: str = "auto",
                               progress: Progress | None = None) -> KMeansResult:
    """Spherical k-means that streams the rows in chunks of ``batch_size``.

    1. A random sample of ``init_size`` rows (default ``min(N, max(20_000, 50 K))``) is
       clustered in memory (k-means++ seeding + Lloyd, best of ``init_n_init`` runs: the
       sample is small, and a bad seeding would otherwise survive into the streamed passes),
       which puts the centroids close.
    2. Exact Lloyd passes over all rows, chunk by chunk: each pass assigns every row and
       accumulates the per-cluster sums, then centroids become the normalised sums; empty
       clusters are re-seeded at the farthest rows. Stops on ``tol`` / no label change /
       ``max_iter`` passes, then a final pass assigns the labels.

    Memory: one chunk on the device, the K x d sums, and N labels plus N cosines (int64 +
    float32) on the host. Returns the same KMeansResult as :func:`spherical_kmeans`
    (``n_iter`` counts the streamed passes).
    """
    import torch

    src = as_source(X)
    n, d = src.n_rows, src.dim
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    dev = _resolve_device(device)
    rng = np.random.default_rng(seed)
    batch_size = max(1, int(batch_size))
    if init_size is None:
        init_size = max(20_000, 50 * k)
    init_size = int(min(n, max(init_size, k)))

    # 1. fit on a sample
    sample = np.sort(rng.choice(n, size=init_size, replace=False))
    S, ok = normalize_rows(_take_chunked(src, sample, batch_size))
    if ok.sum() < k:
        _check_k(k, int(ok.sum()), int((~ok).sum()))
    sub = spherical_kmeans(S[ok], k, seed=int(rng.integers(2**31)), max_iter=max_iter, tol=tol,
                           device=str(dev), n_init=init_n_init)
    C = torch.from_numpy(sub.centroids).to(dev)
    del S

    labels = np.full(n, -1, dtype=np.int64)
    best = np.full(n, np.inf, dtype=np.float32)  # +inf: invalid rows sort last in relocation
    valid = np.zeros(n, dtype=bool)

    def one_pass(C: "torch.Tensor", accumulate: bool) -> tuple["torch.Tensor", "torch.Tensor"]:
        sums = torch.zeros(k, d, dtype=torch.float32, device=dev)
        for start, raw in src.chunks(batch_size):
            xs, ok = normalize_rows(raw)
            stop = start + len(raw)
            valid[start:stop] = ok
            V = torch.from_numpy(xs[ok]).to(dev)
            if V.shape[0]:
                sims = V @ C.T
                b, lab = sims.max(dim=1)
                if accumulate:
                    sums.index_add_(0, lab, V)
                lab_all = np.full(len(raw), -1, dtype=np.int64)
                best_all = np.full(len(raw), np.inf, dtype=np.float32)
                lab_all[ok] = lab.cpu().numpy()
                best_all[ok] = b.cpu().numpy()
            else:
                lab_all = np.full(len(raw), -1, dtype=np.int64)
                best_all = np.full(len(raw), np.inf, dtype=np.float32)
            labels[start:stop] = lab_all
            best[start:stop] = best_all
        counts = torch.as_tensor(np.bincount(labels[labels >= 0], minlength=k), device=dev)
        return sums, counts

    def rows_vectors(rows: np.ndarray) -> "torch.Tensor":
        order = np.argsort(rows)
        vec = np.empty((len(rows), d), dtype=np.float32)
        vec[order] = normalize_rows(src.take(rows[order]))[0]
        return torch.from_numpy(vec).to(dev)

    # 2. streamed Lloyd passes
    n_iter, converged, n_reseeded = 0, False, 0
    prev = None
    for it in range(max_iter):
        sums, counts = one_pass(C, accumulate=True)
        if it == 0:
            _check_k(k, int(valid.sum()), int((~valid).sum()))
        lab_t, best_t = torch.from_numpy(labels), torch.from_numpy(best)
        empty, _, _ = _relocate_empty(lab_t, best_t, counts.cpu(), None, None)
        if empty:
            # recompute the sums of donor/empty clusters exactly from the moved rows
            counts = torch.as_tensor(np.bincount(labels[labels >= 0], minlength=k), device=dev)
            sums, _ = _stream_sums(src, labels, k, d, dev, batch_size)
            n_reseeded += len(empty)
        newC = _normalize_centroids(sums, C)
        shift = float(((newC - C) ** 2).sum(dim=1).max())
        changed = n if prev is None else int((labels != prev).sum())
        prev = labels.copy()
        C = newC
        n_iter = it + 1
        if progress is not None:
            progress(n_iter, max_iter, f"pass {n_iter}: {changed} labels changed, "
                                       f"max centroid shift {shift:.2e}")
        if not empty and (shift <= tol or changed == 0):
            converged = True
            break

    # 3. final assignment, never an empty cluster
    one_pass(C, accumulate=False)
    counts = torch.as_tensor(np.bincount(labels[labels >= 0], minlength=k))
    lab_t, best_t = torch.from_numpy(labels), torch.from_numpy(best)
    empty, moved, donors = _relocate_empty(lab_t, best_t, counts, None, None)
    if empty:
        n_reseeded += len(empty)
        sums, _ = _stream_sums(src, labels, k, d, dev, batch_size)
        newC = _normalize_centroids(sums, C)
        touched = sorted(set(empty) | set(donors))
        C = C.clone()
        C[touched] = newC[touched]
    inertia = 0.0
    for start, raw in src.chunks(batch_size):
        xs, ok = normalize_rows(raw)
        lab = labels[start:start + len(raw)][ok]
        if len(lab):
            V = torch.from_numpy(xs[ok]).to(dev)
            cos = (V * C[torch.from_numpy(lab).to(dev)]).sum(dim=1)
            inertia += float((1.0 - cos).double().sum())
    n_invalid = int((~valid).sum())
    return KMeansResult(labels=labels, centroids=C.float().cpu().numpy(), inertia=inertia,
                        n_iter=n_iter, converged=converged, n_invalid=n_invalid,
                        n_reseeded=n_reseeded, mode="minibatch",
                        info={"device": str(dev), "init": "k-means++ on a sample",
                              "init_size": int(init_size), "batch_size": batch_size,
                              "seed": int(seed)})


def _take_chunked(src: RowSource, rows: np.ndarray, size: int) -> np.ndarray:
    out = np.empty((len(rows), src.dim), dtype=np.float32)
    for s in range(0, len(rows), size):
        out[s:s + size] = src.take(rows[s:s + size])
    return out


def _stream_sums(src: RowSource, labels: np.ndarray, k: int, d: int, dev: Any,
                 size: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    import torch

    sums = torch.zeros(k, d, dtype=torch.float32, device=dev)
    for start, raw in src.chunks(size):
        xs, _ = normalize_rows(raw)
        lab = labels[start:start + len(raw)]
        ok = lab >= 0
        if ok.any():
            sums.index_add_(0, torch.from_numpy(lab[ok]).to(dev), torch.from_numpy(xs[ok]).to(dev))
    counts = torch.as_tensor(np.bincount(labels[labels >= 0], minlength=k), device=dev)
    return sums, counts


def fits_in_memory(n_rows: int, dim: int, share: float = 0.6) -> bool:
    """Whether one float32 copy of the features (plus ~30%) fits in ``share`` of the memory
    available now (Linux /proc/meminfo; elsewhere assumed to fit)."""
    need = n_rows * dim * 4 * 1.3
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return need < share * int(line.split()[1]) * 1024
    except OSError:
        pass
    return True


def cluster_features(X: Any, k: int, seed: int = 0, max_iter: int = 100, tol: float = 1e-4,
                     minibatch: bool = False, batch_size: int = 4096, device: str = "auto",
                     n_init: int = 3, progress: Progress | None = None) -> KMeansResult:
    """The one entry point the CLI and the app use: full mode, or streaming when asked.

    ``n_init`` k-means++ restarts, the lowest inertia kept (in mini-batch mode: restarts of the
    in-memory fit on the sample). Three by default: k-means is a small cost next to the
    gradients, and one unlucky seeding can merge two task families and split a third (seen on
    the demo pool's synthetic check: ARI 0.90 with one start for one seed in five, 1.0 with
    three for all five)."""
    if minibatch:
        return minibatch_spherical_kmeans(X, k, seed=seed, max_iter=max_iter, tol=tol,
                                          batch_size=batch_size, init_n_init=n_init,
                                          device=device, progress=progress)
    return spherical_kmeans(X, k, seed=seed, max_iter=max_iter, tol=tol, device=device,
                            n_init=n_init, progress=progress)


# ---------------------------------------------------------------------------------------------
# choosing K
# ---------------------------------------------------------------------------------------------

DEFAULT_KS = (2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 25, 32, 40, 50, 64)
SILHOUETTE_TIE = 0.01


def default_ks(n_valid: int) -> list[int]:
    """Candidate K values for a pool: DEFAULT_KS up to about sqrt(N) (and < N)."""
    cap = max(2, min(n_valid - 1, int(math.sqrt(max(n_valid, 1))) + 1))
    ks = [k for k in DEFAULT_KS if k <= cap]
    return ks or [min(2, max(n_valid - 1, 1))]


def k_scan(X: Any, ks: Sequence[int] | None = None, sample: int = 10_000, seed: int = 0,
           silhouette_sample: int = 4_000, max_iter: int = 50, tol: float = 1e-4,
           device: str = "auto", progress: Progress | None = None) -> "pd.DataFrame":
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
    S, ok = normalize_rows(_take_chunked(src, rows, chunk_rows_for(src.dim)))
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


def pick_k(scan: "pd.DataFrame", tie: float = SILHOUETTE_TIE) -> int:
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


# ---------------------------------------------------------------------------------------------
# summaries
# ---------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"(?u)\b[^\W\d_][^\W_]+\b")


def row_text(messages: Any) -> str:
    """User + assistant text of one chat (system turns left out), joined by newlines."""
    if isinstance(messages, str):
        return messages
    if messages is None:
        return ""
    parts = []
    for m in messages:
        if isinstance(m, dict) and m.get("role") in ("user", "assistant"):
            parts.append(str(m.get("content") or ""))
    return "\n".join(parts)


def table_texts(table: "pd.DataFrame") -> list[str]:
    if "text" in table.columns:
        return [str(t) for t in table["text"]]
    if "messages" in table.columns:
        return [row_text(m) for m in table["messages"]]
    raise ValueError("the table needs a 'messages' or a 'text' column")


def class_tfidf_keywords(texts: Sequence[str], labels: np.ndarray, k: int, n_keywords: int = 8,
                         stop_words: str | None = "english") -> list[list[str]]:
    """Top words per class by class-based TF-IDF (BERTopic's c-TF-IDF): all of a class's texts
    form one document; tf is the word's frequency in the class divided by the class's word
    count, weighted by ``log(1 + A / f_w)`` with A the mean words per class and f_w the word's
    frequency over all classes."""
    from sklearn.feature_extraction.text import CountVectorizer

    labels = np.asarray(labels)
    keep = labels >= 0
    docs = [t for t, m in zip(texts, keep) if m]
    if not docs:
        return [[] for _ in range(k)]
    vec = CountVectorizer(lowercase=True, stop_words=stop_words, token_pattern=_TOKEN.pattern)
    try:
        counts = vec.fit_transform(docs)
    except ValueError:  # empty vocabulary (only stop words / numbers)
        return [[] for _ in range(k)]
    from scipy import sparse

    lab = labels[keep]
    onehot = sparse.csr_matrix((np.ones(len(lab)), (lab, np.arange(len(lab)))),
                               shape=(k, len(lab)))
    per_class = np.asarray((onehot @ counts).todense(), dtype=np.float64)  # [k, V]
    words_per_class = per_class.sum(axis=1, keepdims=True)
    tf = per_class / np.maximum(words_per_class, 1.0)
    freq = per_class.sum(axis=0)
    avg = words_per_class.mean()
    idf = np.log(1.0 + avg / np.maximum(freq, 1.0))
    score = tf * idf[None, :]
    vocab = np.asarray(vec.get_feature_names_out())
    out = []
    for c in range(k):
        row = score[c]
        top = np.argsort(-row, kind="stable")[:n_keywords]
        out.append([str(vocab[i]) for i in top if row[i] > 0])
    return out


def make_label(keywords: Sequence[str], n: int = 3) -> str:
    return ", ".join(keywords[:n]) if keywords else "(no keywords)"


def summarize_clusters(table: "pd.DataFrame", labels: np.ndarray, X: Any,
                       centroids: np.ndarray, n_keywords: int = 8, n_examples: int = 5,
                       max_docs_per_cluster: int = 2_000, token_counts: np.ndarray | None = None,
                       seed: int = 0, batch_size: int | None = None) -> "pd.DataFrame":
    """One row per cluster (0..K-1; rows labelled -1 are left out and counted in
    ``df.attrs["n_unclustered"]``).

    Columns: cluster, size, share, sources (dict source -> count, largest first),
    top_source, chars_mean, chars_median, chars_p90, tokens_mean, tokens_median, tokens_p90
    (from ``token_counts`` or the table's ``n_tokens`` column; otherwise whitespace words,
    and ``df.attrs["token_unit"]`` says "words"), keywords (list), label (the top three
    keywords), examples (the ``row`` values of the members closest to the centroid, closest
    first), example_cos (their cosines).

    Keywords use at most ``max_docs_per_cluster`` random members per cluster (seeded) so a
    1M-row pool stays quick; everything else uses all members.
    """
    import pandas as pd

    labels = np.asarray(labels, dtype=np.int64)
    centroids = np.asarray(centroids, dtype=np.float32)
    k = int(centroids.shape[0])
    n = len(labels)
    if len(table) != n:
        raise ValueError(f"table has {len(table)} rows but labels has {n}")
    row_ids = table["row"].to_numpy() if "row" in table.columns else np.arange(n)
    sources = (table["source"].astype(str).to_numpy() if "source" in table.columns
               else np.full(n, "", dtype=object))
    texts = table_texts(table)
    chars = np.fromiter((len(t) for t in texts), dtype=np.int64, count=n)
    token_unit = "tokens"
    if token_counts is None and "n_tokens" in table.columns:
        token_counts = table["n_tokens"].to_numpy()
    if token_counts is None:
        token_counts = np.fromiter((len(t.split()) for t in texts), dtype=np.int64, count=n)
        token_unit = "words"
    token_counts = np.asarray(token_counts, dtype=np.float64)

    # cosine of every row to its own centroid (streamed), for the examples
    src = as_source(X)
    if src.n_rows != n:
        raise ValueError(f"features have {src.n_rows} rows but labels has {n}")
    own = np.full(n, -np.inf, dtype=np.float32)
    for start, raw in src.chunks(batch_size or chunk_rows_for(src.dim)):
        xs, ok = normalize_rows(raw)
        lab = labels[start:start + len(raw)]
        m = ok & (lab >= 0)
        cos = np.einsum("ij,ij->i", xs[m], centroids[lab[m]])
        part = own[start:start + len(raw)]
        part[m] = cos

    # keywords on a per-cluster sample
    rng = np.random.default_rng(seed)
    kw_rows = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if len(members) > max_docs_per_cluster:
            members = np.sort(rng.choice(members, size=max_docs_per_cluster, replace=False))
        kw_rows.append(members)
    kw_idx = np.concatenate(kw_rows) if kw_rows else np.array([], dtype=np.int64)
    keywords = class_tfidf_keywords([texts[i] for i in kw_idx], labels[kw_idx], k, n_keywords)

    n_clustered = int((labels >= 0).sum())
    records = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        size = len(members)
        src_counts = pd.Series(sources[members]).value_counts()
        order = members[np.argsort(-own[members], kind="stable")[:n_examples]]
        ch = chars[members] if size else np.zeros(1)
        tk = token_counts[members] if size else np.zeros(1)
        records.append({
            "cluster": c,
            "size": size,
            "share": size / max(n_clustered, 1),
            "sources": {str(s): int(v) for s, v in src_counts.items()},
            "top_source": str(src_counts.index[0]) if size else "",
            "chars_mean": float(np.mean(ch)),
            "chars_median": float(np.median(ch)),
            "chars_p90": float(np.percentile(ch, 90)),
            "tokens_mean": float(np.mean(tk)),
            "tokens_median": float(np.median(tk)),
            "tokens_p90": float(np.percentile(tk, 90)),
            "keywords": keywords[c],
            "label": make_label(keywords[c]),
            "examples": [int(row_ids[i]) for i in order],
            "example_cos": [float(own[i]) for i in order],
        })
    df = pd.DataFrame(records)
    df.attrs["n_unclustered"] = int(n - n_clustered)
    df.attrs["token_unit"] = token_unit
    return df


# ---------------------------------------------------------------------------------------------
# workspace files
# ---------------------------------------------------------------------------------------------

LABELS = "labels.npy"
CENTROIDS = "centroids.npy"
META = "meta.json"
SUMMARY = "summary.json"
KSCAN = "kscan.csv"


@dataclass
class ClusterSet:
    """A saved clustering: labels [N] (-1 = no features), centroids [K, d], meta, and the
    summary / K scan tables when they were saved."""

    name: str
    path: Path
    labels: np.ndarray
    centroids: np.ndarray
    meta: dict[str, Any]
    summary: "pd.DataFrame | None" = None
    kscan: "pd.DataFrame | None" = None

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def cluster_names(self) -> dict[int, str]:
        """cluster -> "3: word, word, word" (or "cluster 3" without a summary)."""
        if self.summary is not None and "label" in self.summary.columns:
            return {int(c): f"{int(c)}: {lab}" for c, lab in
                    zip(self.summary["cluster"], self.summary["label"])}
        return {c: f"cluster {c}" for c in range(self.k)}


def save_clusters(ws: "Workspace", name: str, result: KMeansResult, *,
                  features_fingerprint: str | None, spec: Any = None,
                  features_name: str | None = None, summary: "pd.DataFrame | None" = None,
                  kscan: "pd.DataFrame | None" = None, extra: dict[str, Any] | None = None) -> Path:
    """Write ws.clusters(name)/ {labels.npy, centroids.npy, meta.json, summary.json, kscan.csv}
    as one atomic folder swap: a reader sees the old set or the new one, never a mix."""
    import dataclasses

    from .config import to_dict

    target = ws.clusters(name)
    if spec is not None and dataclasses.is_dataclass(spec):
        spec = to_dict(spec)
    meta = {
        "name": name,
        "k": result.k,
        "n_rows": int(len(result.labels)),
        "n_invalid": int(result.n_invalid),
        "inertia": float(result.inertia),
        "n_iter": int(result.n_iter),
        "converged": bool(result.converged),
        "n_reseeded": int(result.n_reseeded),
        "mode": result.mode,
        "sizes": [int(s) for s in result.sizes()],
        "features": features_name,
        "features_fingerprint": features_fingerprint,
        "spec": spec,
        "info": result.info,
    }
    if extra:
        meta.update(extra)
    with atomic.atomic_dir(target) as tmp:
        np.save(tmp / LABELS, result.labels.astype(np.int64))
        np.save(tmp / CENTROIDS, result.centroids.astype(np.float32))
        if summary is not None:
            (tmp / SUMMARY).write_text(summary.to_json(orient="records", indent=1))
            meta["summary_attrs"] = dict(summary.attrs)
        if kscan is not None:
            kscan.to_csv(tmp / KSCAN, index=False)
            meta["kscan_rule"] = kscan.attrs.get("rule")
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return target


def load_clusters(ws: "Workspace", name: str, features_fingerprint: str | None = None) -> ClusterSet:
    """Read a saved clustering. With ``features_fingerprint``, refuse one made from other
    features (labels from a different pool or checkpoint would silently mismatch)."""
    import pandas as pd

    path = ws.clusters(name)
    if not (path / META).exists():
        raise FileNotFoundError(f"no clusters named {name!r} in {ws.root} "
                                f"(have: {', '.join(ws.list('clusters')) or 'none'})")
    meta = json.loads((path / META).read_text())
    if features_fingerprint is not None and meta.get("features_fingerprint") != features_fingerprint:
        raise ValueError(f"clusters {name!r} were made from features with fingerprint "
                         f"{meta.get('features_fingerprint')}, not {features_fingerprint}; "
                         "re-run `clusterucb cluster`")
    summary = kscan = None
    if (path / SUMMARY).exists():
        summary = pd.DataFrame(json.loads((path / SUMMARY).read_text()))
        summary.attrs.update(meta.get("summary_attrs") or {})
    if (path / KSCAN).exists():
        kscan = pd.read_csv(path / KSCAN)
        kscan.attrs["rule"] = meta.get("kscan_rule")
    return ClusterSet(name=name, path=path, labels=np.load(path / LABELS),
                      centroids=np.load(path / CENTROIDS), meta=meta, summary=summary,
                      kscan=kscan)
