"""The UCB Rounds page's parts: the new-run form, the controls and the detail tabs.

Play / Pause are two buttons whose callbacks *set* `ucb_play` (never toggle it): a click that
arrives while a round is being scored is applied before the next run of the page, so Pause
always stops Play, and a double delivery cannot switch it back on.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import streamlit as st

from clusterucb_app import plots_rounds as pr
from clusterucb_core.selection import policies, subtasks, topm
from clusterucb_core.selection import run as selection
from clusterucb_core.workspace import Workspace

from . import curation_ui, rounds, state, ui

PLAY = "ucb_play"
TODO = "_ucb_todo"


def set_play(on: bool) -> None:
    st.session_state[PLAY] = bool(on)


def settings_form(ws: Workspace, clusters: Any, clusters_name: str, sources: list[str],
                  expanded: bool) -> None:
    """The form that starts a new run; on success the page shows the new run."""
    d = state.settings(ws, "selection")
    n_rows = len(clusters.labels)
    saved = ws.meta().get("ucb_reward")
    with st.expander("Settings — start a new run", expanded=expanded):
        if not sources:
            st.warning("No reward source yet. Either compute **exhaustive scores** (Model & "
                       "Features page, for teaching) or the **reward features setup** (warm-up "
                       "checkpoint and target) so rows can be scored on demand.")
        with st.form("ucb_settings"):
            c = st.columns(4)
            policy = c[0].selectbox("Policy", policies.POLICIES, index=policies.POLICIES.index(
                d.policy) if d.policy in policies.POLICIES else 0,
                help="ucb_beta: mean + β·std (the paper). ucb1: classic UCB1. thresh_*: share "
                     "of draws above the top-quantile. random: baseline. thompson: Gaussian "
                     "Thompson sampling.")
            beta = c[1].number_input("β (exploration)", 0.0, 10.0, float(d.beta), 0.1)
            cold = c[2].number_input("Cold start (fraction per cluster)", 0.0, 1.0,
                                     float(d.cold_start), 0.01, format="%.3f")
            budget = c[3].number_input("Budget (fraction of the pool scored)", 0.001, 1.0,
                                       float(d.budget), 0.01, format="%.3f")
            c = st.columns(4)
            top_p = c[0].number_input("Top-p (fraction selected)", 0.001, 1.0, float(d.top_p),
                                      0.01, format="%.3f")
            draw = c[1].number_input("Draw batch (rows per round)", 1, 10_000, int(d.draw_batch))
            seed = c[2].number_input("Seed", 0, 2**31 - 1, int(d.seed))
            opts = sources or ["(none yet)"]
            reward = c[3].selectbox("Reward source", opts,
                                    index=opts.index(saved) if saved in opts else 0,
                                    format_func=lambda s: rounds.REWARD_LABELS.get(s, s),
                                    help="Remembered per workspace.")
            c = st.columns(4)
            arms = c[2].number_input("Arms per round", 1, 64, int(d.arms_per_round),
                                     key="ucb_new_arms_per_round", help=topm.HELP)
            order = c[1].selectbox(
                "Draw order (within the chosen cluster)", selection.DRAW_ORDERS,
                index=selection.DRAW_ORDERS.index(d.draw_order),
                format_func=selection.DRAW_ORDER_LABELS.get, key="ucb_new_draw_order",
                help=selection.draw_order_help())
            rule = c[0].selectbox(
                "Final selection", subtasks.BALANCES, format_func=subtasks.BALANCE_LABELS.get,
                index=subtasks.BALANCES.index(d.balance), key="ucb_new_balance",
                help=subtasks.balance_help()
                + "  \nOnly the final pick; it can be switched later for this run.")
            st.caption(f"Pool: {n_rows:,} rows in {clusters.k} clusters ('{clusters_name}'). "
                       f"Budget {budget:g} → {selection.count_of(budget, n_rows):,} rows scored; "
                       f"top-p {top_p:g} → {selection.count_of(top_p, n_rows):,} rows selected.")
            submitted = st.form_submit_button("Start a new run", type="primary",
                                              disabled=not sources)
    if submitted:
        try:  # a SelectionSpec checks its settings when built
            spec = replace(d, policy=policy, beta=float(beta), cold_start=float(cold),
                           budget=float(budget), top_p=float(top_p), draw_batch=int(draw),
                           seed=int(seed), balance=rule, draw_order=order,
                           arms_per_round=int(arms))
            rid = rounds.create(ws, spec, clusters_name, reward)
            state.save_settings(ws, selection=spec)
        except (ValueError, FileNotFoundError, OSError) as exc:
            ui.show_error(exc, "Starting the run", "change the setting named above")
        else:
            set_play(False)
            st.session_state["_ucb_note"] = f"Started run {rounds.describe(ws, rid)}."
            st.rerun()


def run_picker(ws: Workspace, cur_id: str) -> None:
    """Every run, named by its settings; the workspace's current run is the one shown."""
    ids = rounds.run_ids(ws)
    if len(ids) < 2:
        return
    # keyed by the current run: a fresh widget whenever the workspace's current run changes,
    # so a stale choice left in the browser can never switch the page back to an old run
    pick = st.selectbox("Run", ids, index=ids.index(cur_id) if cur_id in ids else 0,
                        key=f"ucb_run_pick_{cur_id}", format_func=lambda r: rounds.describe(ws, r),
                        help="Every run's log stays in the workspace; pick one to view or "
                             "continue it. Curate & Export uses this run.")
    if pick != cur_id:
        ws.update_meta(current_run=pick)
        set_play(False)
        st.rerun()


def request(n: int | None) -> None:
    """Button callback: play `n` rounds (None: the N field) on the page's next run."""
    st.session_state[TODO] = int(st.session_state.get("ucb_n", 10) if n is None else n)


def pending(run: selection.SelectionRun) -> int:
    """Rounds to play now: what a button asked for, else one tick of Play."""
    todo = int(st.session_state.pop(TODO, 0) or 0)
    if not todo and st.session_state.get(PLAY) and run.oracle is not None and not run.done:
        todo = 1
    return todo


def controls(run: selection.SelectionRun) -> bool:
    """The step / play / reset buttons (drawn after the rounds they asked for were played, so
    their labels fit the run: 'Cold start' becomes 'Step 1 round'); True when Reset is pressed."""
    can = run.oracle is not None and not run.done
    c = st.columns([1.2, 1, 0.7, 1, 1, 1])
    first = run.next_round == 0
    c[0].button("Cold start" if first else "Step 1 round", type="primary", disabled=not can,
                key="ucb_step1", on_click=request, args=(1,))
    c[1].button("Step N rounds", disabled=not can, key="ucb_stepn", on_click=request,
                args=(None,))
    c[2].number_input("N", 1, 1000, 10, key="ucb_n", label_visibility="collapsed")
    if st.session_state.get(PLAY):
        c[3].button("Pause", icon=":material/pause:", key="ucb_pause_btn",
                    on_click=set_play, args=(False,))
    else:
        c[3].button("Play", icon=":material/play_arrow:", key="ucb_play_btn", disabled=not can,
                    on_click=set_play, args=(True,))
    c[4].button("Run to the end", disabled=not can, key="ucb_end", on_click=request,
                args=(10**9,))
    reset = c[5].button("Reset", key="ucb_reset", disabled=first,
                        help="A new run with the same settings, shown at once. The old log "
                             "stays in the workspace (an empty run is replaced, not kept).")
    if run.oracle is None:
        st.warning("This run's reward source is not available any more; it can be viewed but "
                   "not continued. Start a new run above.")
    return reset


def status(run: selection.SelectionRun, nxt: dict[str, Any] | None) -> None:
    done_rounds = len(run.records)
    m = st.columns([1, 1, 1, 3])
    m[0].metric("Round", f"{run.next_round - 1}" if done_rounds else "-",
                help="Round 0 is the cold start.")
    m[1].metric("Rows scored", f"{run.budget_used:,} / {run.budget_total:,}")
    best = np.nanmax(run.scores) if np.isfinite(run.scores).any() else float("nan")
    m[2].metric("Best score so far", f"{best:.4f}" if np.isfinite(best) else "-")
    frac = run.budget_used / max(run.budget_total, 1)
    m[3].progress(frac, text=f"Budget used: {frac:.0%} ({run.spec.policy}, β={run.spec.beta:g}, "
                             f"draw batch {run.spec.draw_batch}, seed {run.spec.seed})")
    if run.done:
        st.success(f"Finished: {run.budget_used:,} rows scored in {done_rounds} rounds. "
                   f"The top {run.n_top:,} are selected — see Curate & Export.")
    elif nxt is not None:
        st.info(ui.plain(nxt["sentence"]))
    if done_rounds:
        last = run.records[-1]
        st.caption(ui.plain(f"Last round ({last.round}): {last.explanation.get('sentence', '')}"))


def charts(run: selection.SelectionRun, nxt: dict[str, Any] | None, names: dict[int, str],
           xy: Any, pool: Any) -> Any:
    """The arm chart and the map of drawn rows; returns the policy values shown."""
    stats = run.stats()
    values = nxt["values"] if (nxt and nxt["values"] is not None) else (
        run.records[-1].value if run.records else None)
    left, right = st.columns(2)
    with left:
        st.plotly_chart(pr.arm_chart(
            stats.mean, stats.std, stats.n, values,
            beta=run.spec.beta if run.spec.policy == "ucb_beta" else 1.0,
            exhausted=stats.exhausted, banned=stats.banned,
            next_arm=nxt["arm"] if nxt else None,
            names=rounds.arm_names(run, names),
            value_label=f"{run.spec.policy} value", title="Arms",
            predicted=stats.expected), key="ucb_arms")
    with right:
        if xy is None:
            st.info("No 2-D map yet: compute it on the Clusters page to see where the draws "
                    "land.")
        else:
            last_rows = run.records[-1].rows if run.records else []
            hover = ui.RowHover(pool, scores=run.scores)
            st.plotly_chart(pr.draws_map(xy, run.scores, run.round_drawn >= 0, last_rows,
                                         hover=hover), key="ucb_map")
    return values


def last_round(ws: Workspace, run: selection.SelectionRun, pool: Any, clusters_name: str,
               best: dict[int, str] | None = None) -> None:
    """The last round's rows (with `best`, the subtask each serves), to read, pin or reject."""
    if not run.records:
        st.caption("Nothing drawn yet.")
        return
    last = run.records[-1]
    lg = state.ledger(ws, clusters_name)
    df = rounds.drawn_table(run, last.rows, pool, lg.state(), best)
    sel = st.dataframe(df, hide_index=True, on_select="rerun", selection_mode="multi-row",
                       key=f"ucb_last_{last.round}", height=ui.table_height(len(df)),
                       column_config={"status": curation_ui.status_column()})
    chosen = [int(df["row"].iat[i]) for i in sel.selection.rows]
    # the toast names rows by id too (the first ones: it lists six)
    ids = {} if pool is None else dict(zip(chosen[:6], map(str, pool.column("id", chosen[:6]))))
    b = st.columns([1, 1, 1.4, 2.6])
    where = f"UCB round {last.round}"
    if b[0].button("Pin selected", icon=":material/push_pin:", disabled=not chosen,
                   key="ucb_pin", help="Pinned rows are always in the final selection."):
        curation_ui.edit(lg, "pin", chosen, where, ids)
        st.rerun()
    if b[1].button("Reject selected", icon=":material/block:", disabled=not chosen,
                   key="ucb_reject", help="Rejected rows are never selected (their draw still "
                                          "counts against the budget)."):
        curation_ui.edit(lg, "reject", chosen, where, ids)
        st.rerun()
    with b[2]:
        curation_ui.undo_button(lg, "ucb_undo")
    if pool is not None and chosen:
        ui.show_text(ui.chat_text(pool.messages([chosen[0]])[0]), height=260)
    elif pool is not None:
        st.caption("Select a row (left edge of the table) to read it whole or to pin or "
                   "reject it.")


def against_exhaustive(ws: Workspace, run: selection.SelectionRun) -> None:
    ex = state.exhaustive_scores(ws, run.N)
    if ex is None:
        st.caption("No exhaustive scores for this pool and target: run exhaustive scoring "
                   "(Model & Features page) to compare the bandit with scoring every row.")
        return
    if not run.records:
        return
    from clusterucb_core.selection.oracle import run_metrics

    met = run_metrics(run, ex)
    c = st.columns(3)
    c[0].metric("Recall of the exhaustive top-p", f"{met['recall']:.1%}",
                help="Share of the rows exhaustive scoring would select that this run "
                     "selects now.")
    c[1].metric("Score mass captured", f"{met['mass_share']:.1%}")
    c[2].metric("Rows scored vs exhaustive", f"{run.budget_used / run.N:.1%}")
    tab = met["rounds"]
    if len(tab):
        st.plotly_chart(pr.regret_chart(tab["round"], tab["recall_so_far"], tab["cum_regret"]),
                        key="ucb_regret")
    from clusterucb_core.selection import fidelity

    curve = fidelity.run_curve(run.round_drawn, ex, run.n_top)
    rand = fidelity.random_curve(ex, run.n_top, exclude=run.labels < 0)
    st.plotly_chart(fidelity.budget_figure(curve, rand), key="ucb_budget_curve")
    st.caption("What the budget bought: this run after each round, random draws of the same "
               "size (mean of 5 seeds), and exhaustive LESS (every row scored).")
