"""The UCB and Export pages' comparison: the run beside what a user would pick instead at
the same size and budget (random, RDS+, exhaustive LESS when its scores exist), their
overlap and their rows per target subtask (selection/baselines.py computes; this draws).

RDS+ needs hidden states of the pool and the target but no gradient; its scores are made
once by a background job (rds_task.py) and kept in the workspace.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from clusterucb_core.runtime import jobs
from clusterucb_core.selection import baselines as bl
from clusterucb_core.selection.rds import SCORES_NAME, load_rds
from clusterucb_core.workspace import Workspace

from . import rounds, state, ui

JOB = "rds"


def _rds(ws: Workspace, n_rows: int) -> Any:
    """The saved RDS+ scores when they are this pool's and this target's, else None."""
    res = load_rds(ws)
    target = state.load_target(ws)
    if res is None or len(res.scores) != n_rows or target is None or \
            res.target != str(target.fingerprint):
        return None
    return res


def _compute_button(ws: Workspace, key: str, stale: bool) -> None:
    running = bool(jobs.active(ws, JOB))
    label = "Recompute RDS+ scores" if stale else "Compute RDS+ scores"
    if st.button(label, key=f"{key}_rds_go", disabled=running, icon=":material/calculate:",
                 help="Hidden states of the pool (the cluster features when they are hidden "
                      "states, so usually nothing new) and of the target's examples; no "
                      "gradient."):
        ui.start_job(ws, JOB, target="clusterucb_app.rds_task:rds_job",
                     kwargs={"workspace": str(ws.root)}, title="RDS+ scores", unit="rows")
        st.rerun()


def panel(ws: Workspace, run_id: str, key: str, rows: np.ndarray | None = None) -> None:
    """The comparison for run `run_id`; `rows`: its selection as the page shows it (default:
    the run's own top-p)."""
    run = rounds.get(ws, run_id)
    is_rds = run.meta.reward == SCORES_NAME
    name = "this run (RDS+)" if is_rds else bl.UCB
    with st.expander("Against what you would pick instead: random, RDS+ and exhaustive LESS",
                     expanded=False):
        st.caption("RDS+ (arXiv 2503.01807) ranks the pool by the cosine of its hidden states "
                   "to the target's, the best subtask's mean, with no gradient: the cheap "
                   "method to beat.")
        res = _rds(ws, run.N)
        if res is None or jobs.active(ws, JOB):
            ui.job_panel(ws, JOB, key=f"{key}_rds_job")
        if res is None:
            st.info("No RDS+ scores for this pool and target yet.")
            _compute_button(ws, key, stale=load_rds(ws) is not None)
        ex = state.exhaustive_scores(ws, run.N)
        sel = run.selected() if rows is None else np.asarray(rows, dtype=np.int64)
        spent = max(run.budget_used, run.n_top)  # what the run has scored so far
        b = bl.baselines(sel, run.labels, run.n_top, spent, run.spec.seed,
                         rds=None if res is None or is_rds else res.scores, exhaustive=ex,
                         run_name=name)
        if b.same_budget:
            st.markdown(f"**Same budget:** random and RDS+ each score {spent:,} rows (random "
                        f"ones; RDS+'s top ones) and keep their best {run.n_top:,}, as the run "
                        "does; the scores are the exhaustive ones, what their gradients give.")
        else:
            st.markdown(f"**Same size, no gradient:** without exhaustive scores the baselines "
                        f"score nothing: random is {run.n_top:,} rows drawn at random, RDS+ "
                        f"its top {run.n_top:,}. Exhaustive scoring (Model & Features page) "
                        "adds recall and the same-budget versions.")
        summ = bl.summary(b, run.n_top, ex)
        cfg = {"recall": st.column_config.NumberColumn("recall of exhaustive top-p",
                                                       format="%.3f"),
               "mass share": st.column_config.NumberColumn(format="%.3f")}
        st.dataframe(summ, hide_index=True, key=f"{key}_rds_summary", column_config=cfg)
        st.markdown("**Shared rows** (diagonal: rows kept)")
        st.dataframe(bl.overlap(b), key=f"{key}_rds_overlap")
        if res is not None and len(res.subtasks) >= 2:
            st.markdown("**Rows per target subtask**")
            st.dataframe(bl.per_subtask(b, res.best_subtask, res.subtasks), hide_index=True,
                         key=f"{key}_rds_subtasks", height=ui.table_height(len(res.subtasks)))
            st.caption("Each row counted under its nearest subtask by hidden states, the same "
                       "rule for every column (the Subtask coverage tab uses the gradients of "
                       "scored rows).")
        if res is not None:
            st.caption(f"RDS+ read {ui.plain(res.features)}: store `{res.store}`.")
