"""The Policy race page's form and results, so the page only reads, calls and renders."""

from __future__ import annotations

from typing import Any

import streamlit as st

from clusterucb_app import plots_teach as pt
from clusterucb_app import teach
from clusterucb_core.config import SelectionSpec, field_info
from clusterucb_core.selection import run as selection
from clusterucb_core.teach import race as rc
from clusterucb_core.teach.race import Contestant, RaceResult, RaceSpec

HELP = r"""
**Recall vs budget.** The share of the *true* top-p rows (what scoring every row would
select) found among the rows scored so far, as the budget is spent. The dotted line is what
scoring random rows finds on average; the oracle knows the clusters' true means. Lines are
the mean over seeds; the band spans the seeds (min–max, or ± one std).

**Regret.** The expected reward lost by playing worse arms. *vs the oracle*: compared with
someone who knows the means and plays the best arm that still has rows (zero for the oracle).
*vs the best arm*: the textbook regret (every policy pays it once the best arm is empty).

**Heat maps.** Rows drawn from each cluster (up) in each round (across), averaged over the
seeds: a good policy concentrates on the starred best cluster early and then moves on.

Note that knowing the *means* is not the same as knowing the best *rows*: a cluster with a
lower mean but a wide spread can hold many of the top rows, which is why `mean + β·std` can
beat the oracle on recall.
"""


def settings_form(saved: dict[str, Any], run_spec: Any,
                  can_order: bool) -> tuple[bool, dict[str, Any]]:
    """The race settings form, restored from the last race, else with the settings a new run
    gets on the UCB page (`run_spec`); (submitted, the form's values). `can_order`: the race
    has the features a draw order other than random reads."""
    race_d = saved.get("race", {})
    defaults = RaceSpec(budget=run_spec.budget, top_p=run_spec.top_p,
                        cold_start=run_spec.cold_start, draw_batch=run_spec.draw_batch,
                        draw_order=run_spec.draw_order)
    all_policies = list(rc.RACE_POLICIES)
    with st.form("race_form"):
        c = st.columns([3, 1.2, 1])
        chosen = c[0].multiselect("Policies", all_policies,
                                  default=saved.get("policies", all_policies),
                                  help=teach.POLICY_HELP, key="race_policies")
        betas = c[1].text_input("β values for ucb_beta", saved.get("betas", f"{run_spec.beta:g}"),
                                key="race_betas",
                                help="Comma-separated: each β is its own contestant, e.g. "
                                     "'0, 1, 2' races greedy against two explorers.")
        quantile = c[2].number_input("quantile (thresh_*)", 0.01, 0.99,
                                     float(saved.get("quantile", 0.25)), 0.05)
        c = st.columns(5)
        cold = c[0].number_input("Cold start", 0.0, 1.0,
                                 float(race_d.get("cold_start", defaults.cold_start)), 0.01,
                                 format="%.3f")
        budget = c[1].number_input("Budget", 0.001, 1.0,
                                   float(race_d.get("budget", defaults.budget)), 0.01,
                                   format="%.3f", key="race_budget")
        top_p = c[2].number_input("Top-p", 0.001, 1.0,
                                  float(race_d.get("top_p", defaults.top_p)), 0.01,
                                  format="%.3f")
        draw = c[3].number_input("Draw batch", 1, 10_000,
                                 int(race_d.get("draw_batch", defaults.draw_batch)))
        n_seeds = c[4].number_input("Seeds", 1, 50, len(race_d.get("seeds", defaults.seeds)),
                                    help="Each contestant runs once per seed (seeds 0..n-1); "
                                         "the charts show the mean and the spread.",
                                    key="race_seeds")
        orders = list(selection.DRAW_ORDERS) if can_order else ["random"]
        order = race_d.get("draw_order", defaults.draw_order)
        c = st.columns([2, 3])
        order = c[0].selectbox(
            "Draw order", orders, index=orders.index(order) if order in orders else 0,
            format_func=selection.DRAW_ORDER_LABELS.get,
            key=f"race_draw_order_{'workspace' if can_order else 'playground'}",
            help=field_info(SelectionSpec, "draw_order")["help"].capitalize() + "." + (
                "" if can_order else "  \nThe playground arms have no features: random only."))
        go = st.form_submit_button("Run the race", type="primary")
    return go, {"policies": chosen, "betas": betas, "quantile": float(quantile),
                "cold_start": float(cold), "budget": float(budget), "top_p": float(top_p),
                "draw_batch": int(draw), "n_seeds": int(n_seeds), "draw_order": order}


def spec_from_form(form: dict[str, Any]) -> RaceSpec:
    """The RaceSpec the form describes: one ucb_beta contestant per β value."""
    cs = []
    for p in form["policies"]:
        if p == "ucb_beta":
            try:
                vals = [float(x) for x in form["betas"].replace(";", ",").split(",")
                        if x.strip()]
            except ValueError:
                raise ValueError(f"β values must be numbers separated by commas, got "
                                 f"{form['betas']!r}") from None
            cs += [Contestant("ucb_beta", beta=b) for b in (vals or [1.0])]
        else:
            cs.append(Contestant(p, quantile=form["quantile"]))
    spec = RaceSpec(contestants=tuple(cs), seeds=tuple(range(form["n_seeds"])),
                    budget=form["budget"], top_p=form["top_p"],
                    cold_start=form["cold_start"], draw_batch=form["draw_batch"],
                    draw_order=form.get("draw_order", "random"))
    spec.check()
    return spec


def differences(race: RaceSpec, run: Any) -> str:
    """What the race does differently from a run on the UCB page with settings `run`."""
    diffs = []
    for name, a, b in (("budget", race.budget, run.budget), ("top-p", race.top_p, run.top_p),
                       ("cold start", race.cold_start, run.cold_start),
                       ("draw batch", race.draw_batch, run.draw_batch),
                       ("draw order", race.draw_order, run.draw_order)):
        if a != b:
            diffs.append(f"{name} {a:g} here, {b:g} in a run" if not isinstance(a, str)
                         else f"{name} {a} here, {b} in a run")
    betas = sorted({c.beta for c in race.contestants if c.policy == "ucb_beta"})
    if betas and betas != [run.beta]:
        diffs.append("β " + ", ".join(f"{b:g}" for b in betas) + f" here, {run.beta:g} in a run")
    seeds = f"seeds {race.seeds[0]}–{race.seeds[-1]}" if len(race.seeds) > 1 else \
        f"seed {race.seeds[0]}"
    head = (f"Compared with a run on the UCB page: the race uses {seeds} (a run uses seed "
            f"{run.seed}), applies no pins, rejections or bans (compare it with the UCB "
            "page's *bandit's* recall), and the oracle contestant knows each cluster's mean")
    return head + ("; " + "; ".join(diffs) if diffs else "; every other setting is the same") + "."


def summary_line(result: RaceResult) -> str:
    """One sentence: each contestant's mean recall of the true top rows."""
    spec, by_name = result.spec, result.summary.set_index("contestant")
    return (f"After scoring **{spec.budget:.0%}** of the pool ({result.n_rows:,} rows, "
            f"{result.k} clusters), the selected top {spec.top_p:g} hold, on average over "
            f"{len(spec.seeds)} seed(s): "
            + ", ".join(f"**{n}** {by_name.loc[n, 'recall_mean']:.0%}"
                        for n in result.contestants) + " of the true top rows.")


def summary_table(s):
    """The per-contestant summary with readable column names."""
    return s[["contestant", "recall_mean", "recall_std", "mass_share_mean",
              "regret_vs_oracle_mean", "cum_regret_mean", "best_arm_share_mean",
              "rounds_mean", "seeds"]].rename(columns={
        "recall_mean": "recall", "recall_std": "recall std", "mass_share_mean": "score mass",
        "regret_vs_oracle_mean": "regret vs oracle", "cum_regret_mean": "regret vs best arm",
        "best_arm_share_mean": "draws on best cluster", "rounds_mean": "rounds"})


def show_results(result: RaceResult) -> None:
    """Recall and regret curves, the heat maps, the summary and the downloads."""
    spec, s = result.spec, result.summary
    st.markdown(summary_line(result))
    c = st.columns([1, 1])
    band_kind = c[0].radio("Band", ["minmax", "std"], horizontal=True, key="race_band",
                           format_func={"minmax": "min–max over seeds",
                                        "std": "mean ± one std"}.get)
    regret_metric = c[1].radio(
        "Regret", ["regret_vs_oracle", "cum_regret"], horizontal=True, key="race_regret",
        format_func={"regret_vs_oracle": "vs an oracle that knows the means",
                     "cum_regret": "vs the best arm"}.get)
    left, right = st.columns(2)
    left.plotly_chart(pt.race_curve_chart(result.band, "recall", result.contestants,
                                          budget=spec.budget, band_kind=band_kind),
                      key="race_recall")
    right.plotly_chart(pt.race_curve_chart(result.band, regret_metric, result.contestants,
                                           band_kind=band_kind), key="race_regret_chart")
    st.plotly_chart(pt.race_heatmaps(result.draws, result.contestants, result.k,
                                     len(spec.seeds), names=[str(i) for i in range(result.k)],
                                     best=result.best_arm, cols=min(4, len(result.contestants))),
                    key="race_heat")
    if 0 <= result.best_arm < len(result.names):
        st.caption(f"★ = the cluster with the highest mean score: "
                   f"{result.names[result.best_arm]}.")
    c1, c2 = st.columns([1, 1])
    with c1:
        st.plotly_chart(pt.race_summary_chart(s), key="race_bars")
    with c2:
        share = st.slider("Recall when this share of the pool has been scored", 0.0,
                          float(spec.budget), float(spec.budget), 0.005, format="%.3f",
                          key="race_share")
        st.dataframe(result.recall_at(share).drop(columns="budget_share")
                     .rename(columns={"recall_mean": "recall (mean)",
                                      "recall_std": "recall (std)"}),
                     hide_index=True, key="race_recall_at")
    st.dataframe(summary_table(s), hide_index=True, key="race_summary")
    d = st.columns(5)
    d[0].download_button("Summary CSV", s.to_csv(index=False), "race_summary.csv", "text/csv",
                         key="race_dl_summary")
    d[1].download_button("Curves CSV", result.curves.to_csv(index=False), "race_curves.csv",
                         "text/csv", key="race_dl_curves")
    d[2].download_button("Averaged curves CSV", result.band.to_csv(index=False),
                         "race_band.csv", "text/csv", key="race_dl_band")
    d[3].download_button("Draws CSV", result.draws.to_csv(index=False), "race_draws.csv",
                         "text/csv", key="race_dl_draws")
    d[4].download_button("Figure PNG", lambda: rc.race_png(result), "race.png", "image/png",
                         key="race_dl_png", type="primary",
                         help="Recall, regret and heat maps in one image (drawn when you click).")
