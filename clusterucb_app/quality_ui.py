"""How good is this selection, said where a user looks: the audit meter (estimated recall of
exhaustive LESS's top-p, selection/audit.py) on the UCB page, and the note that one subtask
takes a max-rule selection (selection/takeover.py) on the UCB and Export pages, with what
round-robin over subtasks would pick and one click to switch the run's final rule."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from clusterucb_core.selection.audit import audit_run
from clusterucb_core.selection.subtasks import BALANCE_LABELS
from clusterucb_core.selection.takeover import counts_of, takeover
from clusterucb_core.workspace import Workspace

from . import subtasks_ui, ui

_MEMO = "_audit_meter"


def _audit(run: Any) -> Any:
    """The run's audit, kept in the session per log size (a round changes it)."""
    size = run.log_path.stat().st_size if run.log_path and run.log_path.exists() else \
        len(run.records)
    key = (str(run.log_path), size, run.n_top)
    memo = st.session_state.setdefault(_MEMO, {})
    if key not in memo:
        memo.clear()
        memo[key] = audit_run(run)
    return memo[key]


def meter(run: Any) -> None:
    """'estimated recall 0.58 [0.49, 0.66]; checking it exhaustively would cost N gradients'."""
    if not run.records:
        return
    a = _audit(run)
    if a is None:
        st.caption("No recall estimate: the run has no uniform cold start to check its "
                   "guesses on.")
        return
    c = st.columns([1, 1, 2])
    c[0].metric("Estimated recall", f"{a.recall.value:.2f}",
                help="The share of the rows exhaustive LESS would select that this run "
                     "selects, estimated without scoring every row: a ridge model on the "
                     "cluster features fills in the unscored rows, its errors measured on the "
                     "cold start (a uniform sample of every cluster), bootstrapped for the "
                     f"{a.level:.0%} interval. It is a model's guess; exhaustive scoring "
                     "checks it.")
    c[1].metric("Estimated score mass", f"{a.mass_share.value:.2f}",
                help="The selection's summed scores over the exhaustive top-p's, estimated "
                     "the same way.")
    c[2].caption(ui.plain(a.sentence() + "."))


def takeover_note(ws: Workspace, run: Any, sub: Any, run_id: str, key: str) -> None:
    """When one subtask takes a max-rule selection: say so, show the balanced rule's counts per
    subtask beside the current ones, and offer the switch (nothing is redrawn)."""
    if not sub.shown or sub.result is None:
        return
    counts = counts_of(sub.result.rows, sub.best, sub.names)
    if takeover(counts, sub.balance) is None:
        return
    from . import engine

    try:
        bal = engine.pipeline(ws).result(run, balance="subtasks")
    except Exception:  # noqa: BLE001 - the note stands without the comparison
        bal = None
    balanced = None if bal is None else counts_of(bal.rows, bal.best_subtask or {}, sub.names)
    note = takeover(counts, sub.balance, balanced)
    st.warning(ui.plain(note.sentence()), icon=":material/balance:")
    if balanced is not None:
        table = pd.DataFrame({"subtask": sub.names,
                              BALANCE_LABELS["max"]: [counts[s] for s in sub.names],
                              BALANCE_LABELS["subtasks"]: [balanced[s] for s in sub.names]})
        st.dataframe(table[(table.iloc[:, 1] > 0) | (table.iloc[:, 2] > 0)], hide_index=True,
                     key=f"{key}_takeover_table")
    if st.button(f"Switch this run to {BALANCE_LABELS['subtasks'].lower()}",
                 key=f"{key}_takeover_switch", icon=":material/balance:",
                 help="Only the final pick changes, not the draws; switch back with the "
                      "final-selection choice."):
        subtasks_ui.set_balance(ws, run_id, "subtasks")
        st.rerun(scope="app")
