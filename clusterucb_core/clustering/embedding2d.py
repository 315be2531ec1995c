"""The 2-D map: UMAP (cosine) after a PCA pre-reduction, cached in the workspace.

Recipe: L2-normalise the rows; PCA to ``pca_dims`` (default 50; skipped when the features
are already that small) fitted on the same rows as UMAP, which keeps UMAP's neighbour search
cheap; then ``umap.UMAP(n_components=2, metric="cosine", random_state=seed)``. Rows without
features (NaN or zero vectors, label -1 in clustering) get NaN coordinates.

Large pools: UMAP is fitted on a seeded random sample of at most ``max_fit`` rows (default
20k) and the other rows are placed chunk by chunk, reporting progress, by weighted
k-nearest-neighbour interpolation of the sample's positions (``placement.py``: UMAP's
``transform`` without its optimisation epochs, which made a 1M-row map take 42 minutes). The
result says so (``MapResult.fit_on_sample``, ``n_fit``, ``note``). With a workspace the
placement is checkpointed (``maps/.<key>.partial/``): a killed map resumes where it stopped,
without fitting again.

Cache: ``ws.maps()/<key>.npz`` where key = fingerprint(features' fingerprint, params), written
atomically. Reopening a workspace reads it instead of recomputing (``MapResult.from_cache``).

umap-learn compiles its kernels with numba on first use in a process (tens of seconds once;
numba caches some of them on disk). Inputs of fewer than ``MIN_UMAP_ROWS`` rows fall back to a
2-D PCA (``method="pca"``): UMAP's neighbour graph is meaningless there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clusterucb_core.config import fingerprint
from clusterucb_core.features.rowsource import as_source, chunk_rows_for, normalize_rows
from clusterucb_core.runtime import atomic
from clusterucb_core.runtime.progress import Progress

if TYPE_CHECKING:  # pragma: no cover
    from clusterucb_core.workspace import Workspace


MAP_VERSION = 2  # 2: rows beyond the sample placed by kNN interpolation
MIN_UMAP_ROWS = 16


@dataclass
class MapResult:
    """coords: float32 [N, 2] (NaN where a row has no features). fit_on_sample: True when
    UMAP saw only ``n_fit`` of the ``n_valid`` rows with features and placed the rest with
    ``transform``."""

    coords: np.ndarray
    fit_on_sample: bool
    n_fit: int
    n_rows: int
    n_valid: int
    method: str
    params: dict[str, Any]
    features_fingerprint: str
    key: str
    path: Path | None = None
    from_cache: bool = False
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    model: Any = field(default=None, repr=False)  # the fitted UMAP, this process only
    fitted: Any = field(default=None, repr=False)  # its sample (placement.Fitted), ditto

    @property
    def note(self) -> str:
        """One honest sentence about how the map was made, for the page and the CLI."""
        parts = []
        if self.method != "umap":
            parts.append(f"{self.n_valid} rows are too few for UMAP: this map is a 2-D PCA")
        elif self.fit_on_sample:
            how = self.info.get("placement") or ""
            how = (f"each at the weighted mean of its {how[3:]} nearest sample rows' positions "
                   "(cosine on the features; UMAP's neighbour weights, not UMAP.transform)"
                   if how.startswith("knn") else "with UMAP.transform")
            parts.append(f"UMAP fitted on a random sample of {self.n_fit:,} of {self.n_valid:,} "
                         f"rows; the other {self.n_valid - self.n_fit:,} were placed {how}")
        else:
            parts.append(f"UMAP fitted on all {self.n_valid:,} rows")
        missing = self.n_rows - self.n_valid
        if missing:
            parts.append(f"{missing:,} rows without features have no position")
        return "; ".join(parts) + "."


def map_params(n_neighbors: int = 15, min_dist: float = 0.1, pca_dims: int | None = 50,
               max_fit: int = 20_000, seed: int = 0) -> dict[str, Any]:
    return {"n_neighbors": int(n_neighbors), "min_dist": float(min_dist),
            "pca_dims": None if pca_dims in (None, 0) else int(pca_dims),
            "max_fit": int(max_fit), "seed": int(seed), "metric": "cosine",
            "version": MAP_VERSION}


def map_key(features_fingerprint: str, params: dict[str, Any]) -> str:
    return fingerprint(features_fingerprint, params)


def content_fingerprint(X: np.ndarray, chunk: int = 65536) -> str:
    """Hash of an array's shape, dtype and bytes (for plain arrays with no store fingerprint)."""
    h = hashlib.sha256(f"{X.shape}|{X.dtype}".encode())
    for s in range(0, X.shape[0], chunk):
        h.update(np.ascontiguousarray(X[s:s + chunk]).tobytes())
    return h.hexdigest()[:16]


def _save(path: Path, res: MapResult) -> None:
    meta = {"fit_on_sample": res.fit_on_sample, "n_fit": res.n_fit, "n_rows": res.n_rows,
            "n_valid": res.n_valid, "method": res.method, "params": res.params,
            "features_fingerprint": res.features_fingerprint, "key": res.key,
            "seconds": res.seconds, "info": res.info}
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, coords=res.coords.astype(np.float32),
                     meta=np.array(json.dumps(meta, default=str)))


def _load(path: Path) -> MapResult:
    with np.load(path, allow_pickle=False) as z:
        coords = z["coords"]
        meta = json.loads(str(z["meta"]))
    return MapResult(coords=coords, fit_on_sample=bool(meta["fit_on_sample"]),
                     n_fit=int(meta["n_fit"]), n_rows=int(meta["n_rows"]),
                     n_valid=int(meta["n_valid"]), method=meta["method"], params=meta["params"],
                     features_fingerprint=meta["features_fingerprint"], key=meta["key"],
                     path=path, from_cache=True, seconds=float(meta.get("seconds", 0.0)),
                     info=meta.get("info") or {})


def cached_maps(ws: Workspace, features_fingerprint: str | None = None) -> list[MapResult]:
    """Every map cached in the workspace (optionally only those of one feature set), newest
    first -- for a page that wants to show a map without knowing the parameters used."""
    base = ws.maps()
    if not base.is_dir():
        return []
    out = []
    for p in sorted(base.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True):
        if p.name.startswith("."):
            continue
        try:
            res = _load(p)
        except (OSError, ValueError, KeyError):
            continue
        if features_fingerprint is None or res.features_fingerprint == features_fingerprint:
            out.append(res)
    return out


def compute_map(X: Any, ws: Workspace | None = None, features_fingerprint: str | None = None,
                n_neighbors: int = 15, min_dist: float = 0.1, pca_dims: int | None = 50,
                max_fit: int = 20_000, seed: int = 0, chunk_size: int = 20_000,
                force: bool = False, progress: Progress | None = None) -> MapResult:
    """The 2-D map of a feature array or FeatureStore, read from ``ws``'s cache when there.

    ``features_fingerprint`` defaults to the store's fingerprint, or a hash of a plain array's
    bytes. ``force`` recomputes (and rewrites the cache). Without ``ws`` nothing is cached.
    ``chunk_size``: rows placed per step (one progress report and one checkpoint); rows are
    read in ~32 MB pieces whatever the dimension.
    """
    src = as_source(X)
    fp = features_fingerprint or src.fingerprint
    if fp is None:
        fp = content_fingerprint(src.data) if isinstance(src.data, np.ndarray) else "unknown"
    params = map_params(n_neighbors, min_dist, pca_dims, max_fit, seed)
    key = map_key(fp, params)
    path = ws.maps() / f"{key}.npz" if ws is not None else None
    if path is not None and path.exists() and not force:
        res = _load(path)
        if res.n_rows == src.n_rows:
            if progress is not None:
                progress(res.n_valid, res.n_valid, "map read from the workspace cache")
            return res
    t0 = time.perf_counter()
    partial = None if path is None else path.with_name(f".{key}.partial")
    res = _compute(src, params, fp, key, chunk_size, progress, partial)
    res.seconds = time.perf_counter() - t0
    if path is not None:
        _save(path, res)
        res.path = path
        shutil.rmtree(partial, ignore_errors=True)  # the finished placement's checkpoint
    return res


def _compute(src: Any, params: dict[str, Any], fp: str, key: str, chunk_size: int,
             progress: Progress | None, partial: Path | None) -> MapResult:
    from clusterucb_core.clustering import placement  # imports torch (seconds): maps only

    n = src.n_rows
    seed = params["seed"]
    # which rows have features (one streamed pass; NaN rows are flagged, zero rows unusable)
    valid = np.zeros(n, dtype=bool)
    for start, raw in src.chunks(chunk_rows_for(src.dim)):
        valid[start:start + len(raw)] = normalize_rows(raw)[1]
    valid_rows = np.flatnonzero(valid)
    n_valid = len(valid_rows)
    report = progress or (lambda *a, **k: None)
    info: dict[str, Any] = {"pca_dims": None}
    ckpt = None if partial is None else placement.Checkpoint(partial, key)
    fitted = None if ckpt is None else ckpt.fitted()
    model = None
    if fitted is None:
        rng = np.random.default_rng(seed)
        if n_valid > params["max_fit"]:
            fit_rows = np.sort(rng.choice(valid_rows, size=params["max_fit"], replace=False))
        else:
            fit_rows = valid_rows
        n_fit = len(fit_rows)
        report(0, n_valid, f"reading {n_fit:,} rows to fit the map")
        F = _read_rows(src, fit_rows)
        pca = None
        pca_dims = params["pca_dims"]
        if pca_dims is not None and src.dim > pca_dims and n_fit > pca_dims:
            from sklearn.decomposition import PCA

            pca = PCA(n_components=pca_dims, svd_solver="randomized", random_state=seed)
            F = pca.fit_transform(F).astype(np.float32)
            info["pca_dims"] = pca_dims
        if n_fit < MIN_UMAP_ROWS:
            coords = np.full((n, 2), np.nan, dtype=np.float32)
            coords[fit_rows] = _pca2(F)
            report(n_valid, n_valid, "done (PCA: too few rows for UMAP)")
            return MapResult(coords=coords, fit_on_sample=False, n_fit=n_fit, n_rows=n,
                             n_valid=n_valid, method="pca", params=params,
                             features_fingerprint=fp, key=key, info=info)
        model, emb = _fit(F, params, n_fit, n_valid, report, info)
        fitted = placement.Fitted(fit_rows, emb, F, None if pca is None else pca.mean_,
                                  None if pca is None else pca.components_)
        if ckpt is not None:
            ckpt.start(fitted, n)
        placed = 0
    else:
        placed = ckpt.placed()
        info["pca_dims"] = None if fitted.pca_components is None else params["pca_dims"]
        info["n_neighbors_used"] = int(min(params["n_neighbors"], len(fitted.rows) - 1))
        info["resumed_at"] = placed
    if ckpt is not None:
        coords = ckpt.coords()
    else:
        coords = np.full((n, 2), np.nan, dtype=np.float32)
        coords[fitted.rows] = fitted.coords
    n_fit = len(fitted.rows)
    rest = np.setdiff1d(valid_rows, fitted.rows, assume_unique=True)
    if len(rest):
        info["placement"] = f"knn{placement.K_PLACE}"
    placer = placement.Placer(fitted.feats, fitted.coords)
    done = n_fit + placed
    report(done, n_valid, f"placing {len(rest) - placed:,} rows onto the fitted map"
           + (f" (resumed: {placed:,} placed before)" if placed else ""))
    t0 = time.perf_counter()
    for s in range(placed, len(rest), chunk_size):
        part = rest[s:s + chunk_size]
        coords[part] = placer.place(_read_rows(src, part, fitted))
        if ckpt is not None:
            coords.flush()
            ckpt.save_placed(s + len(part))
        done += len(part)
        report(done, n_valid, f"placed {done:,} of {n_valid:,} rows on the map")
    info["place_s"] = round(time.perf_counter() - t0, 3)
    return MapResult(coords=np.array(coords, dtype=np.float32), fit_on_sample=bool(len(rest)),
                     n_fit=n_fit, n_rows=n, n_valid=n_valid, method="umap", params=params,
                     features_fingerprint=fp, key=key, info=info, model=model,
                     fitted=fitted)


def _fit(F: np.ndarray, params: dict[str, Any], n_fit: int, n_valid: int, report: Any,
         info: dict[str, Any]) -> tuple[Any, np.ndarray]:
    """(the fitted UMAP, the sample's 2-D positions)."""
    report(0, n_valid, "loading UMAP (a process's first map also compiles its kernels)")
    import umap  # heavy (numba): imported only when a map is computed

    nn = int(min(params["n_neighbors"], n_fit - 1))
    info["n_neighbors_used"] = nn
    reducer = umap.UMAP(n_components=2, metric="cosine", n_neighbors=nn,
                        min_dist=params["min_dist"], random_state=params["seed"],
                        low_memory=True)
    report(0, n_valid, f"fitting UMAP on {n_fit:,} rows")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        emb = _fit_umap(reducer, F)
    report(n_fit, n_valid, f"UMAP fitted on {n_fit:,} rows")
    return reducer, emb


def _fit_umap(reducer: Any, F: np.ndarray) -> np.ndarray:
    """The UMAP fit (a seam so tests can check a cached map is not recomputed)."""
    return np.asarray(reducer.fit_transform(F), dtype=np.float32)


def _read_rows(src: Any, rows: np.ndarray, fitted: Any = None) -> np.ndarray:
    """Normalised rows (reduced as the fitted sample was, when ``fitted`` is given), read in
    ~32 MB pieces."""
    chunk = chunk_rows_for(src.dim)
    out = np.empty((len(rows), src.dim if fitted is None else fitted.feats.shape[1]),
                   dtype=np.float32)
    for s in range(0, len(rows), chunk):
        x = normalize_rows(src.take(rows[s:s + chunk]))[0]
        out[s:s + chunk] = x if fitted is None else fitted.reduce(x)
    return out


def _pca2(F: np.ndarray) -> np.ndarray:
    out = np.zeros((len(F), 2), dtype=np.float32)
    if len(F) < 2:
        return out
    centred = F - F.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    m = min(2, len(s))
    out[:, :m] = u[:, :m] * s[:m]
    return out
