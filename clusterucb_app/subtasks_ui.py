"""Which target subtask each scored row serves, and the final-selection rule, for the UCB and
Curate & Export pages.

A row's score is its best cosine over the target's subtasks; the engine
(`Pipeline.best_subtasks`, `Pipeline.result`) says which subtask gave it and applies the rule
(`balance`: top-p by score, or round-robin over subtasks). The rule only changes the final
pick, not the draws, so both pages let the learner switch it for the current run (one choice
per run, kept in the workspace; it starts at the run's own setting) and the export records
the rule it was made with.

The per-subtask scores are read from the reward features already stored for the scored rows
(the engine remembers each row's, so a rerun reads only the rows drawn since); nothing here
computes a gradient. The view is kept per run state (log, ledger, rule) for the session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import streamlit as st

from clusterucb_app import plots_rounds
from clusterucb_core.selection import subtasks
from clusterucb_core.workspace import Workspace

from . import state, subtask_view, ui

_CHOICES = "final_rule"  # workspace meta: run id -> the rule chosen for it
_VIEWS = "_subtask_views"


@dataclass
class SubtaskView:
    """What the pages show: the subtask names, and when readable the engine's result (its
    selection under `balance`, each scored row's best subtask); else `note` says why not."""

    names: list[str]
    balance: str
    result: Any = None
    note: str = ""
    best: dict[int, str] = field(default_factory=dict)

    @property
    def shown(self) -> bool:
        """True when the target has subtasks to tell apart (two or more)."""
        return len(self.names) >= 2

    @property
    def column(self) -> dict[int, str] | None:
        """Row -> best subtask for a table's column; None when there is none to show."""
        return self.best if self.shown and self.result is not None else None


def balance(ws: Workspace, run_id: str, run_spec: Any) -> str:
    """The rule chosen for this run (kept in the workspace, so a reload, another tab and both
    pages agree); the run's own until changed."""
    chosen = (ws.meta().get(_CHOICES) or {}).get(run_id)
    return chosen if chosen in subtasks.BALANCES else run_spec.balance


def balance_picker(ws: Workspace, run_id: str, run_spec: Any, key: str) -> str:
    """Radio for the final-selection rule of this run; both pages show the same choice."""
    now = balance(ws, run_id, run_spec)

    def keep() -> None:
        from clusterucb_core.selection.runs import run_ids

        known = set(run_ids(ws))  # runs deleted since lose their choice
        old = {r: b for r, b in (ws.meta().get(_CHOICES) or {}).items() if r in known}
        ws.update_meta(**{_CHOICES: {**old, run_id: st.session_state[key]}})

    st.radio("Final selection", subtasks.BALANCES, index=subtasks.BALANCES.index(now),
             key=key, horizontal=True, format_func=subtasks.BALANCE_LABELS.get,
             help=subtasks.balance_help() + "  \nOnly the final pick changes, not the draws; "
             f"the run was started with `{run_spec.balance}`.", on_change=keep)
    return balance(ws, run_id, run_spec)


def _stamp(ws: Workspace, run: Any) -> tuple:
    path = ws.ledger_path
    led = (path.stat().st_size, path.stat().st_mtime_ns) if path.exists() else None
    log = run.log_path.stat().st_size if run.log_path and run.log_path.exists() else None
    return (str(ws.root), str(run.log_path), log, led, (state.target_ref(ws) or {}).get("path"))


def view(ws: Workspace, run: Any, run_id: str) -> SubtaskView:
    """The subtask view of the run's current selection under the chosen rule (kept per run
    state in the session: reruns that change nothing read nothing)."""
    rule = balance(ws, run_id, run.spec)
    key = (*_stamp(ws, run), rule)
    memo = st.session_state.setdefault(_VIEWS, {})
    if key not in memo:
        memo.clear()  # one run state at a time
        memo[key] = _compute(ws, run, rule)
    return memo[key]


def _compute(ws: Workspace, run: Any, rule: str) -> SubtaskView:
    try:
        target = state.load_target(ws)
    except (OSError, ValueError) as exc:
        return SubtaskView([], rule, note=str(exc))
    names = list(target.subtasks) if target is not None else []
    if len(names) < 2:
        return SubtaskView(names, rule)
    from . import engine

    scored = np.flatnonzero(np.isfinite(run.scores))
    try:
        pipe = engine.pipeline(ws)
        why = pipe.subtasks_ready(scored)
        if why:
            return SubtaskView(names, rule, note=f"Which subtask each row serves is not shown: "
                               f"{why} (lazy rounds and exhaustive scoring store them).")
        with st.spinner("Reading which subtask each scored row serves (the first time loads "
                        "the model)..."):
            res = pipe.result(run, balance=rule)
    except Exception as exc:  # noqa: BLE001 - the pages work without this view
        return SubtaskView(names, rule, note=f"Which subtask each row serves could not be "
                           f"read: {exc}")
    return SubtaskView(names, rule, result=res, best=dict(res.best_subtask or {}))


def coverage_panel(ws: Workspace, sub: SubtaskView, run_id: str, run_spec: Any, key: str,
                   picker: bool = True) -> None:
    """The coverage bars of the selection and what they mean (with `picker`, the rule's
    radio above them)."""
    if not sub.shown:
        st.caption("The target has one subtask: every scored row serves it, so there is no "
                   "coverage to show and no round-robin to choose.")
        return
    if sub.result is None:
        st.caption(ui.plain(sub.note))
        return
    if picker:
        balance_picker(ws, run_id, run_spec, key=f"{key}_balance")
    rows = sub.result.rows
    table = subtask_view.coverage_of(rows, sub.best, sub.names)
    st.plotly_chart(plots_rounds.coverage_figure(table, title="Selected rows per target subtask"),
                    key=f"{key}_coverage")
    final = sub.result.budget_used >= sub.result.budget_total
    st.caption(ui.plain(subtask_view.coverage_caption(table, sub.balance, len(rows), final)))
