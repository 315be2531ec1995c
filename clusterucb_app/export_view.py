"""Pure pieces of the Curate & Export page: the filtered curation table (no streamlit)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import pandas as pd

from . import marks, subtask_view

COLUMNS = ["rank", "row", "id", "status", subtask_view.COLUMN, "prompt", "source", "cluster",
           "cluster_label", "score", "round_drawn", "selected", "pinned", "rejected", "tags"]


def filter_rows(table: pd.DataFrame, *, only_selected: bool, sources: Sequence[str],
                clusters: Sequence[int], tag_rows: Collection[int] | None = None
                ) -> pd.DataFrame:
    """The rows the filters keep; `tag_rows` (the rows carrying any chosen tag) when given."""
    view = table
    if only_selected:
        view = view[view["selected"]]
    if sources:
        view = view[view["source"].astype(str).isin(list(sources))]
    if clusters:
        view = view[view["cluster"].isin(list(clusters))]
    if tag_rows is not None:
        view = view[view["row"].isin(list(tag_rows))]
    return view


def curate_table(view: pd.DataFrame, prompts: Sequence[str], labels: Any,
                 ledger_state: Any) -> pd.DataFrame:
    """The rows as the page lists them: a status column (pinned / rejected / banned cluster),
    the prompt's beginning, a rank that reads '—' (not 'None') for unselected rows and, when
    the table knows them, the subtask each scored row serves ('—' for the others)."""
    shown = view.reset_index(drop=True).copy()
    if "best_subtask" in shown:
        shown[subtask_view.COLUMN] = [
            b if isinstance(b, str) and b and pd.notna(s) else subtask_view.NONE
            for b, s in zip(shown["best_subtask"], shown["score"])]
    shown.insert(3, "prompt", list(prompts))
    shown.insert(3, "status", marks.row_status(shown["row"], labels, ledger_state))
    shown["rank"] = ["—" if pd.isna(r) else str(int(r)) for r in shown["rank"]]
    shown["round_drawn"] = ["" if pd.isna(r) else str(int(r)) for r in shown["round_drawn"]]
    return shown[[c for c in COLUMNS if c in shown]]
