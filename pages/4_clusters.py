"""Step 4: cluster the pool (the bandit's arms) and look at the clusters on a 2-D map."""

from __future__ import annotations

import numpy as np
import streamlit as st

from clusterucb_app import (
    cluster_map,
    cluster_panels,
    clusters_view,
    curation_ui,
    find,
    rounds,
    slots,
    state,
    ui,
)

ws = ui.workspace()
ui.header(
    "Clusters",
    "Group rows whose features point the same way. Each cluster becomes one arm of the bandit.",
    """
**Spherical k-means** on the normalised features: each row joins the centroid with the
largest cosine; a centroid is the normalised mean of its members (k-means++ seeding, a seed, a
tolerance; empty clusters are re-seeded). The features are the *cluster features* of the
Model & Features page (by default forward-only hidden states, not gradients): rows that the
model represents alike tend to have similar influence scores, so a few draws from a cluster
say a lot about all of it.

**Choosing K**: *auto* picks K by the rule set in the clustering settings: `size8` (the
default) gives each arm about 8 cold-start draws; `silhouette` clusters a sample for several K,
keeps the smallest K within 0.01 of the best cosine silhouette, and warns when that K is the
smallest tried or the silhouette is low. *Fixed K* uses yours.
Fewer, larger clusters make the cold start cheaper; more clusters let the bandit aim finer.

**The map** is UMAP (cosine) of the same features, for looking only — the clustering does not
use it. Select points with the box or lasso tool to read them, pin or reject them, or ban their
cluster (a banned cluster is never drawn). Pinned rows show as ★, rejected as ×; *colour by
curation status* greys out banned clusters.
""")

stores = [n for n in ws.list("features") if not n.startswith(".")]
curation_ui.flush_toast()

with st.expander("Cluster the pool", expanded=not state.cluster_names(ws)):
    if not stores:
        st.info("No features yet: compute **cluster features** on the Model & Features page "
                "first.")
        st.page_link(
            "pages/3_features.py", label="Go to Model & Features", icon=":material/arrow_forward:"
        )
    else:
        cluster_panels.clustering_form(ws, stores)
ui.job_panel(ws, "clusters")  # outside the expander: visible while it is collapsed

names = state.cluster_names(ws)
if not names:
    st.info("No clusters yet. Compute cluster features, then press **Run clustering** above.")
    st.stop()
cur = state.current_clusters_name(ws)
if len(names) > 1:
    pick = st.selectbox("Clustering", names, index=names.index(cur), key=f"cl_pick_{cur}",
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
if cs.kscan is not None and (warning := clusters_view.kscan_warning(cs.kscan, cs.k)):
    st.warning(warning)

scores = {}
if (ex := state.exhaustive_scores(ws, n_rows)) is not None:
    scores["exhaustive score"] = ex
run = None
if (rid := rounds.current_id(ws)) is not None:
    try:
        run = rounds.get(ws, rid)
        scores[f"score in run {rounds.describe(ws, rid)}"] = run.scores
    except Exception as exc:  # noqa: BLE001 - the map works without the run
        ui.log.warning("run %s not shown on the map: %s", rid, exc)


@st.fragment(key=cluster_map.COUNTS)  # a map edit reruns it alone (the map is not resent)
def counts() -> None:
    now = lg.state()
    m = st.columns(5)
    m[0].metric("Clusters (arms)", cs.k)
    m[1].metric("Rows", f"{n_rows:,}")
    m[2].metric("Without features", f"{int((labels < 0).sum()):,}",
                help="Rows with no trained token within the max length: never drawn.")
    m[3].metric("Banned clusters", len(now.banned))
    m[4].metric("Pinned / rejected rows", f"{len(now.pinned):,} / {len(now.rejected):,}")
    if run is not None and (warn := slots.over_slots(len(now.pinned), run.n_top)):
        st.warning(warn + " (The current run's top-p.)", icon=":material/push_pin:")


counts()

cluster_map.section(ws, cs, pool, cur)  # a fragment: selections, search, tags
cluster_panels.cluster_table(cs, lg, cnames, next(iter(scores.values()), None))
with st.expander("Name a cluster"):
    find.rename_panel(lg, cs.k, cnames, "cl_rename")

left, right = st.columns([1, 1])
with left:
    cluster_panels.kscan(ws, cs)
with right:
    cluster_panels.samples(cs, pool, cnames)

st.page_link("pages/5_rounds.py", label="Next: UCB rounds", icon=":material/arrow_forward:")
