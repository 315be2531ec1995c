"""Playground: a bandit on synthetic arms whose truth you know (no model, instant)."""

from __future__ import annotations

import streamlit as st

from clusterucb_app import playground_ui, teach, ui
from clusterucb_core.selection import run as selection

ws = ui.workspace()
ui.header(
    "Playground",
    "A bandit on **made-up clusters whose truth you know**: no model, no data, instant. "
    "Each arm's rows have rewards drawn around the arm's true mean. One arm is a **hidden "
    "gem**: small, with the best rewards. Press **▶ Play** and watch which policy finds it.",
    playground_ui.HELP)

try:
    sess, settings = teach.session(ws)
except (ValueError, OSError) as exc:
    ui.show_error(exc, "Building the playground", "the saved settings were reset; make "
                  "the arms again")
    teach.save_settings(ws, dict(teach.DEFAULTS))
    st.stop()
pg = sess.pg

playground_ui.arms_form(ws, settings, pg)
playground_ui.policies_form(ws, settings)

st.caption(
    f"{pg.K} arms, {pg.N:,} rows · budget {settings['shared']['budget']:g} → "
    f"{selection.count_of(settings['shared']['budget'], pg.N):,} rows scored · top-p "
    f"{settings['shared']['top_p']:g} → {selection.count_of(settings['shared']['top_p'], pg.N):,}"
    f" rows selected · " + " vs ".join(sess.labels.values())
)

playing = bool(st.session_state.get("pg_play", False)) and not sess.done


@st.fragment(run_every=0.6 if playing else None)
def live() -> None:
    sess, settings = playground_ui.controls(ws)
    truth = playground_ui.truth_banner(pg, settings)
    playground_ui.side_panels(sess, pg, truth)
    playground_ui.truth_and_history(sess, pg, settings, truth)


live()

st.download_button("Download the arms' rows (CSV)", pg.table().to_csv(index=False),
                   file_name="playground_rows.csv", mime="text/csv", key="pg_dl")
st.page_link(
    "pages/8_race.py", label="Race every policy on these arms", icon=":material/sports_score:"
)
