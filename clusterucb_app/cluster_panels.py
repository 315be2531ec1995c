"""The Clusters page's lower panels: the K scan and a sample viewer per cluster."""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from clusterucb_app import engine, state, ui
from clusterucb_core import plots_rounds as pr


def kscan(ws: Any, cs: Any) -> None:
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
