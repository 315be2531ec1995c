"""Import features computed elsewhere -- a LESS gradient datastore or a .npy matrix -- as a
FeatureStore, so users who already ran LESS reuse their gradients.

LESS (`less/data_selection/collect_grad_reps.py`) writes, for each projection dim,
`{output_path}/dim{d}/all_orig.pt` (rows L2-normalised, `merge_and_normalize_info`) and/or
`all_unormalized.pt` (raw projected gradients, `merge_info`): one [N, d] tensor whose rows
follow the order of the training file. We accept:

- a `.pt` file (loaded with `torch.load(weights_only=True)`, memory-mapped when possible) or
  a `.npy` file (`np.load(mmap_mode="r")`);
- a `dim*` folder holding `all_orig.pt` (preferred) or `all_unormalized.pt`;
- a LESS output folder holding `dim*` folders (pass `dim=` when there are several).

Rows are normalised here either way (float32 math); a zero or non-finite row (LESS writes NaN
when a sample's loss was NaN) is stored as flagged, never as a zero feature. The import is
chunked and resumable like any feature computation.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from clusterucb_core.features.rowsource import normalize_rows
from clusterucb_core.features.store import FeatureStore

LESS_FILES = ("all_orig.pt", "all_unormalized.pt")


def find_source(path: str | Path, dim: int | None = None) -> Path:
    """The matrix file a LESS output / dim folder / file path refers to."""
    path = Path(path)
    if path.is_file():
        if path.suffix not in (".pt", ".pth", ".npy"):
            raise ValueError(f"{path}: expected a .pt (LESS) or .npy feature matrix")
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"no LESS gradient datastore or feature file at {path}")
    for name in LESS_FILES:
        if (path / name).is_file():
            return path / name
    dims = sorted((p for p in path.iterdir() if p.is_dir() and re.fullmatch(r"dim\d+", p.name)),
                  key=lambda p: int(p.name[3:]))
    if dim is not None:
        dims = [p for p in dims if p.name == f"dim{int(dim)}"]
        if not dims:
            raise FileNotFoundError(f"{path} has no dim{int(dim)} folder")
    if len(dims) > 1:
        names = ", ".join(p.name for p in dims)
        raise ValueError(f"{path} holds several projection dims ({names}); choose one with dim=")
    if dims:
        return find_source(dims[0])
    raise FileNotFoundError(f"{path} has none of {', '.join(LESS_FILES)} and no dim* folder")


def load_matrix(path: str | Path) -> Any:
    """The [N, d] matrix of a .pt or .npy file, memory-mapped when the format allows."""
    path = Path(path)
    if path.suffix == ".npy":
        mat = np.load(path, mmap_mode="r", allow_pickle=False)
    else:
        import torch

        try:
            mat = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            mat = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(mat, dict):
            raise ValueError(f"{path} holds a dict ({', '.join(map(str, list(mat)[:5]))}...), "
                             f"not a feature matrix; LESS's all_orig.pt is one [N, d] tensor")
        if not isinstance(mat, torch.Tensor):
            raise ValueError(f"{path} holds a {type(mat).__name__}, not a tensor")
    if mat.ndim != 2:
        raise ValueError(f"{path}: expected an [N, d] matrix, got shape {tuple(mat.shape)}")
    return mat


def _rows_float32(mat: Any, lo: int, hi: int) -> np.ndarray:
    part = mat[lo:hi]
    if hasattr(part, "detach"):  # torch (bf16/fp16/fp32, possibly memory-mapped)
        import torch

        return part.detach().to(torch.float32).numpy()
    return np.asarray(part, dtype=np.float32)


def import_features(source: str | Path, store_path: str | Path,
                    manifest: dict[str, Any] | None = None, n_rows: int | None = None,
                    dim: int | None = None, dtype: str = "float16", chunk_rows: int = 65536
                    ) -> FeatureStore:
    """Copy a LESS datastore / .npy matrix into a FeatureStore (normalised rows).

    `n_rows`: the pool's row count; a different count is refused (the rows would not line up
    with the pool). `manifest`: identity keys of the caller (e.g. the pool fingerprint); the
    source file's resolved path and size are added. An import of the same source into the same
    store resumes or returns at once; another source refuses (`StoreMismatch`).
    """
    src = find_source(source, dim)
    mat = load_matrix(src)
    N, d = int(mat.shape[0]), int(mat.shape[1])
    if n_rows is not None and N != int(n_rows):
        raise ValueError(f"{src} has {N} rows but the pool has {int(n_rows)}: a feature file "
                         f"must have one row per pool row, in the pool's order")
    ident = dict(manifest or {})
    ident["imported_from"] = {"path": str(src.resolve()), "bytes": src.stat().st_size,
                              "format": "npy" if src.suffix == ".npy" else "less-pt"}
    store = FeatureStore.create_or_open(store_path, N, d, ident, dtype=dtype)
    todo = store.missing()
    for lo in range(0, len(todo), max(1, int(chunk_rows))):
        rows = todo[lo:lo + chunk_rows]
        # rows are ascending; read the contiguous span they cover
        raw = _rows_float32(mat, int(rows[0]), int(rows[-1]) + 1)[rows - rows[0]]
        finite = np.isfinite(raw).all(axis=1)
        raw = np.where(finite[:, None], raw, 0.0).astype(np.float32)
        unit, _ = normalize_rows(raw)
        flagged = ~finite | (np.linalg.norm(raw, axis=1) == 0)
        store.write(rows, unit, flagged=flagged)
    return store
