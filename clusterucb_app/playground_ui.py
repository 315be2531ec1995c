"""The Playground page's forms, controls and panels, so the page only reads, calls and
renders."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from clusterucb_app import plots_rounds as pr
from clusterucb_app import plots_teach as pt
from clusterucb_app import teach, ui
from clusterucb_core.teach import playground as pgm
from clusterucb_core.teach.race import RACE_POLICIES

HELP = r"""
**What you see.** Each arm is a cluster. Scoring a row (one *draw*) reveals its reward, as
computing a gradient reveals a real row's influence score. The chart shows, per arm, the
mean of its draws so far with a band of ± β·std, the policy's value (◇) and the number of
pulls above; orange = the arm about to be played, grey = emptied.

**The rule** (`ucb_beta`, the paper's): play the arm with the largest `mean + β·std`. With
few draws an arm's std is a rough guess, and a large β gives uncertain arms the benefit of
the doubt (explore); β = 0 always plays the best-looking arm (exploit). `random` picks any
arm: it spends the budget evenly and rarely lands on a small gem.

**The truth.** Switch on *Reveal the truth* to see the true means (★), the best arm, and the
**regret**: how much expected reward a policy has lost so far compared with an oracle that
knows the true means and always plays the best arm that still has rows.
"""


def arms_form(ws: Any, settings: dict[str, Any], pg: Any) -> None:
    """'Make the arms': drawn at random or set by hand; saving starts the rounds over."""
    arms_cfg = settings["arms"]
    with st.expander("1 · Make the arms", expanded=False):
        mode = st.radio("Arms", ["Draw at random", "Set each arm by hand"], horizontal=True,
                        key="pg_mode", index=1 if arms_cfg.get("arms") else 0)
        with st.form("pg_arms"):
            if mode == "Draw at random":
                c = st.columns(4)
                n_arms = c[0].slider("Number of arms", 2, 20, int(arms_cfg.get("n_arms", 8)),
                                    key="pg_n_arms")
                seed = c[1].number_input("Seed (which arms)", 0, 10**6,
                                         int(arms_cfg.get("seed", 0)), key="pg_arm_seed")
                gem = c[2].checkbox("Hide a gem", bool(arms_cfg.get("gem", True)),
                                    help="One small arm whose mean is the highest.")
                lift = c[3].slider("Gem's lead over the best other arm", 0.0, 0.3,
                                   float(arms_cfg.get("gem_lift", 0.1)), 0.01)
                c = st.columns(3)
                sizes = c[0].slider("Arm sizes (rows)", 5, 1000,
                                    (int(arms_cfg.get("size_min", 60)),
                                     int(arms_cfg.get("size_max", 200))))
                means = c[1].slider("True means", -0.5, 0.8,
                                    (float(arms_cfg.get("mean_min", 0.0)),
                                     float(arms_cfg.get("mean_max", 0.1))), 0.01)
                spreads = c[2].slider("Spreads (std of an arm's rewards)", 0.0, 0.3,
                                      (float(arms_cfg.get("spread_min", 0.01)),
                                       float(arms_cfg.get("spread_max", 0.04))), 0.005)
                new_arms = {"n_arms": int(n_arms), "seed": int(seed), "gem": bool(gem),
                            "gem_lift": float(lift), "size_min": int(sizes[0]),
                            "size_max": int(sizes[1]), "mean_min": float(means[0]),
                            "mean_max": float(means[1]), "spread_min": float(spreads[0]),
                            "spread_max": float(spreads[1]), "arms": []}
            else:
                st.caption("One line per arm. The best arm counts as a hidden gem when it is also "
                           "one of the smaller arms.")
                table = pd.DataFrame({"size": pg.sizes, "mean": pg.true_means,
                                      "spread": pg.spreads})
                edited = st.data_editor(table, num_rows="dynamic", key="pg_arm_editor",
                                        column_config={
                                            "size": st.column_config.NumberColumn(min_value=1,
                                                                                  step=1),
                                            "mean": st.column_config.NumberColumn(
                                                min_value=-1.0, max_value=1.0, format="%.3f"),
                                            "spread": st.column_config.NumberColumn(
                                                min_value=0.0, max_value=1.0, format="%.3f")})
                rows = edited.dropna()
                new_arms = {**pgm.PlaygroundSpec().to_dict(), "seed": int(arms_cfg.get("seed", 0)),
                            "arms": [{"size": int(r["size"]), "mean": float(r["mean"]),
                                      "spread": float(r["spread"])} for _, r in rows.iterrows()]}
            made = st.form_submit_button("Make these arms", type="primary")
        if made:
            _start_over(ws, {**settings, "arms": new_arms, "rounds": 0}, "Making the arms")


def policies_form(ws: Any, settings: dict[str, Any]) -> None:
    """'Policies and budget' for sides A and B; applying starts the rounds over."""
    with st.expander("2 · Policies and budget", expanded=False):
        with st.form("pg_policies"):
            side_inputs = {}
            cols = st.columns(2)
            for col, name in zip(cols, teach.SIDES):
                side = settings[name]
                with col:
                    st.markdown(f"**Policy {name}**" + ("" if name == "A" else " (side by side)"))
                    pol = st.selectbox(f"Policy {name}", RACE_POLICIES,
                                       index=RACE_POLICIES.index(side["policy"])
                                       if side["policy"] in RACE_POLICIES else 0,
                                       help=teach.POLICY_HELP, key=f"pg_pol_{name}")
                    c = st.columns(2)
                    beta = c[0].number_input(f"β ({name}, ucb_beta)", 0.0, 10.0,
                                             float(side.get("beta", 1.0)), 0.1,
                                             key=f"pg_beta_{name}")
                    q = c[1].number_input(f"quantile ({name}, thresh_*)", 0.01, 0.99,
                                          float(side.get("quantile", 0.25)), 0.05,
                                          key=f"pg_q_{name}")
                    side_inputs[name] = {"policy": pol, "beta": float(beta), "quantile": float(q)}
            both = st.checkbox("Run policy B side by side", bool(settings["side_by_side"]),
                               key="pg_both")
            sh = settings["shared"]
            c = st.columns(5)
            cold = c[0].number_input("Cold start", 0.0, 1.0, float(sh["cold_start"]), 0.01,
                                     format="%.3f", help="Share of every arm drawn first.")
            budget = c[1].number_input("Budget", 0.001, 1.0, float(sh["budget"]), 0.01,
                                       format="%.3f", help="Share of all rows that may be scored.",
                                       key="pg_budget")
            top_p = c[2].number_input("Top-p", 0.001, 1.0, float(sh["top_p"]), 0.01, format="%.3f",
                                      help="Share of all rows selected at the end.")
            draw = c[3].number_input("Draw batch", 1, 1000, int(sh["draw_batch"]),
                                     help="Rows drawn per round.")
            seed = c[4].number_input("Seed (draw order)", 0, 10**6, int(sh["seed"]))
            applied = st.form_submit_button("Apply (starts the rounds over)", type="primary")
        if applied:
            _start_over(ws, {**settings, "A": side_inputs["A"], "B": side_inputs["B"],
                             "side_by_side": bool(both), "rounds": 0,
                             "shared": {"cold_start": float(cold), "budget": float(budget),
                                        "top_p": float(top_p), "draw_batch": int(draw),
                                        "seed": int(seed)}},
                        "Applying the settings")


def _start_over(ws: Any, trial: dict[str, Any], what: str) -> None:
    """Check the settings a form made; if they hold, save them, stop Play and rerun from
    round 0, else say which setting is wrong (nothing is saved)."""
    try:
        teach.check_settings(trial)
    except ValueError as exc:
        ui.show_error(exc, what, "change the setting named above")
    else:
        teach.save_settings(ws, trial)
        st.session_state["pg_play"] = False
        st.rerun()


def plain(text: str) -> str:
    """Engine sentences hold formulas ('mean + 1*std'): keep Markdown from italicising them."""
    return text.replace("*", r"\*").replace("_", r"\_")


def truth_trace(fig: go.Figure, pg: Any) -> None:
    """The true means (★) over an arm chart."""
    fig.add_trace(go.Scatter(x=[k + 0.25 for k in range(pg.K)], y=pg.true_means,
                             mode="markers",
                             name="true mean ★", marker=dict(symbol="star", size=13,
                                                             color=pt.GOLD,
                                                             line=dict(width=1, color="#333")),
                             hovertext=[f"arm {k}: true mean {m:.4g}, {s} rows"
                                        + (" — the best arm" if k == pg.best_arm else "")
                                        for k, (m, s) in enumerate(zip(pg.true_means,
                                                                        pg.sizes))],
                             hoverinfo="text"))


def controls(ws: Any) -> tuple[Any, dict[str, Any]]:
    """Cold start / step / play / pause / run to the end / reset; the session after them."""
    sess, settings = teach.session(ws)
    c = st.columns([1.2, 1, 0.7, 1, 1, 1])
    first = all(r.next_round == 0 for r in sess.runs.values())
    step1 = c[0].button("Cold start" if first else "Step 1 round", type="primary",
                        disabled=sess.done, key="pg_step1")
    stepn = c[1].button("Step N rounds", disabled=sess.done, key="pg_stepn")
    n_steps = c[2].number_input("N", 1, 1000, 5, key="pg_n", label_visibility="collapsed")
    play = c[3].button("⏸ Pause" if st.session_state.get("pg_play") else "▶ Play",
                       disabled=sess.done, key="pg_play_btn")
    to_end = c[4].button("Run to the end", disabled=sess.done, key="pg_end")
    reset = c[5].button("Reset", key="pg_reset", help="Start the rounds over (same arms).")
    if step1:
        teach.step(ws, 1)
    elif stepn:
        teach.step(ws, int(n_steps))
    elif to_end:
        teach.step(ws, 10**6)
    elif st.session_state.get("pg_play") and not (play or reset):
        teach.step(ws, 1)
    if play:
        st.session_state["pg_play"] = not st.session_state.get("pg_play", False)
        st.rerun(scope="app")
    if reset:
        teach.reset(ws)
        st.session_state["pg_play"] = False
        st.rerun(scope="app")
    sess, settings = teach.session(ws)
    if sess.done and st.session_state.get("pg_play"):
        st.session_state["pg_play"] = False
        st.rerun(scope="app")

    return sess, settings


def truth_banner(pg: Any, settings: dict[str, Any]) -> bool:
    """The 'Reveal the truth' toggle and what it reveals; whether it is on."""
    truth = st.toggle(":material/visibility: Reveal the truth", key="pg_truth",
                      help="Show the true means, the best arm and the regret so far.")
    if truth:
        st.success(
            f"The best arm is **arm {pg.best_arm}**: true mean "
            f"{pg.true_means[pg.best_arm]:.3f} with only {pg.sizes[pg.best_arm]} rows"
            + (" — the hidden gem." if pg.gem is not None else ".")
            + f" It holds {int(pg.truth(settings['shared']['top_p'])['top_p_rows'][pg.best_arm])}"
            f" of the {len(pg.top_rows(settings['shared']['top_p']))} rows of the true "
            "top-p."
        )
    else:
        st.caption("Which arm is the hidden gem? Step a few rounds, guess, then reveal the "
                   "truth.")

    return truth


def side_panels(sess: Any, pg: Any, truth: bool) -> None:
    """One column per policy: metrics, budget, the arm chart and why the next arm."""
    cols = st.columns(len(sess.runs))
    for col, (name, run) in zip(cols, sess.runs.items()):
        with col:
            label = sess.labels[name]
            st.markdown(f"#### {name} · {label}")
            on_best, total = teach.best_arm_share(run, pg)
            m = st.columns(3)
            m[0].metric("Round", max(run.next_round - 1, 0) if run.records else "-")
            m[1].metric("Rows scored", f"{run.budget_used:,} / {run.budget_total:,}")
            if truth:
                m[2].metric("Draws on the best arm",
                            f"{on_best}" + (f" ({on_best / total:.0%})" if total else ""))
            else:
                best = np.nanmax(run.scores) if np.isfinite(run.scores).any() else np.nan
                m[2].metric("Best reward so far", f"{best:.3f}" if np.isfinite(best) else "-")
            st.progress(run.budget_used / max(run.budget_total, 1),
                        text=f"Budget used: {run.budget_used / max(run.budget_total, 1):.0%}")
            values, next_arm, sentence = teach.arm_values(run)
            stats = run.stats()
            if run.policy.name == "random":
                values = None  # its 'value' is a constant: nothing to compare
            fig = pr.arm_chart(stats.mean, stats.std, stats.n, values,
                               beta=run.spec.beta if run.policy.name == "ucb_beta" else 1.0,
                               exhausted=stats.exhausted, banned=stats.banned,
                               next_arm=next_arm, names=[f"arm {k}" for k in range(pg.K)],
                               value_label=f"{run.policy.name} value",
                               title=f"{label}: mean ± band, value ◇, pulls")
            if truth:
                truth_trace(fig, pg)
            st.plotly_chart(fig, key=f"pg_arms_{name}")
            if run.done:
                met = pg.metrics(run)
                st.success(f"Finished: {run.budget_used:,} rows scored in {len(run.records)} "
                           f"rounds. The selected top {run.n_top} hold "
                           + (f"**{met['recall']:.0%}** of the true top-p." if truth else
                              "… reveal the truth to see how many of the true best rows."))
            elif sentence:
                st.info(plain(sentence))
            if run.records:
                st.caption(f"Last round ({run.records[-1].round}): "
                           + plain(run.records[-1].explanation.get("sentence", "")))


def truth_and_history(sess: Any, pg: Any, settings: dict[str, Any], truth: bool) -> None:
    """Regret and recall against the oracle, the truth table, and each arm's value history."""
    if truth and any(r.records for r in sess.runs.values()):
        tables = {sess.labels[n]: pg.regret(r) for n, r in sess.runs.items() if r.records}
        c1, c2 = st.columns(2)
        c1.plotly_chart(pt.regret_race_chart(tables, pg.N), key="pg_regret")
        c2.plotly_chart(pt.regret_race_chart(tables, pg.N, metric="recall_so_far",
                                             title="Recall of the true top-p so far"),
                        key="pg_recall")
        st.caption("Regret = expected reward lost so far compared with an oracle that knows "
                   "the true means (it plays the best arm that still has rows). It can come "
                   "down: the cold start pays for exploring every arm at once, and once the "
                   "oracle has emptied the best arm it pays too, while a policy still drawing "
                   "from it catches up. Recall = share of the rows that scoring *every* row "
                   "would select that are already scored.")
    if truth:
        t = pg.truth(settings["shared"]["top_p"])
        for name, run in sess.runs.items():
            t[f"pulls {name}"] = run.stats().drawn
        st.dataframe(t, hide_index=True, key="pg_truth_table")

    if any(r.records for r in sess.runs.values()):
        with st.expander("History: each arm's policy value over the rounds", expanded=False):
            hc = st.columns(len(sess.runs))
            for col, (name, run) in zip(hc, sess.runs.items()):
                if run.records:
                    vals = np.vstack([np.asarray(r.value, float) for r in run.records])
                    col.plotly_chart(pr.value_history([r.round for r in run.records], vals,
                                                      title=f"{sess.labels[name]}: value per arm"),
                                     key=f"pg_hist_{name}")

