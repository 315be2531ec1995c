"""Compare two saved selection runs: what did changing beta, the budget or the seed do?"""

from __future__ import annotations

import streamlit as st

from clusterucb_app import plots_teach as pt
from clusterucb_app import rounds, state, ui
from clusterucb_core.teach import race as rc

ws = ui.workspace()
ui.header(
    "Compare runs",
    "Two selection runs of this workspace side by side: which rows both chose, which only "
    "one did, and where they differ by cluster, by source and by score.",
    """
Every run on the UCB Rounds page is saved in the workspace with its settings and every round
it played. Pick two, for example the same settings with β = 0 and β = 2, or a 10% and a 20%
budget. The **settings** table marks what changed; the **overlap** says how much of the
selection stayed; the per-cluster bars show where the changed setting moved the selection;
the score histograms show whether it found better rows. The selections are what an export
gives now: the top-p of each run's scored rows with the curation ledger (pins, rejections,
bans) applied, unless you switch that off.
""")

ids = rounds.run_ids(ws)
if not ui.need(len(ids) >= 2, f"This workspace has {len(ids)} saved run(s); comparing needs "
               "two. Start runs with different settings on the UCB Rounds page.",
               "pages/5_rounds.py"):
    st.stop()


def _describe(run_id: str) -> str:
    return rounds.describe(ws, run_id)  # named by its settings, as on the UCB Rounds page


c = st.columns([2, 2, 1])
a_id = c[0].selectbox("Run A", ids, index=1, format_func=_describe, key="cmp_a")
b_id = c[1].selectbox("Run B", ids, index=0, format_func=_describe, key="cmp_b")
use_ledger = c[2].toggle("Apply the ledger", True, key="cmp_ledger",
                         help="Pins, rejections and banned clusters, as an export applies "
                              "them.")
if a_id == b_id:
    st.info("Pick two different runs.")
    st.stop()

pool = None
try:
    pool = state.load_pool(ws)
except Exception:  # noqa: BLE001 - the comparison works without texts
    pool = None
sources = None
if pool is not None:
    sources = pool.column("source").astype(str)

try:
    if sources is not None:
        n = len(rc.load_run(ws, a_id, apply_ledger=False).labels)
        if n != len(sources):
            sources = None
            st.warning("The pool has a different number of rows than the runs' clusters: the "
                       "per-source counts and texts are left out.")
    cmp = rc.compare_runs(ws, a_id, b_id, sources=sources, apply_ledger=use_ledger)
except (ValueError, FileNotFoundError) as exc:
    ui.show_error(exc, "Comparing the runs", "pick runs made on the same pool")
    st.stop()

ov = cmp.overlap
m = st.columns(5)
m[0].metric("Selected by A", f"{ov['a']:,}")
m[1].metric("Selected by B", f"{ov['b']:,}")
m[2].metric("By both", f"{ov['both']:,}")
m[3].metric("Jaccard overlap", f"{ov['jaccard']:.2f}",
            help="|A ∩ B| / |A ∪ B|: 1 = the same rows, 0 = no row in common.")
m[4].metric("Rows scored (A / B)", f"{ov['scored_a']:,} / {ov['scored_b']:,}",
            help=f"Rows scored by both runs: {ov['scored_both']:,}.")

st.plotly_chart(pt.overlap_chart(ov), key="cmp_overlap")

left, right = st.columns([1, 2])
with left:
    st.markdown("**Settings**")
    st.dataframe(cmp.settings.style.apply(
        lambda r: ["background-color: #fff3bf" if r["changed"] else ""] * len(r), axis=1),
        hide_index=True, key="cmp_settings", height=35 * (len(cmp.settings) + 1) + 3)
    if not cmp.same_clusters:
        st.caption("The runs used different clusterings; clusters below are run A's.")
with right:
    names = None
    clusters = state.load_clusters(ws, cmp.a.clustering) if cmp.a.clustering else None
    if clusters is not None:
        names = clusters.cluster_names()
    st.plotly_chart(pt.counts_chart(cmp.clusters, "cluster", names=names,
                                    title="Selected rows per cluster"), key="cmp_clusters")

c1, c2 = st.columns(2)
with c1:
    which = st.radio("Scores of", ["selected", "scored"], horizontal=True, key="cmp_which",
                     format_func={"selected": "the selected rows",
                                  "scored": "every scored row"}.get)
    st.plotly_chart(pt.score_dist_chart(cmp.scores, which), key="cmp_scores")
with c2:
    if cmp.sources is not None:
        st.plotly_chart(pt.counts_chart(cmp.sources, "source",
                                        title="Selected rows per source"), key="cmp_sources")
    else:
        st.caption("Per-source counts need the workspace's pool.")

st.markdown("**Rows selected by one run or both**")
where = st.segmented_control("Show", ["only A", "only B", "both"], default="only A",
                             selection_mode="single", key="cmp_where")
rows = cmp.rows if not where else cmp.rows[cmp.rows["where"] == where]
view = rows
if pool is not None and sources is not None and len(rows):
    prev = ui.preview_frame(pool.frame(rows["row"].to_numpy()))
    view = rows.merge(prev[["row", "prompt", "answer"]], on="row", how="left")
st.dataframe(view, hide_index=True, key="cmp_rows")
st.download_button("Download the comparison (CSV)", cmp.to_csv(), f"compare_{a_id}_{b_id}.csv",
                   "text/csv", key="cmp_dl")
