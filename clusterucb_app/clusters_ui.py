"""The Clusters page's parts: the clustering form, the map with its selection, the cluster
table with ban / unban, and the sample viewer."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import streamlit as st

from clusterucb_core import plots_rounds as pr
from clusterucb_core.workspace import Workspace

from . import clusters_view, curation_ui, engine, marks, state, ui

K_AUTO, K_FIXED = "auto: pick K from a scan", "fixed K"


def clustering_form(ws: Workspace, stores: list[str]) -> None:
    spec = state.settings(ws, "cluster")
    st.caption("Features: " + ", ".join(f"`{n}`" for n in stores) + ". The clustering uses "
               "the cluster features set on the Model & Features page.")
    c = st.columns([1.4, 1, 1, 1])
    mode = c[0].radio("K", [K_AUTO, K_FIXED], index=0 if spec.k <= 0 else 1, key="cl_kmode",
                      help="auto: clusters a sample for several K and keeps the smallest K "
                           "whose silhouette is within 0.01 of the best (said below, with a "
                           "warning when that K looks poor).")
    k = c[1].number_input("Fixed K", 1, 5000, int(spec.k) if spec.k > 0 else 20, key="cl_k",
                          disabled=mode == K_AUTO)
    seed = c[2].number_input("Seed", 0, 2**31 - 1, int(spec.seed), key="cl_seed")
    mb = c[3].checkbox("Mini-batch (large pools)", value=bool(spec.minibatch), key="cl_mb")
    b = st.columns(2)
    if b[0].button("Run clustering", type="primary", key="cl_run"):
        state.save_settings(ws, cluster=replace(spec, k=0 if mode == K_AUTO else int(k),
                                                seed=int(seed), minibatch=bool(mb)))
        engine.start_stage(ws, "clusters", "Clustering", unit="iterations")
    if b[1].button("Compute the 2-D map (UMAP)", key="cl_map",
                   help="The map is for looking only; the clustering does not use it."):
        engine.start_stage(ws, "map", "UMAP map", unit="steps")


def _picked(event: Any) -> list[int]:
    points = event.selection.points if event else []
    return sorted({int(p["customdata"][0] if isinstance(p["customdata"], list)
                       else p["customdata"]) for p in points if p.get("customdata") is not None})


def map_section(ws: Workspace, cs: Any, pool: Any, lg: Any, scores: dict[str, Any]) -> None:
    """The map coloured by cluster, source, score or curation status, with pinned / rejected
    rows marked; a box or lasso selection lists the rows and offers pin / reject / ban."""
    labels = np.asarray(cs.labels)
    names = cs.cluster_names()
    xy = state.load_map(ws, len(labels))
    if xy is None:
        st.info("No 2-D map yet. UMAP places rows with similar features close together; it "
                "takes a minute on the demo (the first run in a process compiles UMAP's "
                "kernels).")
        if st.button("Compute the 2-D map (UMAP)", key="cl_map2", type="primary"):
            engine.start_stage(ws, "map", "UMAP map", unit="steps")
        ui.job_panel(ws, "map")
        return
    ui.job_panel(ws, "map")
    led = lg.state()
    status = marks.all_status(labels, led)
    opts = ["cluster", "curation status"] + (["source"] if pool is not None else []) \
        + list(scores)
    colour = st.radio("Colour by", opts, horizontal=True, key="cl_colour")
    score = next(iter(scores.values()), None) if colour not in scores else scores[colour]
    hover = ui.RowHover(None if pool is None else pool.table, scores=score, labels=labels,
                        names=names, status=status)
    overlays = [(marks.PINNED, sorted(led.pinned), marks.COLOURS[marks.PINNED], "star"),
                (marks.REJECTED, sorted(led.rejected), marks.COLOURS[marks.REJECTED], "x")]
    if colour == "cluster":
        fig = pr.cluster_map(xy, [names.get(int(c), str(c)) if c >= 0 else "no features"
                                  for c in labels], hover=hover, title="Clusters",
                             overlays=overlays)
    elif colour == "curation status":
        fig = pr.cluster_map(xy, status, hover=hover, title="Curation status",
                             colours=marks.COLOURS)
    elif colour == "source":
        fig = pr.cluster_map(xy, pool.table["source"].astype(str).to_numpy(), hover=hover,
                             title="Sources", overlays=overlays)
    else:
        fig = pr.cluster_map(xy, scores[colour], kind="continuous", hover=hover, title=colour,
                             color_title="score", overlays=overlays)
    event = st.plotly_chart(fig, key="cl_map_fig", on_select="rerun",
                            selection_mode=("points", "box", "lasso"))
    note = state.map_note(ws, len(labels))
    st.caption((f"{note} " if note else "") + "Drag a box or lasso (toolbar, top right of the "
               "map) to select rows. ★ pinned, × rejected.")
    picked = _picked(event)
    if not picked:
        return
    st.markdown(f"**{len(picked):,} rows selected**")
    extra = {"cluster": labels[picked], "status": marks.row_status(picked, labels, led)}
    if score is not None:
        extra["score"] = np.asarray(score)[picked]
    if pool is not None:
        shown = picked[:2000]
        st.dataframe(ui.preview_frame(pool.table, shown, {k: v[:2000] for k, v in
                                                         extra.items()}), hide_index=True,
                     height=ui.table_height(len(shown)), key="cl_picked",
                     column_config={"status": curation_ui.status_column()})
    ids = {} if pool is None else {r: str(pool.table["id"].iat[r]) for r in picked}
    b = st.columns(3)
    if b[0].button(f"Pin {len(picked)} rows", icon=":material/push_pin:", key="cl_pin"):
        curation_ui.edit(lg, "pin", picked, "map selection", ids)
        st.rerun()
    if b[1].button(f"Reject {len(picked)} rows", icon=":material/block:", key="cl_reject"):
        curation_ui.edit(lg, "reject", picked, "map selection", ids)
        st.rerun()
    sel_clusters = sorted({int(c) for c in labels[picked] if c >= 0})
    if b[2].button(f"Ban their {len(sel_clusters)} cluster(s)", key="cl_ban_sel",
                   icon=":material/do_not_disturb_on:", disabled=not sel_clusters):
        curation_ui.edit(lg, "ban", sel_clusters, "map selection", names=names)
        st.rerun()


def _ban(lg: Any, op: str, names: dict[int, str]) -> None:
    """Ban / Unban callback: edit, then clear the choice so the next edit starts empty."""
    chosen = [int(k) for k in st.session_state.get("cl_ban_pick") or []]
    curation_ui.edit(lg, op, chosen, "cluster table", names=names)
    st.session_state["cl_ban_pick"] = []


def cluster_table(cs: Any, lg: Any, scores: Any) -> None:
    names = cs.cluster_names()
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


def samples(cs: Any, pool: Any) -> None:
    names = cs.cluster_names()
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
    rec = pool.table.iloc[r]
    st.caption(f"row {r} · id `{rec['id']}` · source `{rec['source']}` · "
               f"{len(members):,} members")
    ui.show_text(ui.chat_text(rec["messages"]), height=300)
