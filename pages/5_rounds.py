"""Step 5: the UCB rounds — watch the bandit spend the budget, one round at a time."""

from __future__ import annotations

import streamlit as st

from clusterucb_app import (
    curation_ui,
    plan_panel,
    quality_ui,
    rds_compare,
    rounds,
    rounds_ui,
    state,
    subtasks_ui,
    ui,
)
from clusterucb_app import plots_rounds as pr
from clusterucb_core.features.scorable import workspace_sentence as scorable_sentence
from clusterucb_core.selection import run as selection

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
3. **Final selection**: `floor(N·p)` rows: your pins first, then the best-scored rows
   (cold start included), without rejected rows or banned clusters.

The chart shows each arm's mean with its band (mean ± β·std), the policy's value (◇) and,
under each arm, its pulls; grey = exhausted or banned (× = never drawn), orange = the arm
about to be played.
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
try:
    pool = state.load_pool(ws)
except Exception:  # noqa: BLE001 - the page works without texts
    pool = None
if pool is not None and len(pool) != n_rows:
    st.warning(f"The pool has {len(pool):,} rows but the clusters cover {n_rows:,}: "
               "the clusters were made from another pool. Re-run the clustering.")
    pool = None

cur_id = rounds.current_id(ws)
rounds_ui.settings_form(ws, clusters, clusters_name, rounds.reward_sources(ws, n_rows),
                        expanded=cur_id is None)
plan_panel.comparison_panel(ws)  # each stage's predicted and measured seconds
if cur_id is None:
    st.info(ui.plain(rounds_ui.defaults_sentence(state.settings(ws, "selection"))))
    st.stop()
if note := st.session_state.pop("_ucb_note", None):
    st.toast(ui.plain(note), icon=":material/casino:")
rounds_ui.run_picker(ws, cur_id)
st.caption(rounds_ui.reward_sentence(rounds.run_inputs(ws, cur_id)[1]))
try:
    rounds.get(ws, cur_id)
except Exception as exc:  # noqa: BLE001
    ui.show_error(exc, f"Reopening run {cur_id}", "start a new run with the settings above")
    st.stop()

names = clusters.cluster_names()
xy = state.load_map(ws, n_rows)


playing = bool(st.session_state.get(rounds_ui.PLAY)) and not rounds.get(ws, cur_id).done
interval = rounds_ui.play_speed()  # outside the fragment: a change restarts its timer


@st.fragment(run_every=interval if playing else None)
def live() -> None:
    run = rounds.get(ws, cur_id)
    todo = rounds_ui.pending(run)
    try:
        if todo:
            with st.spinner("Scoring the drawn rows..."):
                rounds.step(ws, cur_id, todo)
    except selection.RunFinished:
        pass
    except Exception as exc:  # noqa: BLE001
        rounds_ui.set_play(False)
        ui.show_error(exc, "Scoring the drawn rows", "check the reward source (Model & "
                      "Features page); the run keeps every finished round")
    run = rounds.get(ws, cur_id)
    if run.done and st.session_state.get(rounds_ui.PLAY):
        rounds_ui.set_play(False)
    if playing != bool(st.session_state.get(rounds_ui.PLAY)):
        st.rerun(scope="app")  # Play / Pause / the end: start or stop the fragment's timer
    if rounds_ui.controls(run):
        with ui.guard("Resetting the run", "start a new run from the settings"):
            used_clusters, reward = rounds.run_inputs(ws, cur_id)
            rid = rounds.create(ws, run.spec, used_clusters or clusters_name, reward)
            rounds_ui.set_play(False)
            st.session_state["_ucb_note"] = f"Reset: new run {rounds.describe(ws, rid)}."
            st.rerun(scope="app")
    nxt = rounds.preview(run)
    rounds_ui.status(run, nxt)
    quality_ui.meter(run)
    values = rounds_ui.charts(run, nxt, names, xy, pool)
    sub = subtasks_ui.view(ws, run, cur_id)
    quality_ui.takeover_note(ws, run, sub, cur_id, key="ucb")
    tabs = st.tabs(["Last round's rows", "Arm table", "History", "Against exhaustive",
                    "Subtask coverage"])
    with tabs[0]:
        rounds_ui.last_round(ws, run, pool, clusters_name, sub.column)
    with tabs[1]:
        arms = rounds.arm_table(run, names, values, nxt["arm"] if nxt else None,
                                state.ledger(ws, clusters_name).state())
        st.dataframe(arms, hide_index=True, key="ucb_arm_table",
                     height=ui.table_height(len(arms)))
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
        rounds_ui.against_exhaustive(ws, run)
    with tabs[4]:
        subtasks_ui.coverage_panel(ws, sub, cur_id, run.spec, key="ucb")


curation_ui.flush_toast()
live()
rds_compare.panel(ws, cur_id, key="ucb")
st.page_link("pages/6_export.py", label="Next: curate & export", icon=":material/arrow_forward:")
