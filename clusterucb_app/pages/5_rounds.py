"""Step 5: the UCB rounds — watch the bandit spend the budget, one round at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from clusterucb_app import rounds, state, ui
from clusterucb_core import plots_rounds as pr
from clusterucb_core import policies, selection
from clusterucb_core.config import SelectionSpec
from clusterucb_core.plots import escape
from clusterucb_core.scorable import workspace_sentence as scorable_sentence

ws = ui.workspace()
ui.header(
    "UCB Rounds",
    "Each cluster is an arm of a bandit. Every round plays one arm: it draws a few of its rows, "
    "scores them against the target, and updates what it believes about that arm.",
    r"""
**Why a bandit?** Scoring a row means computing its gradient — the expensive part. Rows in
the same cluster have similar gradients, hence similar scores, so a few draws tell a lot
about a whole cluster. The bandit spends a fixed **budget** (a fraction of the pool) where
the scores have been high *or uncertain*.

1. **Cold start**: draw `max(floor(|C_k|·c), 1)` rows from every cluster (c = cold start).
2. **Rounds**: play the arm with the largest `mean + β·std` of its rewards (`ucb_beta`, the
   paper's rule). A large β explores (uncertain arms), β = 0 exploits (best mean so far).
   An arm never drawn goes first; an exhausted arm is never chosen. Each round draws
   `draw batch` rows of that arm.
3. **Final selection**: the top `p` of all scored rows (cold start included), with your pins
   and rejections applied.

The chart shows each arm's mean with its band (mean ± β·std), the policy's value (◇), the
pulls above; grey = exhausted or banned, orange = the arm about to be played.
""")

clusters_name = state.current_clusters_name(ws)
if not ui.need(clusters_name is not None,
               "No clusters yet: compute features and cluster the pool first.",
               "pages/4_clusters.py"):
    st.stop()
clusters = state.load_clusters(ws, clusters_name)
n_rows = len(clusters.labels)
unscorable = scorable_sentence(ws.root)
if unscorable and "cannot be scored" in unscorable:
    st.warning(unscorable)
sources = rounds.reward_sources(ws, n_rows)

try:
    pool = state.load_pool(ws)
except Exception:  # noqa: BLE001 - the page works without texts
    pool = None
if pool is not None and len(pool) != n_rows:
    st.warning(f"The pool has {len(pool):,} rows but the clusters cover {n_rows:,}: "
               "the clusters were made from another pool. Re-run the clustering.")
    pool = None

run_list = rounds.run_ids(ws)
cur_id = rounds.current_id(ws)

# ------------------------------------------------------------------------------- settings
defaults = state.settings(ws, "selection")
with st.expander("Settings — start a new run", expanded=cur_id is None):
    if not sources:
        st.warning("No reward source yet. Either compute **exhaustive scores** (Model & "
                   "Features page, for teaching) or the **reward features setup** (warm-up "
                   "checkpoint and target) so rows can be scored on demand.")
    with st.form("ucb_settings"):
        c = st.columns(4)
        policy = c[0].selectbox("Policy", policies.POLICIES,
                                index=policies.POLICIES.index(defaults.policy)
                                if defaults.policy in policies.POLICIES else 0,
                                help="ucb_beta: mean + β·std (the paper). ucb1: classic UCB1. "
                                     "thresh_*: share of draws above the top-quantile. "
                                     "random: baseline. thompson: Gaussian Thompson sampling.")
        beta = c[1].number_input("β (exploration)", 0.0, 10.0, float(defaults.beta), 0.1)
        cold = c[2].number_input("Cold start (fraction per cluster)", 0.0, 1.0,
                                 float(defaults.cold_start), 0.01, format="%.3f")
        budget = c[3].number_input("Budget (fraction of the pool scored)", 0.001, 1.0,
                                   float(defaults.budget), 0.01, format="%.3f")
        c = st.columns(4)
        top_p = c[0].number_input("Top-p (fraction selected)", 0.001, 1.0,
                                  float(defaults.top_p), 0.01, format="%.3f")
        draw = c[1].number_input("Draw batch (rows per round)", 1, 10_000,
                                 int(defaults.draw_batch))
        seed = c[2].number_input("Seed", 0, 2**31 - 1, int(defaults.seed))
        reward = c[3].selectbox("Reward source", sources or ["(none yet)"],
                                format_func=lambda s: rounds.REWARD_LABELS.get(s, s))
        st.caption(f"Pool: {n_rows:,} rows in {clusters.k} clusters ('{clusters_name}'). "
                   f"Budget {budget:g} → {selection.count_of(budget, n_rows):,} rows scored; "
                   f"top-p {top_p:g} → {selection.count_of(top_p, n_rows):,} rows selected.")
        submitted = st.form_submit_button("Start a new run", type="primary",
                                          disabled=not sources)
    if submitted:
        try:  # a SelectionSpec checks its settings when built
            spec = SelectionSpec(policy=policy, beta=float(beta), cold_start=float(cold),
                                 budget=float(budget), top_p=float(top_p),
                                 draw_batch=int(draw), seed=int(seed),
                                 quantile=defaults.quantile)
            rid = rounds.create(ws, spec, clusters_name, reward)
            state.save_settings(ws, selection=spec)
            st.session_state["ucb_play"] = False
            st.rerun()
        except (ValueError, FileNotFoundError, OSError) as exc:
            ui.show_error(exc, "Starting the run", "change the setting named above")

if cur_id is None:
    st.info("Press **Start a new run** above (the defaults are the paper's), then step through "
            "the rounds.")
    st.stop()

if len(run_list) > 1:
    pick = st.selectbox("Run", run_list, index=run_list.index(cur_id), key="ucb_run_pick",
                        help="Every run's log stays in the workspace; pick one to view or "
                             "continue it.")
    if pick != cur_id:
        ws.update_meta(current_run=pick)
        st.rerun()

try:
    run = rounds.get(ws, cur_id)
except Exception as exc:  # noqa: BLE001
    ui.show_error(exc, f"Reopening run {cur_id}", "start a new run with the settings above")
    st.stop()

names = clusters.cluster_names()
xy = state.load_map(ws, n_rows)


class _Hover:
    """Hover text per row, made only for the rows shown."""

    def __getitem__(self, i: int) -> str:
        if pool is None:
            return f"row {i}"
        rec = pool.row(i)
        # Plotly renders hover text as HTML: every user-made string is escaped.
        return (f"row {i} · {escape(rec['source'])}<br>score {run.scores[int(i)]:.4g}<br>"
                f"{escape(ui.first_turn(rec['messages'], n=80))}")


playing = bool(st.session_state.get("ucb_play", False)) and not run.done


@st.fragment(run_every=0.8 if playing else None)
def live() -> None:
    run = rounds.get(ws, cur_id)
    can_draw = run.oracle is not None
    # ---------------------------------------------------------------- controls
    c = st.columns([1.2, 1, 0.7, 1, 1, 1])
    first = run.next_round == 0
    step1 = c[0].button("Cold start" if first else "Step 1 round", type="primary",
                        disabled=run.done or not can_draw, key="ucb_step1")
    stepn = c[1].button("Step N rounds", disabled=run.done or not can_draw, key="ucb_stepn")
    n_steps = c[2].number_input("N", 1, 1000, 10, key="ucb_n", label_visibility="collapsed")
    pausing = bool(st.session_state.get("ucb_play"))
    play = c[3].button(
        "Pause" if pausing else "Play",
        icon=":material/pause:" if pausing else ":material/play_arrow:",
        disabled=run.done or not can_draw,
        key="ucb_play_btn",
    )
    to_end = c[4].button("Run to the end", disabled=run.done or not can_draw, key="ucb_end")
    reset = c[5].button("Reset", key="ucb_reset",
                        help="Start this run over with the same settings (the old log is "
                             "kept in the workspace).")
    if not can_draw:
        st.warning("This run's reward source is not available any more; it can be viewed but "
                   "not continued. Start a new run above.")
    try:
        if step1:
            with st.spinner("Scoring the drawn rows..."):
                rounds.step(ws, cur_id, 1)
        elif stepn:
            with st.spinner(f"Playing {int(n_steps)} rounds..."):
                rounds.step(ws, cur_id, int(n_steps))
        elif to_end:
            with st.spinner("Running to the end of the budget..."):
                rounds.step(ws, cur_id, 10**9)
        elif st.session_state.get("ucb_play") and not (play or reset):
            rounds.step(ws, cur_id, 1)
    except selection.RunFinished:
        pass
    except Exception as exc:  # noqa: BLE001
        st.session_state["ucb_play"] = False
        ui.show_error(exc, "Scoring the drawn rows", "check the reward source (Model & "
                      "Features page); the run keeps every finished round")
    if play:
        st.session_state["ucb_play"] = not st.session_state.get("ucb_play", False)
        st.rerun(scope="app")
    if reset:
        try:
            used_clusters, reward = rounds.run_inputs(ws, cur_id)
            rounds.create(ws, run.spec, used_clusters or clusters_name, reward)
        except Exception as exc:  # noqa: BLE001
            ui.show_error(exc, "Resetting the run", "start a new run from the settings")
        else:
            st.session_state["ucb_play"] = False
            st.rerun(scope="app")
    run = rounds.get(ws, cur_id)
    if run.done and st.session_state.get("ucb_play"):
        st.session_state["ucb_play"] = False
        st.rerun(scope="app")

    # ---------------------------------------------------------------- status
    rounds_done = len(run.records)
    m = st.columns([1, 1, 1, 3])
    m[0].metric("Round", f"{max(run.next_round - 1, 0) if rounds_done else '-'}",
                help="Round 0 is the cold start.")
    m[1].metric("Rows scored", f"{run.budget_used:,} / {run.budget_total:,}")
    best = np.nanmax(run.scores) if np.isfinite(run.scores).any() else float("nan")
    m[2].metric("Best score so far", f"{best:.4f}" if np.isfinite(best) else "-")
    with m[3]:
        st.progress(run.budget_used / max(run.budget_total, 1),
                    text=f"Budget used: {run.budget_used / max(run.budget_total, 1):.0%} "
                         f"({run.spec.policy}, β={run.spec.beta:g}, draw batch "
                         f"{run.spec.draw_batch}, seed {run.spec.seed})")
    nxt = rounds.preview(run)
    if run.done:
        st.success(f"Finished: {run.budget_used:,} rows scored in {rounds_done} rounds. "
                   f"The top {run.n_top:,} are selected — see Curate & Export.")
    elif nxt is not None:
        st.info(ui.plain(nxt["sentence"]))
    if rounds_done:
        last = run.records[-1]
        st.caption(ui.plain(f"Last round ({last.round}): "
                            f"{last.explanation.get('sentence', '')}"))

    # ---------------------------------------------------------------- arms + map
    stats = run.stats()
    next_arm = nxt["arm"] if nxt else None
    values = nxt["values"] if (nxt and nxt["values"] is not None) else (
        run.records[-1].value if rounds_done else None)
    left, right = st.columns(2)
    with left:
        fig = pr.arm_chart(stats.mean, stats.std, stats.n, values,
                           beta=run.spec.beta if run.spec.policy == "ucb_beta" else 1.0,
                           exhausted=stats.exhausted, banned=stats.banned, next_arm=next_arm,
                           names=[names.get(k, str(k)) for k in range(run.K)],
                           value_label=f"{run.spec.policy} value",
                           title="Arms: mean reward ± band, policy value ◇, pulls")
        st.plotly_chart(fig, key="ucb_arms")
    with right:
        if xy is None:
            st.info("No 2-D map yet: compute it on the Clusters page to see where the draws "
                    "land.")
        else:
            drawn = run.round_drawn >= 0
            last_rows = run.records[-1].rows if rounds_done else []
            st.plotly_chart(pr.draws_map(xy, run.scores, drawn, last_rows, hover=_Hover()),
                            key="ucb_map")

    # ---------------------------------------------------------------- details
    tabs = st.tabs(["Last round's rows", "Arm table", "History", "Against exhaustive"])
    with tabs[0]:
        if not rounds_done:
            st.caption("Nothing drawn yet.")
        else:
            last = run.records[-1]
            lg = state.ledger(ws, clusters_name)
            led = lg.state()
            extra = {"score": last.rewards,
                     "status": ["pinned" if r in led.pinned else "rejected"
                                if r in led.rejected else "" for r in last.rows]}
            if pool is not None:
                df = ui.preview_frame(pool.frame(last.rows), None, extra)
            else:
                df = pd.DataFrame({"row": last.rows, **extra})
            df.insert(1, "cluster", clusters.labels[last.rows])
            sel = st.dataframe(df, hide_index=True, on_select="rerun",
                               selection_mode="multi-row", key=f"ucb_last_{last.round}")
            chosen = [int(df["row"].iat[i]) for i in sel.selection.rows]
            b = st.columns([1, 1, 4])
            if b[0].button(
                "Pin selected",
                icon=":material/push_pin:",
                disabled=not chosen,
                key="ucb_pin",
                help="Pinned rows are always in the final selection.",
            ):
                lg.pin(chosen, note=f"UCB round {last.round}")
                st.rerun(scope="fragment")
            if b[1].button(
                "Reject selected",
                icon=":material/block:",
                disabled=not chosen,
                key="ucb_reject",
                help="Rejected rows are never selected (their draw still counts "
                "against the budget).",
            ):
                lg.reject(chosen, note=f"UCB round {last.round}")
                st.rerun(scope="fragment")
            if pool is not None and chosen:
                ui.show_text(ui.chat_text(pool.messages([chosen[0]])[0]), height=260)
            elif pool is not None:
                st.caption("Select a row (left edge of the table) to read it whole or to pin "
                           "or reject it.")
    with tabs[1]:
        arms = pd.DataFrame({"arm": np.arange(run.K),
                             "label": [names.get(k, str(k)) for k in range(run.K)],
                             "size": run.sizes, "pulls": stats.drawn, "n scored": stats.n,
                             "mean": stats.mean, "std": stats.std,
                             "value": values if values is not None else np.nan,
                             "remaining": stats.remaining, "exhausted": stats.exhausted,
                             "banned": stats.banned})
        arms["value"] = arms["value"].replace([np.inf, -np.inf], np.nan)
        st.dataframe(arms, hide_index=True, key="ucb_arm_table")
    with tabs[2]:
        h = rounds.history(run)
        if h["rounds"]:
            c1, c2 = st.columns(2)
            c1.plotly_chart(pr.value_history(h["rounds"], h["values"]), key="ucb_hist_val")
            c2.plotly_chart(pr.reward_history(h["rounds"], h["cum_reward"], h["budget_used"],
                                              run.budget_total), key="ucb_hist_rew")
        else:
            st.caption("The history starts with the first round.")
    with tabs[3]:
        ex = state.exhaustive_scores(ws, n_rows)
        if ex is None:
            st.caption("Run exhaustive scoring (Model & Features page) to compare the bandit "
                       "with scoring every row.")
        elif rounds_done:
            from clusterucb_core.oracle import run_metrics

            met = run_metrics(run, ex)
            c = st.columns(3)
            c[0].metric("Recall of the exhaustive top-p", f"{met['recall']:.1%}",
                        help="Share of the rows exhaustive scoring would select that this "
                             "run selects now.")
            c[1].metric("Score mass captured", f"{met['mass_share']:.1%}")
            c[2].metric("Rows scored vs exhaustive", f"{run.budget_used / n_rows:.1%}")
            tab = met["rounds"]
            if len(tab):
                st.plotly_chart(pr.regret_chart(tab["round"], tab["recall_so_far"],
                                                tab["cum_regret"]), key="ucb_regret")
            from clusterucb_core import fidelity

            curve = fidelity.run_curve(run.round_drawn, ex, run.n_top)
            rand = fidelity.random_curve(ex, run.n_top, exclude=run.labels < 0)
            st.plotly_chart(fidelity.budget_figure(curve, rand), key="ucb_budget_curve")
            st.caption("What the budget bought: this run after each round, random draws of "
                       "the same size (mean of 5 seeds), and exhaustive LESS (every row "
                       "scored).")


live()
st.page_link("pages/6_export.py", label="Next: curate & export", icon=":material/arrow_forward:")
