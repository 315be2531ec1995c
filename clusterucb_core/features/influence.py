"""Influence scores of training rows against a target set (docs/METHOD.md section 2).

    score(z) = max over subtasks s of  mean_{z' in s} cos(feat(z), grad(z'))

With several checkpoints c (LESS), the cosine matrices are summed with weights w_c (each
checkpoint's average learning rate, normalised to sum 1) *before* the mean and the max:

    score(z) = max_s  mean_{z' in s}  sum_c w_c cos(feat_c(z), grad_c(z'))

Because the mean is linear, mean_{z' in s} cos(t, v_z') = <t/|t|, mean_{z' in s} v_z'/|v_z'|>, so
we never build the N x M cosine matrix: each checkpoint's target set is reduced to one mean
unit vector per subtask ([S, d]), and the training rows are streamed in chunks against it
([chunk, d] @ [d, S]), in float32. Cost O(N*d*S*C), memory O(chunk*d).

Rows without a direction: a training row that is all zero or has any non-finite value (a
flagged row, stored as NaN) gets NaN, in every subtask column and in the score -- it is never
scored as 0. A target row without a direction is left out of its subtask's mean (with a
warning); a subtask with no usable target row gets a NaN column and does not take part in
the max.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from clusterucb_core.features.rowsource import normalize_rows

ArrayOrList = Any  # np.ndarray[N, d] | Sequence[np.ndarray[N, d]] (one per checkpoint)


def _as_list(x: ArrayOrList) -> list[Any]:
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def checkpoint_weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    """Weights normalised to sum 1 (equal when None); e.g. the checkpoints' average lr."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(w) != n:
        raise ValueError(f"{len(w)} weights for {n} checkpoints")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"checkpoint weights must be >= 0 with a positive sum, got {list(w)}")
    return w / w.sum()


def subtask_means(target: np.ndarray, subtask_ids: np.ndarray, n_subtasks: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Mean unit target vector per subtask [S, d] (float32) and which subtasks have one."""
    unit, ok = normalize_rows(target)
    ids = np.asarray(subtask_ids).reshape(-1)
    if len(ids) != len(unit):
        raise ValueError(f"{len(ids)} subtask ids for {len(unit)} target rows")
    if (~ok).any():
        warnings.warn(f"{int((~ok).sum())} target row(s) have no gradient direction (zero or "
                      f"non-finite) and are left out of their subtask's mean", stacklevel=3)
    means = np.zeros((n_subtasks, unit.shape[1]), dtype=np.float64)
    counts = np.bincount(ids[ok], minlength=n_subtasks).astype(np.float64)
    np.add.at(means, ids[ok], unit[ok].astype(np.float64))
    present = counts > 0
    means[present] /= counts[present, None]
    return means.astype(np.float32), present


def subtask_scores(train: ArrayOrList, target: ArrayOrList, subtask_ids: np.ndarray,
                   weights: Sequence[float] | None = None, n_subtasks: int | None = None,
                   chunk_rows: int = 16384) -> np.ndarray:
    """[N, S] float32: each training row's (weighted) mean cosine with each subtask.

    Columns are subtask codes 0..S-1 (S = n_subtasks or max(subtask_ids)+1); a subtask with no
    usable target row is a NaN column; a training row without a direction is a NaN row.
    """
    return _subtask_scores(train, target, subtask_ids, weights, n_subtasks, chunk_rows)[0]


def _subtask_scores(train: ArrayOrList, target: ArrayOrList, subtask_ids: np.ndarray,
                    weights: Sequence[float] | None, n_subtasks: int | None, chunk_rows: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    trains, targets = _as_list(train), _as_list(target)
    if len(trains) != len(targets):
        raise ValueError(f"{len(trains)} training feature sets but {len(targets)} target sets "
                         f"(one each per checkpoint)")
    ids = np.asarray(subtask_ids).reshape(-1)
    if ids.size and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0):
        raise ValueError("subtask_ids must be non-negative integer codes")
    S = int(n_subtasks if n_subtasks is not None else (ids.max() + 1 if ids.size else 0))
    if ids.size and ids.max() >= S:
        raise ValueError(f"subtask code {ids.max()} >= n_subtasks={S}")
    w = checkpoint_weights(weights, len(trains))
    N = len(trains[0])
    d = trains[0].shape[1]
    for t, v in zip(trains, targets):
        if len(t) != N or t.shape[1] != d or v.shape[1] != d:
            raise ValueError("every checkpoint needs the same N training rows and feature dim "
                             f"(got {t.shape} / {v.shape}, expected ({N}, {d}))")
    means, present = [], np.ones(S, dtype=bool)
    for v in targets:
        m, p = subtask_means(v, ids, S)
        means.append(m)
        present &= p
    out = np.empty((N, S), dtype=np.float32)
    for lo in range(0, N, max(1, int(chunk_rows))):
        hi = min(N, lo + chunk_rows)
        acc = np.zeros((hi - lo, S), dtype=np.float32)
        valid = np.ones(hi - lo, dtype=bool)
        for wc, t, m in zip(w, trains, means):
            unit, ok = normalize_rows(t[lo:hi])
            valid &= ok
            acc += np.float32(wc) * (unit @ m.T)
        acc[~valid] = np.nan
        out[lo:hi] = acc
    out[:, ~present] = np.nan
    return out, present


def influence_scores(train: ArrayOrList, target: ArrayOrList, subtask_ids: np.ndarray,
                     weights: Sequence[float] | None = None, chunk_rows: int = 16384
                     ) -> np.ndarray:
    """[N] float32: max over subtasks of the mean cosine (NaN for rows without a direction)."""
    per, present = _subtask_scores(train, target, subtask_ids, weights, None, chunk_rows)
    if not present.any():
        raise ValueError("no subtask has a usable target gradient")
    cols = per[:, present]
    scores = cols.max(axis=1)  # NaN rows stay NaN
    return scores.astype(np.float32)
