"""Step 4: cluster the pool (the bandit's arms) and look at the clusters on a 2-D map."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from clusterucb_app import cluster_map, cluster_panels, engine, find, state, ui

ws = ui.workspace()
ui.header(
    "Clusters",
    "Group rows whose features point the same way. Each cluster becomes one arm of the bandit.",
    """
**Spherical k-means** on the normalised features: each row joins the centroid with the
largest cosine; a centroid is the normalised mean of its members (k-means++ seeding, a seed, a
tolerance; empty clusters are re-seeded). Rows of one cluster have similar gradients, so
similar influence scores: a few draws from a cluster say a lot about all of it.

**Choosing K**: the K scan clusters a sample for several K and reports the cosine silhouette
(higher = better separated); the default picks the smallest K within 0.01 of the best.
Fewer, larger clusters make the cold start cheaper; more clusters let the bandit aim finer.

**The map** is UMAP (cosine) of the same features, for looking only — the clustering does not
use it. Select points with the box or lasso tool to read them, pin or reject them, or ban their
cluster (a banned cluster is never drawn).
""")

stores = [n for n in ws.list("features") if not n.startswith(".")]

# ------------------------------------------------------------------------------ make clusters
with st.expander("Cluster the pool", expanded=not state.cluster_names(ws)):
    if not stores:
        st.info("No features yet: compute **cluster features** on the Model & Features page "
                "first.")
        st.page_link(
            "pages/3_features.py", label="Go to Model & Features", icon=":material/arrow_forward:"
        )
    else:
        spec = state.settings(ws, "cluster")
        st.caption("Features: " + ", ".join(f"`{n}`" for n in stores)
                   + ". The clustering uses the cluster features set on the Model & Features "
                     "page.")
        c = st.columns([1, 1, 1])
        k = c[0].number_input("K (0 = pick from the scan)", 0, 5000, int(spec.k), key="cl_k")
        seed = c[1].number_input("Seed", 0, 2**31 - 1, int(spec.seed), key="cl_seed")
        mb = c[2].checkbox("Mini-batch (large pools)", value=bool(spec.minibatch), key="cl_mb")
        b = st.columns(2)
        if b[0].button("Run clustering", type="primary", key="cl_run"):
            from dataclasses import replace

            state.save_settings(ws, cluster=replace(spec, k=int(k), seed=int(seed),
                                                    minibatch=bool(mb)))
            engine.start_stage(ws, "clusters", "Clustering")
        if b[1].button("Compute the 2-D map (UMAP)", key="cl_map",
                       help="The map is for looking only; the clustering does not use it."):
            engine.start_stage(ws, "map", "UMAP map")
ui.job_panel(ws, "clusters")  # outside the expander: visible while it is collapsed

names = state.cluster_names(ws)
if not names:
    st.info("No clusters yet. Compute cluster features, then press **Run clustering** above.")
    st.stop()
cur = state.current_clusters_name(ws)
if len(names) > 1:
    pick = st.selectbox("Clustering", names, index=names.index(cur), key="cl_pick",
                        help="The UCB page uses the clustering chosen here.")
    if pick != cur:
        ws.update_meta(clusters=pick)
        st.rerun()
try:
    cs = state.load_clusters(ws, cur)
except Exception as exc:  # noqa: BLE001
    ui.show_error(exc, f"Reading clusters {cur!r}", "run the clustering again")
    st.stop()
labels = np.asarray(cs.labels)
n_rows = len(labels)
try:
    pool = state.load_pool(ws)
    if len(pool) != n_rows:
        st.warning("These clusters were made from another pool (row counts differ); "
                   "re-run the clustering.")
        pool = None
except Exception:  # noqa: BLE001
    pool = None
lg = state.ledger(ws, cur)
led = lg.state()
cnames = find.cluster_names(cs, led)  # with the names given in the ledger

m = st.columns(4)
m[0].metric("Clusters (arms)", cs.k)
m[1].metric("Rows", f"{n_rows:,}")
m[2].metric("Without features", f"{int((labels < 0).sum()):,}",
            help="Rows with no trained token within the max length: never drawn.")
m[3].metric("Banned clusters", len(led.banned))

# ------------------------------------------------------------------------------ the map
cluster_map.section(ws, cs, pool, cur)  # a fragment: selections, search, tags

# ------------------------------------------------------------------------------ cluster table
st.subheader("Clusters")
if cs.summary is not None:
    summ = cs.summary.copy()
    table = pd.DataFrame({
        "cluster": summ["cluster"].astype(int),
        "label": [led.names.get(int(c), lab) for c, lab in zip(summ["cluster"], summ["label"])],
        "size": summ["size"].astype(int),
        "share": summ["share"],
        "top source": summ["top_source"],
        "source mix": [", ".join(f"{k} {v}" for k, v in list(d.items())[:4])
                       for d in summ["sources"]],
        "keywords": [", ".join(k) for k in summ["keywords"]],
        f"{summ.attrs.get('token_unit', 'tokens')} (median)": summ["tokens_median"],
        "banned": [int(c) in led.banned for c in summ["cluster"]],
    })
else:
    sizes = np.bincount(labels[labels >= 0], minlength=cs.k)
    table = pd.DataFrame({"cluster": range(cs.k), "size": sizes,
                          "banned": [c in led.banned for c in range(cs.k)]})
st.dataframe(table, hide_index=True, key="cl_table",
             column_config={"share": st.column_config.ProgressColumn(
                 "share", format="percent", min_value=0, max_value=float(table["share"].max())
                 if "share" in table else 1.0)})
c = st.columns([3, 1, 1])
ban_pick = c[0].multiselect("Clusters", list(range(cs.k)), format_func=lambda k: cnames.get(k, k),
                            key="cl_ban_pick", label_visibility="collapsed",
                            placeholder="Choose clusters to ban or unban")
if c[1].button("Ban", icon=":material/do_not_disturb_on:", key="cl_ban", disabled=not ban_pick,
               help="A banned cluster is never drawn by the bandit and left out of the selection "
                    "(pinned rows stay)."):
    for k_ in ban_pick:
        lg.ban(int(k_), note="cluster table")
    st.rerun()
if c[2].button("Unban", key="cl_unban", disabled=not ban_pick):
    for k_ in ban_pick:
        lg.unban(int(k_), note="cluster table")
    st.rerun()
with st.expander("Name a cluster"):
    find.rename_panel(lg, cs.k, cnames, "cl_rename")

# ------------------------------------------------------------------------------ K scan + samples
left, right = st.columns([1, 1])
with left:
    cluster_panels.kscan(ws, cs)
with right:
    cluster_panels.samples(cs, pool, cnames)

st.page_link("pages/5_rounds.py", label="Next: UCB rounds", icon=":material/arrow_forward:")
