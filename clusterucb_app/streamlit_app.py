"""ClusterUCB Studio: the Streamlit entry point (navigation + workspace sidebar).

Run with `make run` (or `streamlit run clusterucb_app/streamlit_app.py` from the repository
root, whose .streamlit/config.toml applies). It lives inside the package so an installed wheel
can run it. Each workflow step is a page in clusterucb_app/pages/; they are thin: read the
workspace, call the engine (clusterucb_core), render.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Before torch or scikit-learn load: their two OpenMP runtimes starve each other on small
# machines when threads spin (see clusterucb_core.cli.passive_openmp); jobs inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_HERE = Path(__file__).resolve().parent
_SRC = str(_HERE.parent)  # the folder holding the clusterucb_app package (a checkout, uninstalled)
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

import streamlit as st  # noqa: E402

from clusterucb_app import tour, ui  # noqa: E402

st.set_page_config(page_title="ClusterUCB Studio", page_icon="🎯", layout="wide")

PAGES = [
    st.Page(
        str(_HERE / "pages" / "1_pool.py"),
        title="1 · Pool",
        icon=":material/dataset:",
        url_path="pool",
        default=True,
    ),
    st.Page(
        str(_HERE / "pages" / "2_target.py"),
        title="2 · Target",
        icon=":material/flag:",
        url_path="target",
    ),
    st.Page(
        str(_HERE / "pages" / "3_features.py"),
        title="3 · Model & Features",
        icon=":material/functions:",
        url_path="features",
    ),
    st.Page(
        str(_HERE / "pages" / "4_clusters.py"),
        title="4 · Clusters",
        icon=":material/scatter_plot:",
        url_path="clusters",
    ),
    st.Page(
        str(_HERE / "pages" / "5_rounds.py"),
        title="5 · UCB Rounds",
        icon=":material/casino:",
        url_path="rounds",
    ),
    st.Page(
        str(_HERE / "pages" / "6_export.py"),
        title="6 · Curate & Export",
        icon=":material/inventory_2:",
        url_path="export",
    ),
    # learn and compare (teaching pages)
    st.Page(
        str(_HERE / "pages" / "7_playground.py"),
        title="Playground",
        icon=":material/science:",
        url_path="playground",
    ),
    st.Page(
        str(_HERE / "pages" / "8_race.py"),
        title="Policy race",
        icon=":material/sports_score:",
        url_path="race",
    ),
    st.Page(
        str(_HERE / "pages" / "9_compare.py"),
        title="Compare runs",
        icon=":material/compare_arrows:",
        url_path="compare",
    ),
]

nav = st.navigation(PAGES)
with st.sidebar:
    st.markdown("## ClusterUCB Studio")
    tour_slot = st.container()
ws = ui.sidebar()
if ws.name == ui.DEMO_NAME:  # the guided tour walks the demo; other workspaces are yours
    with tour_slot:
        tour.card()  # clusterucb_app/tour.py
nav.run()
