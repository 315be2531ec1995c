"""Step 6: review the final selection, curate it by hand, and export it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from clusterucb_app import curation_ui, export_ui, export_view, marks, rounds, state, ui

ws = ui.workspace()
ui.header(
    "Curate & Export",
    "The final selection: the top-p of every scored row, with your pins, rejections and bans "
    "applied. Export it in your pool's own format, or as LESS's files.",
    """
* **Selected** = `floor(N·p)` rows: every **pinned** row first, then the best-scored rows
  among those the bandit scored, leaving out **rejected** rows and rows of **banned**
  clusters (a pinned row stays even in a banned cluster). Pins take slots, so the export has
  the size top-p says; with more pins than slots every pin is kept and nothing else.
* Every hand edit is kept in the workspace's **ledger** (`ledger.jsonl`) with its time.
* The export folder holds: `selected.*` — your original records **byte for byte**;
  `selection.parquet`/`.csv` — every drawn, pinned or rejected row with score, cluster,
  round and status; LESS's `sorted.csv` and `top_p*.jsonl`; a Hugging Face `dataset/`; and
  `manifest.json` with every setting, seed, fingerprint and package version, so the selection
  can be reproduced.
""")

rid = rounds.current_id(ws)
if not ui.need(rid is not None, "No selection run yet: run the bandit on the UCB Rounds page.",
               "pages/5_rounds.py"):
    st.stop()
try:
    run = rounds.get(ws, rid)
    clustering, _ = rounds.run_inputs(ws, rid)
    clusters = state.load_clusters(ws, clustering)
    pool = state.load_pool(ws)
except Exception as exc:  # noqa: BLE001
    ui.show_error(exc, f"Opening run {rid}", "check the pool and clusters, or start a new run")
    st.stop()
if len(pool.table) != run.N:
    st.error(f"The run covers {run.N:,} rows but the pool has {len(pool.table):,}: choose the "
             "pool the run was made on (Pool page).")
    st.stop()

from clusterucb_core.export import export_selection, selection_table

lg = state.ledger(ws, clustering)
result = run.result(lg)
names = clusters.cluster_names()
table = selection_table(pool, result, names)

run_name = rounds.describe(ws, rid)
curation_ui.flush_toast()
st.markdown(f"**Run:** {ui.plain(run_name)} — change it on the UCB Rounds page.")
if not run.done:
    st.warning(f"The run is not finished: {run.budget_used:,} of {run.budget_total:,} budget "
               "rows scored. The selection below is the best so far.")
m = st.columns(5)
m[0].metric("Selected", f"{len(result.rows):,}", help=f"top-p target: {result.n_top:,} rows")
m[1].metric("Scored (budget)", f"{result.budget_used:,} / {result.budget_total:,}")
m[2].metric("Pinned", len(result.pinned))
m[3].metric("Rejected", len(result.rejected))
m[4].metric("Banned clusters", len(result.banned))
st.caption(ui.plain(marks.selection_rule(result.n_top, len(result.pinned), run.N,
                                         run.spec.top_p)))

# ------------------------------------------------------------------------------ the selection
st.subheader("Selection")
c = st.columns([1, 2, 2, 2])
only_sel = c[0].toggle("Selected only", value=True, key="ex_only")
f_src = c[1].multiselect("Sources", sorted(table["source"].astype(str).unique()),
                         key="ex_src", placeholder="all sources")
f_cl = c[2].multiselect("Clusters", sorted(int(x) for x in table["cluster"].unique() if x >= 0),
                        format_func=lambda k: names.get(k, k), key="ex_cl",
                        placeholder="all clusters")
query = c[3].text_input("Text contains", key="ex_q")
messages = pool.table["messages"]
view = export_view.filter_rows(table, only_selected=only_sel, sources=f_src, clusters=f_cl,
                               query=query, text_of=lambda r: ui.chat_text(messages.iat[r]))
prev = ui.preview_frame(pool.table, view["row"].to_numpy())
shown = export_view.curate_table(view, prev["prompt"].to_numpy(), run.labels, lg.state())
sel = st.dataframe(shown, hide_index=True, on_select="rerun", selection_mode="multi-row",
                   key="ex_table", height=min(360, ui.table_height(len(shown))),
                   column_config={"status": curation_ui.status_column()})
st.caption(f"{len(view):,} rows shown. Select rows (left edge) to read them or edit them.")
chosen = [int(shown["row"].iat[i]) for i in sel.selection.rows]
ids = {r: str(pool.table["id"].iat[r]) for r in chosen}
b = st.columns(5)
for i, (op, label, icon) in enumerate([("pin", "Pin", ":material/push_pin:"),
                                       ("reject", "Reject", ":material/block:"),
                                       ("unpin", "Unpin", None), ("unreject", "Unreject", None)]):
    if b[i].button(label, icon=icon, disabled=not chosen, key=f"ex_{op}"):
        curation_ui.edit(lg, op, chosen, "Curate & Export", ids)
        st.rerun()
with b[4]:
    curation_ui.undo_button(lg, "ex_undo")
if chosen:
    r = chosen[0]
    st.caption(f"row {r} · id `{pool.table['id'].iat[r]}` · score "
               f"{result.scores[r]:.4f}" if np.isfinite(result.scores[r]) else f"row {r}")
    ui.show_text(ui.chat_text(pool.table["messages"].iat[r]), height=260)

# ------------------------------------------------------------------------------ breakdowns
selected = table[table["selected"]]
left, right = st.columns(2)
by_cl = (selected.assign(cluster=[names.get(int(k), str(k)) for k in selected["cluster"]])
         .groupby("cluster").size().reset_index(name="rows").sort_values("rows", ascending=False))
left.plotly_chart(px.bar(by_cl, x="cluster", y="rows", title="Selected rows per cluster"),
                  key="ex_by_cluster")
by_src = selected.groupby("source").size().reset_index(name="rows").sort_values(
    "rows", ascending=False)
right.plotly_chart(px.bar(by_src, x="source", y="rows", title="Selected rows per source"),
                   key="ex_by_source")

# ------------------------------------------------------------------------------ ledger
with st.expander(f"Ledger of hand edits ({len(lg.edits())})", expanded=False):
    edits = lg.edits()
    if edits:
        st.dataframe(pd.DataFrame(edits), hide_index=True)
    else:
        st.caption("No edits yet. Pin, reject or ban on this page, the Clusters page or the UCB "
                   "page.")

# ------------------------------------------------------------------------------ export
st.subheader("Export")
out_dir = ws.exports(rid)
st.caption(f"Exports the run {ui.plain(run_name)} into the workspace at `{out_dir}`; each "
           "save replaces the previous one whole (never half-written).")
with_ds = st.checkbox("Also write a Hugging Face `datasets` folder", value=True, key="ex_ds")
if st.button("Save export to the workspace", icon=":material/save:", type="primary", key="ex_save"):
    with st.spinner("Writing the export..."):
        try:
            export_selection(out_dir, pool, result, run_id=rid, clustering=clustering,
                             cluster_names=names, oracle_info=(run.header.get("oracle")
                                                               if hasattr(run, "header") else None),
                             ledger_state=lg.state(), log_path=run.log_path,
                             exhaustive=state.exhaustive_scores(ws, run.N),
                             with_dataset=with_ds)
        except Exception as exc:  # noqa: BLE001
            ui.show_error(exc, "Writing the export", "check free disk space; nothing half-"
                          "written was left behind")
        else:
            st.success(f"Export written: {len(result.rows):,} rows of run {run_name}.")

export_ui.downloads(out_dir, f"{ws.name}-{rid}.zip")
