"""Pin / reject / ban from any page: the edit, a toast naming what it touched, and an Undo.

Every page edits the ledger through `edit()`, so every edit says what it did (the toast is shown
on the next run, after the page reruns to show the new marks) and can be undone with
`undo_button()` — which restores exactly the rows or clusters the last edit touched, leaving
edits made elsewhere in between alone. The last edit is read from the ledger (each click's
edits carry an `action` id), so Undo survives a reload.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from . import marks

_TOAST = "_curation_toast"


def edit(lg: Any, op: str, items: Sequence[int], where: str,
         ids: Mapping[int, str] | None = None, names: Mapping[int, str] | None = None) -> None:
    """Apply `op` (pin, unpin, reject, unreject, ban, unban) to rows or clusters `items`."""
    items = sorted({int(i) for i in items})
    if not items:
        return
    action = uuid.uuid4().hex[:12]  # names this click's edits in the ledger, for Undo
    if op in ("ban", "unban"):
        for c in items:
            getattr(lg, op)(c, note=where, action=action)
    else:
        getattr(lg, op)(items, note=where, action=action)
    st.session_state[_TOAST] = marks.edit_message(op, items, ids, names)


def flush_toast() -> None:
    """Show the toast of the edit made on the previous run (call once per page run)."""
    if msg := st.session_state.pop(_TOAST, None):
        st.toast(msg, icon=":material/check_circle:")


def undo_button(lg: Any, key: str) -> None:
    """An 'Undo: pin 3 rows' button for the last edit in this ledger, read from the ledger
    (so it survives a reload and follows edits made in another tab)."""
    last = marks.last_action(lg.edits(), lg.clustering)
    if last is None:
        return
    cluster_op = last["op"] in ("ban", "unban")
    edits = marks.restore_edits(lg.state(), last["before"],
                                rows=[] if cluster_op else last["items"],
                                clusters=last["items"] if cluster_op else [])
    if not edits:  # the marks are already as they were (e.g. undone in another tab)
        return
    if st.button(marks.undo_label(last["op"], last["items"]), key=key,
                 icon=":material/undo:", help="Puts back the marks these rows or clusters "
                 "had before the last edit (the ledger keeps both edits)."):
        marks.apply_edits(lg, edits, note="undo", action=marks.UNDO_PREFIX + last["action"])
        st.session_state[_TOAST] = f"Undone: {last['op']} of {len(last['items'])} " + \
            ("cluster(s)" if cluster_op else "row(s)") + "."
        st.rerun()


def status_column() -> Any:
    """Column config that shows the status text (the colour is in the map and charts)."""
    return st.column_config.TextColumn("status", help="pinned: always selected · rejected: "
                                       "never selected · banned cluster: its cluster is banned")
