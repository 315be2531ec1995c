"""ClusterUCB Studio: the Streamlit entry point (navigation + workspace sidebar).

Run with `make run`, or `streamlit run app.py` from the repository root (whose
.streamlit/config.toml applies). Each workflow step is a page in pages/; they are thin: read
the workspace, call the engine (clusterucb_core), render. The wheel ships this file, pages/
and .streamlit/ as the `clusterucb_site` package, which `clusterucb app` runs.
"""

from __future__ import annotations

import os
from pathlib import Path

# Before torch or scikit-learn load: their two OpenMP runtimes starve each other on small
# machines when threads spin (see clusterucb_core.cli.passive_openmp); jobs inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_HERE = Path(__file__).resolve().parent

import streamlit as st  # noqa: E402

from clusterucb_app import tour, ui  # noqa: E402

st.set_page_config(page_title="ClusterUCB Studio", page_icon="🎯", layout="wide")

# (file in pages/, title, icon, url path): the six steps in order, then the teaching pages
PAGES = [
    ("1_pool.py", "1 · Pool", "dataset", "pool"),
    ("2_target.py", "2 · Target", "flag", "target"),
    ("3_features.py", "3 · Model & Features", "functions", "features"),
    ("4_clusters.py", "4 · Clusters", "scatter_plot", "clusters"),
    ("5_rounds.py", "5 · UCB Rounds", "casino", "rounds"),
    ("6_export.py", "6 · Curate & Export", "inventory_2", "export"),
    ("7_playground.py", "Playground", "science", "playground"),
    ("8_race.py", "Policy race", "sports_score", "race"),
    ("9_compare.py", "Compare runs", "compare_arrows", "compare"),
]

nav = st.navigation([st.Page(str(_HERE / "pages" / file), title=title,
                             icon=f":material/{icon}:", url_path=url, default=i == 0)
                     for i, (file, title, icon, url) in enumerate(PAGES)])
with st.sidebar:
    st.markdown("## ClusterUCB Studio")
    tour_slot = st.container()
ws = ui.sidebar()
if ws.name == ui.DEMO_NAME:  # the guided tour walks the demo; other workspaces are yours
    with tour_slot:
        tour.card()  # clusterucb_app/tour.py
nav.run()
