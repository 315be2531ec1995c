"""Which target subtask a scored row serves, how a selection covers the subtasks, and the
`balance = "subtasks"` selection.

A row's score is the max over subtasks of its mean cosine to that subtask's gradients
(influence.py), so each scored row has a best subtask: the one that gave the max. The default
selection keeps the top-p rows by that max, so one easy subtask can take most of the places;
`balanced_top` instead fills the top-p round-robin over subtasks (each subtask in turn takes
its best row not yet taken, by its own cosine), so every subtask gets a share.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clusterucb_core.config import BALANCE_HELP, SelectionSpec, field_info

BALANCES: tuple[str, ...] = field_info(SelectionSpec, "balance")["options"]
BALANCE_LABELS: dict[str, str] = field_info(SelectionSpec, "balance")["labels"]


def balance_help() -> str:
    """One line per rule, for a widget's help."""
    return "  \n".join(f"**{BALANCE_LABELS[b]}** (`{b}`): {BALANCE_HELP[b]}." for b in BALANCES)


def best_subtask(per_subtask: np.ndarray) -> np.ndarray:
    """[N] int: the column of each row's max (-1 for a row without any finite score)."""
    per = np.asarray(per_subtask, dtype=np.float64)
    ok = np.isfinite(per).any(axis=1)
    out = np.full(len(per), -1, dtype=np.int64)
    if ok.any():
        out[ok] = np.nanargmax(np.where(np.isfinite(per[ok]), per[ok], -np.inf), axis=1)
    return out


def coverage(best: np.ndarray, subtasks: Sequence[str]):
    """A table with one row per subtask: how many of the given rows serve it best."""
    import pandas as pd

    best = np.asarray(best, dtype=np.int64)
    counts = np.bincount(best[best >= 0], minlength=len(subtasks))
    return pd.DataFrame({"subtask": list(subtasks), "rows": counts.astype(int)})


def balanced_top(rows: np.ndarray, per_subtask: np.ndarray, n_top: int) -> np.ndarray:
    """`n_top` of `rows` chosen round-robin over subtasks: in each turn every subtask (in
    column order) takes its highest-cosine row not taken yet; rows whose scores are all NaN
    are never taken. `per_subtask[i]` belongs to `rows[i]`."""
    rows = np.asarray(rows, dtype=np.int64)
    per = np.asarray(per_subtask, dtype=np.float64)
    if len(rows) != len(per):
        raise ValueError(f"{len(rows)} rows but {len(per)} rows of subtask scores")
    usable = np.isfinite(per).any(axis=1)
    n_top = min(int(n_top), int(usable.sum()))
    cols = [c for c in range(per.shape[1]) if np.isfinite(per[:, c]).any()]
    queues = []
    for c in cols:
        ok = np.flatnonzero(np.isfinite(per[:, c]) & usable)
        queues.append(ok[np.lexsort((rows[ok], -per[ok, c]))])
    taken = np.zeros(len(rows), dtype=bool)
    out: list[int] = []
    ptr = [0] * len(queues)
    while len(out) < n_top:
        moved = False
        for q, queue in enumerate(queues):
            while ptr[q] < len(queue) and taken[queue[ptr[q]]]:
                ptr[q] += 1
            if ptr[q] < len(queue) and len(out) < n_top:
                i = queue[ptr[q]]
                taken[i] = True
                out.append(int(rows[i]))
                moved = True
        if not moved:
            break
    return np.array(out, dtype=np.int64)
