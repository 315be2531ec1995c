"""Step 1: the instruction pool to choose from."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from clusterucb_app import pool_ui, state, ui

ws = ui.workspace()
ui.header(
    "Pool",
    "The pool is the big set of training chats you want to choose from.",
    """
The pool is every candidate training example (a chat: user / assistant turns). ClusterUCB will
score rows by how much their **gradient** agrees with the gradient of your *target* set, but
only for a *budget* of rows, chosen cluster by cluster.

Accepted: JSONL, JSON, CSV/TSV, Parquet or a Hugging Face `datasets` folder, in the shapes
`messages` (open-instruct / OpenAI), Alpaca (`instruction`/`input`/`output`), ShareGPT
(`conversations`) or `prompt`/`completion`. Bad rows are listed with their line number and
skipped; the rest still loads. Exports give back your **original lines**, byte for byte.

Each row's **id** and **source** come from the `id` and `dataset`/`source` fields; name other
columns above when your pool keeps them elsewhere (sources feed the per-source counts and the
cluster table's source mix).
""")

try:
    current = state.load_pool(ws)
except Exception:  # noqa: BLE001 - shown below, after the chooser
    current = None
with st.container(border=True):
    pool_ui.chooser(ws, current)

if not ui.need(bool(state.pool_ref(ws)), pool_ui.empty_hint(st.session_state.get("pool_source"))):
    st.stop()
try:
    pool = state.load_pool(ws)
except Exception as exc:  # noqa: BLE001
    ui.show_error(exc, "Reading the pool", "choose the pool again above")
    st.stop()

report = pool.report
m = st.columns(5)
m[0].metric("Usable rows", f"{report.n_valid:,}")
m[1].metric("Records in file", f"{report.n_records:,}")
m[2].metric("Problems", f"{len(report.problems):,}",
            help=f"{len(report.errors)} errors (row skipped), "
                 f"{len(report.warnings)} warnings (row kept)")
m[3].metric("Format", pool.format)
m[4].metric("Shape", pool.shape)
st.caption(f"File: `{pool.path}` · fingerprint `{pool.fingerprint[:16]}` · "
           "the detection can be overridden above.")
for note in getattr(pool, "notes", []) or []:
    st.info(note)

tab_prev, tab_src, tab_len, tab_rep = st.tabs(
    ["Preview", "Sources", "Token lengths", f"Validation report ({len(report.problems)})"])
with tab_prev:
    n_show = min(len(pool), 200)
    st.dataframe(ui.preview_frame(pool.frame(range(n_show))), hide_index=True,
                 height=min(320, ui.table_height(n_show)))
    st.caption(f"The first {n_show} of {len(pool):,} rows. Pick a row to read it whole:")
    row = st.number_input("Row", min_value=0, max_value=len(pool) - 1, value=0,
                          key="pool_row")
    rec = pool.frame([int(row)]).iloc[0]
    st.caption(f"id `{rec['id']}` · source `{rec['source']}` · record {int(row)} · "
               f"line {rec['line_no']} of the file")
    ui.show_text(ui.chat_text(rec["messages"]), height=300)
with tab_src:
    counts = pd.DataFrame(list(pool.sources().items()), columns=["source", "rows"])
    c1, c2 = st.columns([2, 1])
    c1.plotly_chart(px.bar(counts, x="source", y="rows", title="Rows per source"),
                    key="pool_sources_fig")
    c2.dataframe(counts, hide_index=True, height=ui.table_height(len(counts)))
with tab_len:
    pool_ui.lengths_tab(ws, pool)
with tab_rep:
    pool_ui.report_tab(report)

st.page_link("pages/2_target.py", label="Next: choose the target", icon=":material/arrow_forward:")
