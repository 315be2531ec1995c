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
from clusterucb_app.spec_form import widget
from clusterucb_core.config import SelectionSpec
from clusterucb_core.selection import run as selection
from clusterucb_core.workspace import Workspace

from . import curation_ui, rounds, slots, state, ui

PLAY = "ucb_play"
TODO = "_ucb_todo"


SPEEDS = {"slow": 3.0, "normal": 1.0, "fast": 0.3}  # seconds between Play's rounds


def play_speed() -> float:
    """The Play speed control; the seconds Play waits between two rounds."""
    name = st.columns([1, 2])[0].select_slider(
        "Play speed", list(SPEEDS), value="normal", key="ucb_speed",
        format_func=lambda k: f"{k} ({SPEEDS[k]:g} s per round)",
        help="How fast Play steps through the rounds (a round that computes gradients can "
             "take longer).")
    return SPEEDS[name]


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
            policy = widget(c[0], SelectionSpec, "policy", d.policy)
            beta = widget(c[1], SelectionSpec, "beta", d.beta)
            cold = widget(c[2], SelectionSpec, "cold_start", d.cold_start)
            budget = widget(c[3], SelectionSpec, "budget", d.budget)
            c = st.columns(4)
            top_p = widget(c[0], SelectionSpec, "top_p", d.top_p)
            draw = widget(c[1], SelectionSpec, "draw_batch", d.draw_batch)
            seed = widget(c[2], SelectionSpec, "seed", d.seed)
            opts = sources or ["(none yet)"]
            reward = c[3].selectbox("Reward source", opts,
                                    index=opts.index(saved) if saved in opts else 0,
                                    format_func=lambda s: rounds.REWARD_LABELS.get(s, s),
                                    help="Remembered per workspace.")
            c = st.columns(4)
            rule = widget(c[0], SelectionSpec, "balance", d.balance, key="ucb_new_balance")
            order = widget(c[1], SelectionSpec, "draw_order", d.draw_order,
                           key="ucb_new_draw_order")
            arms = widget(c[2], SelectionSpec, "arms_per_round", d.arms_per_round,
                          key="ucb_new_arms_per_round")
            st.caption(f"Pool: {n_rows:,} rows in {clusters.k} clusters ('{clusters_name}'). "
                       f"Budget {budget:g} → {selection.count_of(budget, n_rows):,} rows scored; "
                       f"top-p {top_p:g} → {selection.count_of(top_p, n_rows):,} rows selected.")
            if rounds.REWARD_EXHAUSTIVE in sources:
                st.caption("Reward source: the exhaustive scores table (the default while it "
                           "exists) looks each drawn row's score up, computing no gradient; "
                           "lazy gradients compute the drawn rows only, as ClusterUCB does.")
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


def defaults_sentence(spec: Any) -> str:
    """What to press first, and how the form's defaults differ from the paper's."""
    head = "Press Start a new run above, then step through the rounds. "
    if spec.draw_order == "random" and spec.split_hot <= 0:
        return head + "The defaults are the paper's (random draws within the chosen cluster)."
    return head + ("The defaults are the paper's except the draw order: "
                   f"{selection.DRAW_ORDER_LABELS.get(spec.draw_order, spec.draw_order)}; "
                   "choose 'random' for the paper's uniform draws.")


def reward_sentence(source: str | None) -> str:
    """Where the run's rewards come from, said where the run starts."""
    if source == rounds.REWARD_EXHAUSTIVE:
        return ("Rewards: the exhaustive scores table. The run looks each drawn row's score "
                "up (instant, for teaching) instead of computing its gradient; choose "
                "'Lazy gradients' to compute only the drawn rows, as ClusterUCB does.")
    if source == rounds.REWARD_LAZY:
        return ("Rewards: lazy gradients. Each round computes the gradients of the rows it "
                "draws, and only those.")
    return ""


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
    pinned = len(run.ledger_view().pinned)
    if warn := slots.over_slots(pinned, run.n_top):
        st.warning(warn, icon=":material/push_pin:")
    if run.done:
        st.success(f"Finished: {run.budget_used:,} rows scored in {done_rounds} rounds. "
                   + slots.selected_sentence(len(run.selected()), run.n_top, pinned)
                   + " — see Curate & Export.")
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
    both = slots.recalls(run, ex)
    c = st.columns(4)
    c[0].metric("Bandit recall", f"{both['bandit_recall']:.1%}",
                help="Recall of the exhaustive top-p: its share among the bandit's own "
                     "top-p of the rows it scored (no hand edits): how well it spent the "
                     "budget.")
    c[1].metric("Curated recall", f"{both['curated_recall']:.1%}",
                help="The same share for the selection with your pins, rejections and bans "
                     "applied (what Curate & Export saves). Pins take slots.")
    over = both["n_curated"] > run.n_top  # more pins than slots: its mass is not comparable
    curated = "n/a" if over else f"{both['curated_mass']:.0%}"
    c[2].metric("Mass: bandit / curated", f"{both['bandit_mass']:.0%} / {curated}",
                help="Share of the exhaustive top-p's score mass each selection holds"
                     + (f" (the curated selection holds {both['n_curated']:,} rows for "
                        f"{run.n_top:,} slots, so its share is not comparable)." if over
                        else "."))
    c[3].metric("Rows scored vs exhaustive", f"{run.budget_used / run.N:.1%}")
    tab = met["rounds"]
    if len(tab):
        st.plotly_chart(pr.regret_chart(tab["round"], tab["recall_so_far"], tab["cum_regret"]),
                        key="ucb_regret")
    from clusterucb_core.selection import fidelity

    curve = fidelity.run_curve(run.round_drawn, ex, run.n_top)
    rand = fidelity.random_curve(ex, run.n_top, exclude=run.labels < 0)
    st.plotly_chart(pr.budget_figure(curve, rand), key="ucb_budget_curve")
    st.caption("What the budget bought: this run after each round, random draws of the same "
               "size (mean of 5 seeds), and exhaustive LESS (every row scored).")
