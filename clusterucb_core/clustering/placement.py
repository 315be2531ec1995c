"""Placing rows onto a map fitted on a sample: weighted k-nearest-neighbour interpolation.

UMAP's own ``transform`` finds each new row's neighbours among the fitted rows, starts it at
their weighted mean, then runs tens of epochs of layout optimisation per chunk: on a 1M-row
pool that optimisation is most of the map's time. This module keeps the first two steps and
drops the epochs: a row's position is the mean of its ``k`` nearest fitted rows' positions
(cosine on the PCA-reduced features, searched in cells, chunk by chunk), weighted by UMAP's fuzzy
membership (``exp(-(d - rho) / sigma)`` with ``sigma`` set so the weights sum to
``log2(k)``). Its quality is measured, not assumed: ``neighbour_keep`` scores a map by how
many of each row's feature-space neighbours stay its neighbours on the map.

Placement streams in chunks into a checkpoint folder (``Checkpoint``): the fitted sample
(its rows, 2-D positions, reduced features and the PCA) and the coordinates placed so far,
with a counter written after each chunk. A killed run resumes at the first chunk not counted.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clusterucb_core.runtime import atomic

K_PLACE = 15  # neighbours per placed row (UMAP's default n_neighbors)
SUB = 2048  # rows per similarity block
SUB_CELLS = 32_768  # rows per cell search (its cost is per cell visited: big blocks)
CELLS, PROBE = 128, 8  # the neighbour search's cells, and how many a row looks in
EXACT_BELOW = 4096  # a smaller sample is searched whole


def membership_weights(dist: np.ndarray, n_iter: int = 48) -> np.ndarray:
    """UMAP's fuzzy membership of each row's neighbours: ``exp(-(d - rho) / sigma)``, rho the
    distance to the nearest, sigma found by bisection so each row's weights sum to log2(k).

    dist: [m, k] distances, ascending along each row. Returns [m, k] float64 weights."""
    d = np.asarray(dist, dtype=np.float64)
    k = d.shape[1]
    target = np.log2(k)
    gap = np.maximum(d - d[:, :1], 0.0)
    lo = np.zeros(len(d))
    hi = np.full(len(d), np.inf)
    sigma = np.ones(len(d))
    for _ in range(n_iter):
        total = np.exp(-gap / sigma[:, None]).sum(axis=1)
        big = total > target  # weights too large: a smaller sigma
        hi = np.where(big, sigma, hi)
        lo = np.where(big, lo, sigma)
        sigma = np.where(np.isinf(hi), sigma * 2, (lo + hi) / 2)
    return np.exp(-gap / np.maximum(sigma, 1e-12)[:, None])


class Placer:
    """Places rows onto the positions of a fitted sample (see the module docstring).

    Neighbours are searched in cells (an inverted file): the sample is split into ``CELLS``
    cells by a seeded spherical k-means, and a row is compared with the members of its
    ``PROBE`` nearest cells only, about a sixteenth of the sample; samples under
    ``EXACT_BELOW`` rows are searched whole."""

    def __init__(self, fit_feats: np.ndarray, fit_coords: np.ndarray, k: int = K_PLACE,
                 seed: int = 0):
        self.ref = torch.from_numpy(_unit(fit_feats))
        self.coords = np.asarray(fit_coords, dtype=np.float64)
        self.k = int(min(k, len(self.ref)))
        self.cells = None if len(self.ref) < EXACT_BELOW else _cells(self.ref, CELLS, seed)

    def neighbours(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(indices [m, k] into the fitted sample, cosine distances [m, k]), nearest first;
        ``SUB`` rows at a time so a similarity block stays small (torch's top-k: NumPy's
        argpartition is an order of magnitude slower here)."""
        q = torch.from_numpy(_unit(feats))
        idx = np.empty((len(q), self.k), dtype=np.int64)
        dist = np.empty((len(q), self.k), dtype=np.float32)
        step = SUB if self.cells is None else SUB_CELLS
        for lo in range(0, len(q), step):
            sims, near = (self._search(q[lo:lo + step]) if self.cells is not None else
                          (q[lo:lo + step] @ self.ref.T).topk(self.k, dim=1))
            idx[lo:lo + step], dist[lo:lo + step] = near.numpy(), 1.0 - sims.numpy()
        return idx, np.maximum(dist, 0.0)

    def _search(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell by cell: the rows that probe it against its members, merged into each row's
        running top-k."""
        centres, members = self.cells
        probe = (q @ centres.T).topk(min(PROBE, len(centres)), dim=1).indices
        best_s = torch.full((len(q), self.k), -torch.inf)
        best_i = torch.zeros((len(q), self.k), dtype=torch.int64)
        for c, mem in enumerate(members):
            qi = torch.nonzero((probe == c).any(dim=1)).squeeze(1)
            if not len(qi) or not len(mem):
                continue
            cand_s = torch.cat([best_s[qi], q[qi] @ self.ref[mem].T], dim=1)
            cand_i = torch.cat([best_i[qi], mem.expand(len(qi), -1)], dim=1)
            top = cand_s.topk(self.k, dim=1)
            best_s[qi], best_i[qi] = top.values, cand_i.gather(1, top.indices)
        return best_s, best_i

    def place(self, feats: np.ndarray) -> np.ndarray:
        """2-D positions (float32 [m, 2]) of rows given by their reduced features."""
        with one_thread():
            idx, dist = self.neighbours(feats)
        w = membership_weights(dist)
        xy = np.einsum("mk,mkc->mc", w, self.coords[idx]) / w.sum(axis=1, keepdims=True)
        return xy.astype(np.float32)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread: the search is many small products, whose hand-offs between
    threads cost more than they save (twenty times more on a loaded machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cells(ref: torch.Tensor, n_cells: int, seed: int, n_iter: int = 10
           ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(unit centres [C, d], member indices per cell): a seeded spherical k-means of
    ``ref``."""
    gen = torch.Generator().manual_seed(seed)
    centres = ref[torch.randperm(len(ref), generator=gen)[:n_cells]].clone()
    for _ in range(n_iter):
        assign = (ref @ centres.T).argmax(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, assign, ref)
        norms = sums.norm(dim=1, keepdim=True)
        centres = torch.where(norms > 0, sums / norms.clamp_min(1e-12), centres)
    assign = (ref @ centres.T).argmax(dim=1)
    return centres, [torch.nonzero(assign == c).squeeze(1) for c in range(len(centres))]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def neighbour_keep(feats: np.ndarray, coords: np.ndarray, k_feat: int = 10,
                   k_map: int = 30) -> float:
    """The share of each row's ``k_feat`` nearest rows in feature space (cosine) that are
    among its ``k_map`` nearest on the map (Euclidean), averaged over the rows; neighbours are
    looked for among the given rows only (exact, O(m^2): for a slice of a few thousand rows).
    """
    x = _unit(feats)
    xy = np.asarray(coords, dtype=np.float64)
    m = len(x)
    if len(xy) != m:
        raise ValueError(f"feats has {m} rows but coords has {len(xy)}")
    if m <= k_map:
        raise ValueError(f"neighbour keep needs more than k_map={k_map} rows, got {m}")
    xt, mt = torch.from_numpy(x), torch.from_numpy(xy)
    kept = 0
    for lo in range(0, m, SUB):
        rows = torch.arange(lo, min(lo + SUB, m))
        sims = xt[rows] @ xt.T
        sims[torch.arange(len(rows)), rows] = -torch.inf  # a row is not its own neighbour
        near = sims.topk(k_feat, dim=1).indices
        d2 = torch.cdist(mt[rows], mt) ** 2
        d2[torch.arange(len(rows)), rows] = torch.inf
        on_map = d2.topk(k_map, dim=1, largest=False).indices
        kept += int((near[:, :, None] == on_map[:, None, :]).any(dim=2).sum())
    return kept / (m * k_feat)


@dataclass
class Fitted:
    """What placement needs from the fit: the sample's rows, their 2-D positions and reduced
    features, and the PCA that reduces other rows the same way (None: no reduction)."""

    rows: np.ndarray
    coords: np.ndarray
    feats: np.ndarray
    pca_mean: np.ndarray | None
    pca_components: np.ndarray | None

    def reduce(self, x: np.ndarray) -> np.ndarray:
        if self.pca_components is None:
            return np.asarray(x, dtype=np.float32)
        return ((x - self.pca_mean) @ self.pca_components.T).astype(np.float32)


class Checkpoint:
    """A placement in progress on disk: ``fit.npz`` (the ``Fitted`` sample), ``coords.npy``
    (every row's position so far, NaN until placed) and ``state.json`` (rows placed, written
    after each chunk's coordinates are flushed, so a kill loses at most the chunk in hand)."""

    def __init__(self, folder: Path, key: str):
        self.folder, self.key = Path(folder), key

    def fitted(self) -> Fitted | None:
        path = self.folder / "fit.npz"
        if not path.exists() or self._state().get("key") != self.key:
            return None
        with np.load(path, allow_pickle=False) as z:
            has_pca = bool(z["has_pca"])
            return Fitted(z["rows"], z["coords"], z["feats"],
                          z["pca_mean"] if has_pca else None,
                          z["pca_components"] if has_pca else None)

    def start(self, fitted: Fitted, n_rows: int) -> None:
        """A fresh checkpoint for this fit (anything there before is dropped)."""
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        has_pca = fitted.pca_components is not None
        with atomic.atomic_path(self.folder / "fit.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, rows=fitted.rows, coords=fitted.coords, feats=fitted.feats,
                         has_pca=np.array(has_pca),
                         pca_mean=fitted.pca_mean if has_pca else np.zeros(0),
                         pca_components=fitted.pca_components if has_pca else np.zeros(0))
        xy = np.lib.format.open_memmap(self.folder / "coords.npy", mode="w+",
                                       dtype=np.float32, shape=(n_rows, 2))
        xy[:] = np.nan
        xy[fitted.rows] = fitted.coords
        xy.flush()
        del xy
        self.save_placed(0)

    def coords(self) -> np.ndarray:
        return np.load(self.folder / "coords.npy", mmap_mode="r+")

    def placed(self) -> int:
        return int(self._state().get("placed", 0))

    def save_placed(self, placed: int) -> None:
        atomic.write_bytes(self.folder / "state.json",
                           json.dumps({"key": self.key, "placed": int(placed)}).encode())

    def _state(self) -> dict[str, Any]:
        try:
            return json.loads((self.folder / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    def drop(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
