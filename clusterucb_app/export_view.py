"""Pure pieces of the Curate & Export page: the filtered curation table, the key that ties a
table selection to the rows it was made on, and whether a saved export is stale (no
streamlit)."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
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


def table_key(prefix: str, shown: pd.DataFrame) -> str:
    """A widget key that changes whenever the rows listed change (`prefix_<hash>`)."""
    digest = hashlib.sha1(np.asarray(shown["row"], dtype=np.int64).tobytes()).hexdigest()[:10]
    return f"{prefix}_{digest}"


def chosen_rows(shown: pd.DataFrame, positions: Sequence[int]) -> list[int]:
    """The pool rows at the table positions selected (a position past the end is dropped)."""
    return [int(shown["row"].iat[i]) for i in positions if 0 <= int(i) < len(shown)]


def stale_export(manifest: dict[str, Any], rows: Sequence[int], tags: dict[int, Any],
                 balance: str) -> str | None:
    """Why a saved export no longer matches the live selection (None when it still does):
    rows added or removed, the order changed, tags or the final rule changed."""
    saved = [int(r) for r in (manifest.get("selected") or {}).get("rows", [])]
    live = [int(r) for r in rows]
    why = []
    added, removed = sorted(set(live) - set(saved)), sorted(set(saved) - set(live))
    if added or removed:
        why.append(f"{len(added):,} row(s) added and {len(removed):,} removed")
    elif saved != live:
        why.append("the rows' order changed")
    saved_tags = {int(r): tuple(v) for r, v in
                  ((manifest.get("tags") or {}).get("rows") or {}).items()}
    live_tags = {int(r): tuple(v) for r, v in tags.items() if int(r) in set(live)}
    if {r: t for r, t in saved_tags.items() if r in set(live)} != live_tags:
        why.append("tags changed")
    saved_rule = (manifest.get("spec") or {}).get("balance", "max")
    if saved_rule != balance:
        why.append(f"the final rule is now '{balance}' (saved with '{saved_rule}')")
    return "; ".join(why) or None
