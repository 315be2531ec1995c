"""Step 4: cluster the pool (the bandit's arms) and look at the clusters on a 2-D map."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from clusterucb_app import engine, rounds, state, ui
from clusterucb_core import plots_rounds as pr
from clusterucb_core.plots import escape

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
cnames = cs.cluster_names()
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

m = st.columns(4)
m[0].metric("Clusters (arms)", cs.k)
m[1].metric("Rows", f"{n_rows:,}")
m[2].metric("Without features", f"{int((labels < 0).sum()):,}",
            help="Rows with no trained token within the max length: never drawn.")
m[3].metric("Banned clusters", len(led.banned))

# ------------------------------------------------------------------------------ the map
st.subheader("Map")
xy = state.load_map(ws, n_rows)
if xy is None:
    st.info("No 2-D map yet. UMAP places rows with similar features close together; it takes "
            "a minute on the demo (the first run in a process compiles UMAP's kernels).")
    if st.button("Compute the 2-D map (UMAP)", key="cl_map2", type="primary"):
        engine.start_stage(ws, "map", "UMAP map")
ui.job_panel(ws, "map")
if xy is not None:
    ex = state.exhaustive_scores(ws, n_rows)
    run_scores = None
    rid = rounds.current_id(ws)
    if rid is not None:
        try:
            run_scores = rounds.get(ws, rid).scores
        except Exception:  # noqa: BLE001
            run_scores = None
    opts = ["cluster"] + (["source"] if pool is not None else []) \
        + (["exhaustive score"] if ex is not None else []) \
        + (["score (current run)"] if run_scores is not None else [])
    colour = st.radio("Colour by", opts, horizontal=True, key="cl_colour")

    class _Hover:
        def __getitem__(self, i: int) -> str:
            lab = int(labels[i])
            # Plotly renders hover text as HTML: every user-made string is escaped.
            head = f"row {i} · {escape(cnames.get(lab, lab))}"
            if pool is None:
                return head
            rec = pool.row(i)
            return (f"{head}<br>id {escape(rec['id'])} · {escape(rec['source'])}<br>"
                    f"{escape(ui.first_turn(rec['messages'], n=90))}")

    if colour == "cluster":
        fig = pr.cluster_map(xy, [cnames.get(int(c), str(c)) if c >= 0 else "no features"
                                  for c in labels], hover=_Hover(), title="Clusters")
    elif colour == "source":
        fig = pr.cluster_map(xy, pool.column("source").astype(str), hover=_Hover(),
                             title="Sources")
    elif colour == "exhaustive score":
        fig = pr.cluster_map(xy, ex, kind="continuous", hover=_Hover(),
                             title="Exhaustive influence score", color_title="score")
    else:
        fig = pr.cluster_map(xy, run_scores, kind="continuous", hover=_Hover(),
                             title=f"Scores drawn so far in {rid}", color_title="score")
    event = st.plotly_chart(fig, key="cl_map_fig", on_select="rerun",
                            selection_mode=("points", "box", "lasso"))
    note = state.map_note(ws, n_rows)
    st.caption((f"{note} " if note else "") + "Drag a box or lasso (toolbar, top right of the "
               "map) to select rows.")
    picked = sorted({int(p["customdata"]) if not isinstance(p["customdata"], list)
                     else int(p["customdata"][0])
                     for p in (event.selection.points if event else [])
                     if p.get("customdata") is not None})
    if picked:
        st.markdown(f"**{len(picked):,} rows selected**")
        extra = {"cluster": labels[picked],
                 "status": ["pinned" if r in led.pinned else "rejected" if r in led.rejected
                            else "" for r in picked]}
        if pool is not None:
            st.dataframe(ui.preview_frame(pool.frame(picked[:2000]), None,
                                          {k: v[:2000] for k, v in extra.items()}),
                         hide_index=True, height=260)
        b = st.columns(3)
        if b[0].button(f"Pin {len(picked)} rows", icon=":material/push_pin:", key="cl_pin"):
            lg.pin(picked, note="map selection")
            st.rerun()
        if b[1].button(f"Reject {len(picked)} rows", icon=":material/block:", key="cl_reject"):
            lg.reject(picked, note="map selection")
            st.rerun()
        sel_clusters = sorted({int(c) for c in labels[picked] if c >= 0})
        if b[2].button(
            f"Ban their {len(sel_clusters)} cluster(s)",
            icon=":material/do_not_disturb_on:",
            key="cl_ban_sel",
            disabled=not sel_clusters,
        ):
            for c in sel_clusters:
                lg.ban(c, note="map selection")
            st.rerun()

# ------------------------------------------------------------------------------ cluster table
st.subheader("Clusters")
if cs.summary is not None:
    summ = cs.summary.copy()
    table = pd.DataFrame({
        "cluster": summ["cluster"].astype(int),
        "label": summ["label"],
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

# ------------------------------------------------------------------------------ K scan + samples
left, right = st.columns([1, 1])
with left:
    st.subheader("K scan")
    ks = cs.kscan if cs.kscan is not None else state.load_kscan(ws, cs.meta.get("features"))
    if ks is not None and len(ks):
        chosen = ks.loc[ks["chosen"].astype(bool), "k"] if "chosen" in ks else []
        st.plotly_chart(pr.kscan_chart(ks["k"], ks["silhouette"], ks["inertia"],
                                       int(chosen.iloc[0]) if len(chosen) else None),
                        key="cl_kscan")
        if ks.attrs.get("rule"):
            st.caption(f"Rule: {ks.attrs['rule']}.")
    else:
        st.caption(f"This clustering used a fixed K={cs.k}. A scan clusters a sample for "
                   "several K and compares their silhouettes.")
    if st.button("Scan K", key="cl_kscan_btn",
                 help="Runs in the background on a sample of the cluster features."):
        engine.start_stage(ws, "kscan", "K scan", unit="K values")
    ui.job_panel(ws, "kscan")
with right:
    st.subheader("Samples per cluster")
    k_view = st.selectbox("Cluster", list(range(cs.k)), format_func=lambda k: cnames.get(k, k),
                          key="cl_view")
    members = np.flatnonzero(labels == k_view)
    if pool is None:
        st.caption("The pool is not available to show texts.")
    elif len(members):
        examples = []
        if cs.summary is not None:
            examples = [int(r) for r in cs.summary.loc[cs.summary["cluster"] == k_view,
                                                      "examples"].iloc[0]]
        rng = np.random.default_rng(int(k_view))
        others = [int(r) for r in rng.choice(members, size=min(5, len(members)), replace=False)]
        which = st.radio("Show", ["closest to the centroid", "random members"], horizontal=True,
                         key="cl_which")
        shown = examples if (which.startswith("closest") and examples) else others
        i = st.number_input("Example", 1, max(len(shown), 1), 1, key="cl_ex") - 1
        r = shown[min(int(i), len(shown) - 1)]
        rec = pool.row(r)
        st.caption(f"row {r} · id `{rec['id']}` · source `{rec['source']}` · "
                   f"{len(members):,} members")
        ui.show_text(ui.chat_text(rec["messages"]), height=300)

st.page_link("pages/5_rounds.py", label="Next: UCB rounds", icon=":material/arrow_forward:")
