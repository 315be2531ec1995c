"""The 2-D map: UMAP (cosine) after a PCA pre-reduction, cached in the workspace.

Recipe: L2-normalise the rows; PCA to ``pca_dims`` (default 50; skipped when the features
are already that small) fitted on the same rows as UMAP, which keeps UMAP's neighbour search
cheap; then ``umap.UMAP(n_components=2, metric="cosine", random_state=seed)``. Rows without
features (NaN or zero vectors, label -1 in clustering) get NaN coordinates.

Large pools: UMAP is fitted on a seeded random sample of at most ``max_fit`` rows (default
20k) and the other rows are placed with ``UMAP.transform`` chunk by chunk, reporting
progress. The result says so (``MapResult.fit_on_sample``, ``n_fit``); placed rows sit where
the fitted map puts them, which is close to, but not the same as, a map fitted on everything.

Cache: ``ws.maps()/<key>.npz`` where key = fingerprint(features' fingerprint, params), written
atomically. Reopening a workspace reads it instead of recomputing (``MapResult.from_cache``).

umap-learn compiles its kernels with numba on first use in a process (tens of seconds once;
numba caches some of them on disk). Inputs of fewer than ``MIN_UMAP_ROWS`` rows fall back to a
2-D PCA (``method="pca"``): UMAP's neighbour graph is meaningless there.
"""

from __future__ import annotations

import hashlib
import json
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


MAP_VERSION = 1
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

    @property
    def note(self) -> str:
        """One honest sentence about how the map was made, for the page and the CLI."""
        parts = []
        if self.method != "umap":
            parts.append(f"{self.n_valid} rows are too few for UMAP: this map is a 2-D PCA")
        elif self.fit_on_sample:
            parts.append(f"UMAP fitted on a random sample of {self.n_fit:,} of {self.n_valid:,} "
                         f"rows; the other {self.n_valid - self.n_fit:,} were placed onto it "
                         "(UMAP.transform)")
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
                max_fit: int = 20_000, seed: int = 0, chunk_size: int = 10_000,
                force: bool = False, progress: Progress | None = None) -> MapResult:
    """The 2-D map of a feature array or FeatureStore, read from ``ws``'s cache when there.

    ``features_fingerprint`` defaults to the store's fingerprint, or a hash of a plain array's
    bytes. ``force`` recomputes (and rewrites the cache). Without ``ws`` nothing is cached.
    ``chunk_size``: rows placed per ``UMAP.transform`` call (one progress step); rows are
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
    res = _compute(src, params, fp, key, chunk_size, progress)
    res.seconds = time.perf_counter() - t0
    if path is not None:
        _save(path, res)
        res.path = path
    return res


def _compute(src: Any, params: dict[str, Any], fp: str, key: str, chunk_size: int,
             progress: Progress | None) -> MapResult:
    n = src.n_rows
    seed = params["seed"]
    # which rows have features (one streamed pass; NaN rows are flagged, zero rows unusable)
    valid = np.zeros(n, dtype=bool)
    for start, raw in src.chunks(chunk_rows_for(src.dim)):
        valid[start:start + len(raw)] = normalize_rows(raw)[1]
    valid_rows = np.flatnonzero(valid)
    n_valid = len(valid_rows)
    coords = np.full((n, 2), np.nan, dtype=np.float32)
    rng = np.random.default_rng(seed)
    if n_valid > params["max_fit"]:
        fit_rows = np.sort(rng.choice(valid_rows, size=params["max_fit"], replace=False))
    else:
        fit_rows = valid_rows
    n_fit = len(fit_rows)
    report = progress or (lambda *a, **k: None)
    report(0, n_valid, f"reading {n_fit:,} rows to fit the map")
    F = _read_rows(src, fit_rows)

    pca = None
    pca_dims = params["pca_dims"]
    if pca_dims is not None and src.dim > pca_dims and n_fit > pca_dims:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=pca_dims, svd_solver="randomized", random_state=seed)
        F = pca.fit_transform(F).astype(np.float32)

    info: dict[str, Any] = {"pca_dims": None if pca is None else pca_dims}
    if n_fit < MIN_UMAP_ROWS:
        method = "pca"
        coords[fit_rows] = _pca2(F)
        report(n_valid, n_valid, "done (PCA: too few rows for UMAP)")
        return MapResult(coords=coords, fit_on_sample=False, n_fit=n_fit, n_rows=n,
                         n_valid=n_valid, method=method, params=params,
                         features_fingerprint=fp, key=key, info=info)

    report(0, n_valid, "loading UMAP (a process's first map also compiles its kernels)")
    import umap  # heavy (numba): imported only when a map is computed

    nn = int(min(params["n_neighbors"], n_fit - 1))
    info["n_neighbors_used"] = nn
    reducer = umap.UMAP(n_components=2, metric="cosine", n_neighbors=nn,
                        min_dist=params["min_dist"], random_state=seed, low_memory=True)
    report(0, n_valid, f"fitting UMAP on {n_fit:,} rows")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        emb = _fit_umap(reducer, F)
    coords[fit_rows] = emb
    done = n_fit
    report(done, n_valid, f"UMAP fitted on {n_fit:,} rows")
    rest = np.setdiff1d(valid_rows, fit_rows, assume_unique=True)
    for s in range(0, len(rest), chunk_size):
        part = rest[s:s + chunk_size]
        P = _read_rows(src, part, pca)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            coords[part] = reducer.transform(P)
        done += len(part)
        report(done, n_valid, f"placed {done:,} of {n_valid:,} rows on the map")
    return MapResult(coords=coords, fit_on_sample=bool(len(rest)), n_fit=n_fit, n_rows=n,
                     n_valid=n_valid, method="umap", params=params, features_fingerprint=fp,
                     key=key, info=info)


def _fit_umap(reducer: Any, F: np.ndarray) -> np.ndarray:
    """The UMAP fit (a seam so tests can check a cached map is not recomputed)."""
    return np.asarray(reducer.fit_transform(F), dtype=np.float32)


def _read_rows(src: Any, rows: np.ndarray, pca: Any = None) -> np.ndarray:
    """Normalised rows (PCA-reduced when ``pca`` is given), read in ~32 MB pieces."""
    chunk = chunk_rows_for(src.dim)
    out = np.empty((len(rows), src.dim if pca is None else pca.n_components_),
                   dtype=np.float32)
    for s in range(0, len(rows), chunk):
        x = normalize_rows(src.take(rows[s:s + chunk]))[0]
        out[s:s + chunk] = x if pca is None else pca.transform(x)
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
