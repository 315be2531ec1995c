"""Policy race: every arm rule on the same clusters, rewards and seeds, side by side."""

from __future__ import annotations

import json

import streamlit as st

from clusterucb_app import race_ui, state, teach, ui
from clusterucb_core.runtime import atomic
from clusterucb_core.teach import race as rc

RACE_FILE = "race.json"  # W/race.json: the last race's settings (to restore the form)

ws = ui.workspace()
ui.header(
    "Policy race",
    "Every arm rule plays on **the same clusters, the same rewards and the same seeds**; "
    "only the choice of arm differs. Which one finds the best rows with the least budget?",
    race_ui.HELP)

# ------------------------------------------------------------------------------- source
saved = {}
try:
    saved = json.loads((ws.root / RACE_FILE).read_text())
except (OSError, ValueError):
    saved = {}

clusterings = state.cluster_names(ws)
have_scores = ws.scores().exists()
options = ["playground"] + (["workspace"] if clusterings and have_scores else [])
labels = {"playground": "Playground arms", "workspace": f"This workspace ({ws.name}): "
                                                       "clusters + exhaustive scores"}
src_default = saved.get("source", "playground")
source = st.radio("Race on", options, format_func=labels.get, horizontal=True,
                  index=options.index(src_default) if src_default in options else 0,
                  key="race_source")
if "workspace" not in options:
    st.caption("A race on this workspace needs clusters and **exhaustive scores** (every row "
               "scored, Model & Features page); until then it races on the playground arms.")

clustering = None
if source == "playground":
    pg_settings = teach.load_settings(ws)
    try:
        pg = teach.playground(pg_settings)
    except ValueError as exc:
        ui.show_error(exc, "Building the playground arms", "make the arms again on the "
                      "Playground page")
        st.stop()
    st.caption(f"{pg.describe()}. Change the arms on the Playground page.")
    src_key = json.dumps(pg_settings["arms"], sort_keys=True)
else:
    cur = state.current_clusters_name(ws)
    clustering = st.selectbox("Clustering", clusterings,
                              index=clusterings.index(cur) if cur in clusterings else 0,
                              key="race_clustering")
    src_key = f"{ws.root}|{clustering}|{ws.scores().stat().st_mtime_ns}"

run_spec = state.settings(ws, "selection")  # what a new run on the UCB page gets
# the last race's settings when it raced on the same source, else those of a run
go_race, form = race_ui.settings_form(saved if saved.get("source") == source else {}, run_spec,
                                      can_order=source == "workspace")

store = st.session_state.setdefault("_race_results", {})
have = store.get(str(ws.root))
run_now = go_race or (have is None and source == "playground")
if run_now:
    try:
        spec = race_ui.spec_from_form(form)
        if source == "playground":
            lab, rew, names, info = rc.playground_source(pg)
        else:
            lab, rew, names, info = rc.workspace_source(ws, clustering)
        feats = (rc.workspace_features(ws, clustering)
                 if source == "workspace" and spec.draw_order != "random" else None)
        bar = st.progress(0.0, text="Racing...")
        result = rc.run_race(lab, rew, spec, names=names, source=info, features=feats,
                             progress=lambda i, n: bar.progress(i / n, text=f"Racing: run {i}"
                                                                             f" of {n}"))
        bar.empty()
    except (ValueError, FileNotFoundError) as exc:
        ui.show_error(exc, "The race", "change the setting named above")
        st.stop()
    store[str(ws.root)] = (src_key, result)
    try:
        atomic.write_json(ws.root / RACE_FILE, {"source": source, "policies": form["policies"],
                                                "betas": form["betas"],
                                                "quantile": form["quantile"],
                                                "race": spec.to_dict()})
    except OSError:
        pass
    have = store[str(ws.root)]

if have is None:
    st.info("Press **Run the race**.")
    st.stop()
key, result = have
if key != src_key:
    st.warning("The arms or the clusters changed since this race was run: press **Run the "
               "race** to race on the new ones.")

race_ui.show_results(result)
st.caption(race_ui.differences(result.spec, run_spec))
st.caption("The same race headless: `clusterucb race --config race.toml` "
           "(example in sample_data/race.toml).")
