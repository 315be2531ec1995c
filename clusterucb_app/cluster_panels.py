"""The Clusters page's panels: the clustering form (K auto or fixed), the cluster table with
its curation marks and ban / unban / undo, the K scan and a sample viewer per cluster."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import streamlit as st

from clusterucb_app import clusters_view, curation_ui, engine, state, ui
from clusterucb_app import plots_rounds as pr

K_AUTO, K_FIXED = "auto: pick K by the rule", "fixed K"


def clustering_form(ws: Any, stores: list[str]) -> None:
    spec = state.settings(ws, "clusters")
    st.caption("Features: " + ", ".join(f"`{n}`" for n in stores) + ". The clustering uses "
               "the cluster features set on the Model & Features page.")
    c = st.columns([1.4, 1, 1, 1])
    mode = c[0].radio("K", [K_AUTO, K_FIXED], index=0 if spec.auto_k else 1, key="cl_kmode",
                      help=f"auto: K by the rule `{spec.k_rule}` (size<m>: about m cold-start "
                           "draws per arm; silhouette: a scan on a sample, the smallest K "
                           "within 0.01 of the best, with a warning when that K looks poor).")
    k = c[1].number_input("Fixed K", 1, 5000, 20 if spec.auto_k else int(spec.k), key="cl_k",
                          disabled=mode == K_AUTO)
    seed = c[2].number_input("Seed", 0, 2**31 - 1, int(spec.seed), key="cl_seed")
    mb = c[3].checkbox("Mini-batch (large pools)", value=bool(spec.minibatch), key="cl_mb")
    b = st.columns(2)
    busy = ui.busy(ws)
    if b[0].button("Run clustering", type="primary", key="cl_run", disabled=bool(busy),
                   help=busy):
        state.save_settings(ws, clusters=replace(spec, k=0 if mode == K_AUTO else int(k),
                                                seed=int(seed), minibatch=bool(mb)))
        engine.start_stage(ws, "clusters", "Clustering", unit="iterations")
    if b[1].button("Compute the 2-D map (UMAP)", key="cl_map", disabled=bool(busy),
                   help=busy or "The map is for looking only; the clustering does not use it."):
        engine.start_stage(ws, "map", "UMAP map", unit="steps")


TABLE = "cl_table_fragment"  # the cluster table's fragment key (a map edit reruns it)


def _ban(lg: Any, op: str, names: dict[int, str]) -> None:
    """Ban / Unban callback: edit, clear the choice so the next edit starts empty, and rerun
    the whole page (the map greys a banned cluster)."""
    chosen = [int(k) for k in st.session_state.get("cl_ban_pick") or []]
    curation_ui.edit(lg, op, chosen, "cluster table", names=names)
    st.session_state["cl_ban_pick"] = []
    st.rerun()


@st.fragment(key=TABLE)
def cluster_table(cs: Any, lg: Any, names: dict[int, str], scores: Any) -> None:
    """The clusters with their curation marks (and mean score), then ban / unban / undo."""
    st.subheader("Clusters")
    table = clusters_view.cluster_table(cs, lg.state(), scores)
    cfg = {"curation": st.column_config.TextColumn("curation", help="banned, and how many "
                                                   "of the cluster's rows are pinned / rejected")}
    if "share" in table:
        cfg["share"] = st.column_config.ProgressColumn(
            "share", format="percent", min_value=0, max_value=float(table["share"].max()))
    st.dataframe(table, hide_index=True, key="cl_table", column_config=cfg,
                 height=ui.table_height(len(table)))
    c = st.columns([3, 1, 1, 1.4])
    c[0].multiselect("Clusters", list(range(cs.k)), format_func=lambda k: names.get(k, k),
                     key="cl_ban_pick", label_visibility="collapsed",
                     placeholder="Choose clusters to ban or unban")
    pick = bool(st.session_state.get("cl_ban_pick"))
    c[1].button("Ban", icon=":material/do_not_disturb_on:", key="cl_ban", disabled=not pick,
                on_click=_ban, args=(lg, "ban", names),
                help="A banned cluster is never drawn by the bandit and left out of the "
                     "selection (pinned rows stay).")
    c[2].button("Unban", key="cl_unban", disabled=not pick, on_click=_ban,
                args=(lg, "unban", names))
    with c[3]:
        curation_ui.undo_button(lg, "cl_undo")


def kscan(ws: Any, cs: Any) -> None:
    from clusterucb_core.clustering.krule import clusters_sentences

    st.subheader("K scan")
    for line in clusters_sentences(cs.meta):  # which features, their cost, why K
        st.caption(line)
    ks = cs.kscan if cs.kscan is not None else state.load_kscan(ws, cs.meta.get("features"))
    if ks is not None and len(ks):
        chosen = ks.loc[ks["chosen"].astype(bool), "k"] if "chosen" in ks else []
        st.plotly_chart(pr.kscan_chart(ks["k"], ks["silhouette"], ks["inertia"],
                                       int(chosen.iloc[0]) if len(chosen) else None),
                        key="cl_kscan")
        if ks.attrs.get("rule"):
            st.caption(f"Rule: {ks.attrs['rule']}.")
    else:
        st.caption(clusters_view.k_sentence(cs.meta or {}, cs.k) + " A scan clusters a sample "
                   "for several K and compares their silhouettes.")
    busy = ui.busy(ws)
    if st.button("Scan K", key="cl_kscan_btn", disabled=bool(busy),
                 help=busy or "Runs in the background on a sample of the cluster features."):
        engine.start_stage(ws, "kscan", "K scan", unit="K values")
    ui.job_panel(ws, "kscan")


def samples(cs: Any, pool: Any, names: dict[int, str]) -> None:
    """Rows of one cluster: those closest to its centroid, or random members."""
    st.subheader("Samples per cluster")
    labels = np.asarray(cs.labels)
    k_view = st.selectbox("Cluster", list(range(cs.k)), format_func=lambda k: names.get(k, k),
                          key="cl_view")
    members = np.flatnonzero(labels == k_view)
    if pool is None:
        st.caption("The pool is not available to show texts.")
        return
    if not len(members):
        return
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
    rec = pool.frame([r]).iloc[0]
    st.caption(f"row {r} · id `{rec['id']}` · source `{rec['source']}` · "
               f"{len(members):,} members")
    ui.show_text(ui.chat_text(rec["messages"]), height=300)
