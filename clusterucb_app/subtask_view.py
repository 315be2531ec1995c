"""Pure pieces of "which target subtask a row serves" for the UCB and Curate pages (no
streamlit): the table column, the coverage of a selection and the sentence under its chart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from clusterucb_core.selection import subtasks

NONE = "—"
COLUMN = "best subtask"


def best_column(rows: Sequence[int], scores: np.ndarray, best: Mapping[int, str] | None
                ) -> list[str]:
    """Each row's best subtask; '—' for a row without a score (or whose subtask is unknown)."""
    best = best or {}
    return [best.get(int(r), NONE) if np.isfinite(scores[int(r)]) else NONE for r in rows]


def coverage_of(rows: Sequence[int], best: Mapping[int, str], names: Sequence[str]) -> Any:
    """subtasks.coverage of `rows`: per subtask, how many of them serve it best."""
    code = {s: i for i, s in enumerate(names)}
    codes = np.array([code.get(best.get(int(r), ""), -1) for r in rows], dtype=np.int64)
    return subtasks.coverage(codes, names)


def coverage_caption(table: Any, balance: str, n_selected: int, final: bool = True) -> str:
    """What the coverage bars mean, for the rule that made the selection (`final` False: the
    run is not finished, so it is the selection so far)."""
    served = int(table["rows"].sum())
    rest = n_selected - served
    tail = f" {rest:,} selected row(s) have no score (pinned without being drawn)." if rest \
        else ""
    if balance == "subtasks" and int(table["rows"].max()) - int(table["rows"].min()) > 1:
        tail += (" The bars count what each row serves best, not which subtask picked it, so "
                 "they can differ.")
    sel = "selected rows" if final else "rows selected so far (the run is not finished)"
    return (f"How many of the {n_selected:,} {sel} serve each subtask best (their gradient is "
            f"most like its examples'). {subtasks.BALANCE_LABELS[balance]}: "
            f"{subtasks.BALANCE_HELP[balance]}." + tail)
