"""Pin / reject / ban from any page: the edit, a toast naming what it touched, and an Undo.

Every page edits the ledger through `edit()`, so every edit says what it did (the toast is shown
on the next run, after the page reruns to show the new marks) and can be undone with
`undo_button()` — which restores exactly the rows or clusters the last edit touched, leaving
edits made elsewhere in between alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from . import marks

_UNDO = "_curation_undo"
_TOAST = "_curation_toast"


def _key(lg: Any) -> tuple[str, str | None]:
    return (str(lg.path), lg.clustering)


def edit(lg: Any, op: str, items: Sequence[int], where: str,
         ids: Mapping[int, str] | None = None, names: Mapping[int, str] | None = None) -> None:
    """Apply `op` (pin, unpin, reject, unreject, ban, unban) to rows or clusters `items`."""
    items = sorted({int(i) for i in items})
    if not items:
        return
    before = lg.state()
    if op in ("ban", "unban"):
        for c in items:
            getattr(lg, op)(c, note=where)
    else:
        getattr(lg, op)(items, note=where)
    st.session_state[_UNDO] = {"key": _key(lg), "before": before, "op": op, "items": items}
    st.session_state[_TOAST] = marks.edit_message(op, items, ids, names)


def flush_toast() -> None:
    """Show the toast of the edit made on the previous run (call once per page run)."""
    if msg := st.session_state.pop(_TOAST, None):
        st.toast(msg, icon=":material/check_circle:")


def undo_button(lg: Any, key: str) -> None:
    """An 'Undo: pin 3 rows' button for the last edit made in this session on this ledger."""
    last = st.session_state.get(_UNDO)
    if not last or last["key"] != _key(lg):
        return
    if st.button(marks.undo_label(last["op"], last["items"]), key=key,
                 icon=":material/undo:", help="Puts back the marks these rows or clusters "
                 "had before the last edit (the ledger keeps both edits)."):
        cluster_op = last["op"] in ("ban", "unban")
        edits = marks.restore_edits(lg.state(), last["before"],
                                    rows=[] if cluster_op else last["items"],
                                    clusters=last["items"] if cluster_op else [])
        marks.apply_edits(lg, edits, note="undo")
        st.session_state.pop(_UNDO, None)
        st.session_state[_TOAST] = f"Undone: {last['op']} of {len(last['items'])} " + \
            ("cluster(s)" if cluster_op else "row(s)") + "."
        st.rerun()


def status_column() -> Any:
    """Column config that shows the status text (the colour is in the map and charts)."""
    return st.column_config.TextColumn("status", help="pinned: always selected · rejected: "
                                       "never selected · banned cluster: its cluster is banned")
